"""Choose a parser from a file's first bytes (its magic number), or from the metadata documents at
the top of a directory / object-store prefix (Zarr stores, Kerchunk Parquet references)."""

from __future__ import annotations

import importlib
import json
from typing import TYPE_CHECKING, Final

import obstore

from vcube.errors import UnsupportedFormatError
from vcube.readers import is_transient, translate_io_error
from vcube.registry import local_path, normalize_url

if TYPE_CHECKING:
    from obstore.store import ObjectStore

    from vcube.parsers.types import Parser
    from vcube.registry import ObjectStoreRegistry

__all__ = ["detect_format", "detect_parser", "directory_format", "file_format", "read_head"]

HDF5_SIGNATURE: Final = b"\x89HDF\r\n\x1a\n"
# An HDF5 superblock may follow a user block of 512, 1024, 2048... bytes.
HDF5_SIGNATURE_OFFSETS: Final = (0, 512, 1024, 2048, 4096)
HEAD_BYTES: Final = max(HDF5_SIGNATURE_OFFSETS) + 8
MAGIC: Final = {
    b"CDF\x01": "NetCDF3",
    b"CDF\x02": "NetCDF3",
    b"CDF\x05": "NetCDF3",
    b"SIMPLE  =": "FITS",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "TIFF",  # BigTIFF
    b"MM\x00+": "TIFF",
}
ZARR_DOCUMENTS: Final = ("zarr.json", ".zgroup", ".zarray")
# format -> module:class, imported only when chosen (astropy, tifffile are optional)
PARSERS: Final = {
    "HDF5/NetCDF4": "vcube.parsers.hdf5:HDFParser",
    "NetCDF3": "vcube.parsers.netcdf3:NetCDF3Parser",
    "Zarr": "vcube.parsers.zarr:ZarrParser",
    "Kerchunk JSON": "vcube.parsers.kerchunk:KerchunkJSONParser",
    "Kerchunk Parquet": "vcube.parsers.kerchunk:KerchunkParquetParser",
    "FITS": "vcube.parsers.fits:FITSParser",
    "TIFF": "vcube.parsers.tiff:TIFFParser",
}
TRIED: Final = ", ".join(PARSERS)


def detect_format(url: str, registry: ObjectStoreRegistry) -> tuple[str | None, bytes]:
    """The format of the file (or Zarr / Kerchunk Parquet directory) at `url`, None when it is
    not one vcube knows, and the file's first bytes (empty for a directory)."""
    store, path, prefix = registry.resolve_with_prefix(url)
    local = local_path(normalize_url(url)) if prefix is None else None
    try:
        head = _read_local_head(local) if local is not None else read_head(store, path)
    except FileNotFoundError as err:
        name = directory_format(store, path, url)
        if name is None:
            raise translate_io_error(err, url) from err
        return name, b""
    except Exception as err:
        raise translate_io_error(err, url) from err
    return file_format(head), head


def detect_parser(url: str, registry: ObjectStoreRegistry) -> Parser:
    """The parser for the file (or Zarr / Kerchunk Parquet directory) at `url`, chosen by its
    signature."""
    name, head = detect_format(url, registry)
    if name is None:
        raise UnsupportedFormatError(
            f"{url}: unrecognized file format (first bytes {head[:8]!r}); formats tried: "
            f"{TRIED}. Pass parser=... to choose one explicitly."
        )
    module, _, cls = PARSERS[name].partition(":")
    parser: Parser = getattr(importlib.import_module(module), cls)()
    return parser


def read_head(store: ObjectStore, path: str) -> bytes:
    """The object's first bytes (enough for every signature) in one request; an empty object,
    which has no byte range to read, costs a HEAD more."""
    try:
        result = obstore.get(store, path, options={"range": (0, HEAD_BYTES)})
    except FileNotFoundError:
        raise
    except Exception as err:
        # A failed range read of an empty object is the one error a HEAD explains; a transient
        # failure goes to the task's retries untouched.
        if not is_transient(err) and obstore.head(store, path)["size"] == 0:
            return b""
        raise
    return bytes(result.bytes())


def _read_local_head(path: str) -> bytes:
    """`read_head` for a local file: a plain read costs a tenth of an obstore request."""
    try:
        with open(path, "rb") as file:
            return file.read(HEAD_BYTES)
    except IsADirectoryError as err:
        raise FileNotFoundError(path) from err


def file_format(head: bytes) -> str | None:
    if any(head[o : o + 8] == HDF5_SIGNATURE for o in HDF5_SIGNATURE_OFFSETS):
        return "HDF5/NetCDF4"
    for magic, name in MAGIC.items():
        if head.startswith(magic):
            return name
    if head.lstrip().startswith(b"{"):
        return "Kerchunk JSON"
    return None


def directory_format(store: ObjectStore, path: str, url: str) -> str | None:
    """Zarr or Kerchunk Parquet from the documents at the top of a prefix (one listing)."""
    prefix = path.rstrip("/")
    try:
        listing = obstore.list_with_delimiter(store, prefix=prefix or None)
        names = {o["path"].rsplit("/", 1)[-1] for o in listing["objects"]}
    except FileNotFoundError:
        return None
    except Exception as err:
        raise translate_io_error(err, url) from err
    if any(doc in names for doc in ZARR_DOCUMENTS):
        return "Zarr"
    if ".zmetadata" in names:
        try:
            meta = json.loads(bytes(obstore.get(store, f"{prefix}/.zmetadata").bytes()))
        except (ValueError, FileNotFoundError) as err:
            raise UnsupportedFormatError(f"{url}/.zmetadata: not valid JSON ({err})") from err
        # Kerchunk's Parquet layout records its record size; consolidated Zarr v2 does not.
        return "Kerchunk Parquet" if "record_size" in meta else "Zarr"
    return None
