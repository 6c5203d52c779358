"""Source files: recognized by their first bytes, opened with the library that owns their format
(one small reader per format, imported when first needed), kept open while they are compared,
and surveyed: their arrays and the CF-decoded values of the target's coordinates they hold."""

from __future__ import annotations

import contextlib
import importlib
import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from vcube.errors import UnsupportedFeatureError, UnsupportedFormatError
from vcube.parsers.detect import detect_format, directory_format
from vcube.verify.arrays import decoded

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from numpy.typing import NDArray

    from vcube.registry import ObjectStoreRegistry
    from vcube.verify.arrays import Info, Region

__all__ = [
    "READERS",
    "Layout",
    "Reader",
    "Readers",
    "Source",
    "open_source",
    "source_files",
    "survey",
]


class Reader(Protocol):
    """A source file opened with its format's library."""

    def arrays(self) -> dict[str, Info]:
        """Every array of the file, by the name its parser gives it."""
        ...

    def read(self, name: str, region: Region) -> NDArray[Any]:
        """The stored (raw) values of a region of array `name`."""
        ...

    def close(self) -> None: ...


# The target's arrays by path: readers of formats that a parser can lay out in several ways
# (TIFF pages, separate or stacked) show the file the way the target holds it.
type Layout = Mapping[str, Info]
type Opener = Callable[[str, ObjectStoreRegistry, bytes, Layout], Reader]

# Format (as vcube.parsers.detect names it) -> the opener of its reader, `module:function`.
READERS: Final = {
    "HDF5/NetCDF4": "vcube.verify.netcdf:open_hdf5",
    "NetCDF3": "vcube.verify.netcdf:open_netcdf3",
    "FITS": "vcube.verify.fits:open_fits",
    "TIFF": "vcube.verify.tiff:open_tiff",
    "Zarr": "vcube.verify.zarr:open_zarr",
}
READABLE: Final = ", ".join(READERS)
# The last components of a Zarr chunk object's key: `c/0/1` or `c.0.1` (v3), `0.1` or `0/1` (v2).
CHUNK_KEY: Final = re.compile(r"c|c(\.\d+)+|\d+(\.\d+)*")


def open_source(url: str, registry: ObjectStoreRegistry, layout: Layout) -> Reader:
    """Open the file (or Zarr store) at `url` with its format's library."""
    name, head = detect_format(url, registry)
    if name is None:
        raise UnsupportedFormatError(
            f"{url}: unrecognized file format (first bytes {head[:8]!r}); verify reads {READABLE}"
        )
    if name not in READERS:
        raise UnsupportedFeatureError(
            f"{url}: verify cannot compare with {name} files (it reads {READABLE}); pass the "
            "original files with against=[...]"
        )
    module, _, function = READERS[name].partition(":")
    opener: Opener = getattr(importlib.import_module(module), function)
    return opener(url, registry, head, layout)


class Readers:
    """Source files opened on demand; the `size` most recently used stay open."""

    def __init__(self, registry: ObjectStoreRegistry, layout: Layout, size: int = 8) -> None:
        self._registry = registry
        self._layout = layout
        self._size = size
        self._open: dict[str, Reader] = {}

    def get(self, url: str) -> Reader:
        reader = self._open.pop(url, None) or open_source(url, self._registry, self._layout)
        self._open[url] = reader  # most recent last
        if len(self._open) > self._size:
            self._open.pop(next(iter(self._open))).close()
        return reader

    def close(self) -> None:
        for reader in self._open.values():
            reader.close()
        self._open.clear()


@dataclass(frozen=True, slots=True)
class Source:
    """A source file's arrays and the CF-decoded values of the target's coordinates it has."""

    url: str
    arrays: dict[str, Info]
    coords: dict[str, NDArray[Any]]


def survey(
    url: str,
    registry: ObjectStoreRegistry,
    layout: Layout,
    coordinates: Iterable[str],
) -> Source:
    """Open the file at `url` and read its arrays' descriptions and its coordinates."""
    with contextlib.closing(open_source(url, registry, layout)) as reader:
        arrays = reader.arrays()
        coords = {
            c: decoded(c, reader.read(c, (slice(None),)), arrays[c].cf)
            for c in coordinates
            if c in arrays and len(arrays[c].shape) == 1
        }
    return Source(url, arrays, coords)


def source_files(urls: Iterable[str], registry: ObjectStoreRegistry) -> list[str]:
    """The files that references point into: each URL, except that the chunk objects of a Zarr
    store (a reference per object) give the store once, found by walking up from the first of
    its chunks to the topmost directory with Zarr metadata."""
    files: list[str] = []
    stores: set[str] = set()
    known: dict[str, bool] = {}  # directory URL -> has Zarr metadata at its top
    for url in urls:
        if any(url.startswith(s + "/") for s in stores):
            continue
        parts = url.split("/")
        keep = len(parts)
        while keep > 3 and CHUNK_KEY.fullmatch(parts[keep - 1]):  # after `scheme://host/`
            keep -= 1
        root = None
        directory = "/".join(parts[:keep])
        while keep < len(parts) and _is_zarr(directory, registry, known):  # a key was taken off
            root, directory = directory, posixpath.dirname(directory)
        if root is None:
            files.append(url)
        else:
            stores.add(root)
            files.append(root)
    return files


def _is_zarr(url: str, registry: ObjectStoreRegistry, known: dict[str, bool]) -> bool:
    if url not in known:
        if url.count("/") < 3:  # `scheme://host`: no directory left
            return False
        store, path = registry.resolve(url)
        known[url] = bool(path.strip("/")) and directory_format(store, path, url) == "Zarr"
    return known[url]
