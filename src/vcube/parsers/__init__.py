"""One parser per file format, and detection of the format from a file's first bytes."""

from vcube.parsers.detect import detect_parser
from vcube.parsers.hdf5 import HDFParser
from vcube.parsers.types import Parser

__all__ = ["HDFParser", "Parser", "detect_parser"]
