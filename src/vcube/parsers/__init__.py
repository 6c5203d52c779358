"""One parser per file format, and detection of the format from a file's first bytes."""

from vcube.parsers.detect import detect_parser
from vcube.parsers.hdf5 import HDFParser
from vcube.parsers.netcdf3 import NetCDF3Parser
from vcube.parsers.types import Parser

__all__ = ["HDFParser", "NetCDF3Parser", "Parser", "detect_parser"]
