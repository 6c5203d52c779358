"""Choose a parser from a file's first bytes (its magic number)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import obstore

from vcube.errors import UnsupportedFormatError
from vcube.parsers.hdf5 import HDFParser
from vcube.parsers.netcdf3 import NetCDF3Parser
from vcube.readers import translate_io_error

if TYPE_CHECKING:
    from vcube.parsers.types import Parser
    from vcube.registry import ObjectStoreRegistry

__all__ = ["detect_parser"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# An HDF5 superblock may follow a user block of 512, 1024, 2048... bytes.
HDF5_SIGNATURE_OFFSETS = (0, 512, 1024, 2048, 4096)
NETCDF3_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
KNOWN = {
    b"SIMPLE  =": "FITS",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "BigTIFF",
}
TRIED = "HDF5/NetCDF4, NetCDF3"


def detect_parser(url: str, registry: ObjectStoreRegistry) -> Parser:
    """The parser for the file at `url`, chosen by its signature."""
    store, path = registry.resolve(url)
    try:
        size = obstore.head(store, path)["size"]
        length = min(size, max(HDF5_SIGNATURE_OFFSETS) + 8)
        head = bytes(obstore.get_range(store, path, start=0, length=length)) if length else b""
    except Exception as err:
        raise translate_io_error(err, url) from err
    if any(head[o : o + 8] == HDF5_SIGNATURE for o in HDF5_SIGNATURE_OFFSETS):
        return HDFParser()
    if head.startswith(NETCDF3_MAGIC):
        return NetCDF3Parser()
    for magic, name in KNOWN.items():
        if head.startswith(magic):
            raise UnsupportedFormatError(
                f"{url}: {name} files are not supported yet (formats vcube reads: {TRIED})"
            )
    raise UnsupportedFormatError(
        f"{url}: unrecognized file format (first bytes {head[:8]!r}); formats tried: {TRIED}. "
        f"Pass parser=... to choose one explicitly."
    )
