"""One parser per file format, and detection of the format from a file's first bytes.

Parsers of formats with optional dependencies (astropy for FITS, tifffile for TIFF) are imported
when first used, so `import vcube` does not load those libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vcube.parsers.detect import PARSERS, detect_parser
from vcube.parsers.hdf5 import HDFParser
from vcube.parsers.netcdf3 import NetCDF3Parser
from vcube.parsers.types import Parser

if TYPE_CHECKING:
    from vcube.parsers.fits import FITSParser
    from vcube.parsers.kerchunk import KerchunkJSONParser, KerchunkParquetParser
    from vcube.parsers.tiff import TIFFParser
    from vcube.parsers.zarr import ZarrParser

__all__ = [
    "FITSParser",
    "HDFParser",
    "KerchunkJSONParser",
    "KerchunkParquetParser",
    "NetCDF3Parser",
    "Parser",
    "TIFFParser",
    "ZarrParser",
    "detect_parser",
]

_LAZY = {target.rpartition(":")[2]: target for target in PARSERS.values()}


def __getattr__(name: str) -> Any:
    if name not in _LAZY or name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, cls = _LAZY[name].partition(":")
    return getattr(importlib.import_module(module), cls)
