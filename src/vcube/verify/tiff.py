"""TIFF source files, read by tifffile: each page an array named by its index as `TIFFParser`
names it (``"0"``, ``"1"``, ...), or, where the target holds pages stacked along a ``page``
dimension, the pages from that one on stacked. Values are read through tifffile's own Zarr view
of a page (`page.aszarr()`), which decodes only the strips or tiles a region needs, with
tifffile's decoders (`page.asarray()` would decode a whole page per chunk, and fail every chunk
of a page for one corrupt tile)."""

from __future__ import annotations

import contextlib
import posixpath
from typing import IO, TYPE_CHECKING, Any, Final, cast

import numpy as np
import tifffile
import zarr

from vcube.parsers.tiff import dimension_names, page_axes
from vcube.registry import local_path
from vcube.verify.access import object_reader
from vcube.verify.arrays import describe

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from tifffile.zarr import ZarrTiffStore

    from vcube.registry import ObjectStoreRegistry
    from vcube.verify.arrays import Info, Region
    from vcube.verify.sources import Layout, Reader

__all__ = ["open_tiff"]

STACK_DIMENSION: Final = "page"


def open_tiff(url: str, registry: ObjectStoreRegistry, head: bytes, layout: Layout) -> Reader:
    return _TIFFReader(url, registry, layout)


class _TIFFReader:
    """The pages tifffile reads (every page of the main IFD chain), one array each, or
    stacked."""

    def __init__(self, url: str, registry: ObjectStoreRegistry, layout: Layout) -> None:
        path = local_path(url)
        with contextlib.ExitStack() as undo:  # closes what is open if the file is unreadable
            self._remote = None if path is not None else object_reader(url, registry)
            if self._remote is not None:
                undo.callback(self._remote.close)
            source = path if path is not None else cast("IO[bytes]", self._remote)
            self._tif = tifffile.TiffFile(source)
            undo.callback(self._tif.close)
            self._tif.pages.useframes = False  # full pages, as TIFFParser reads them
            self._pages = [
                p if isinstance(p, tifffile.TiffPage) else p.aspage() for p in self._tif.pages
            ]
            undo.pop_all()
        self._arrays: dict[str, tuple[range | int, Info]] = {}
        seen: dict[str, int] = {}  # dimension name -> length in the first page using it
        for index, page in enumerate(self._pages):
            shape, axes = tuple(int(n) for n in page.shape), page_axes(page)
            if page.dtype is None or len(axes) != len(shape):
                continue  # sample formats or volumes TIFFParser refuses: never in a target
            dims = list(dimension_names(index, axes, shape, seen))
            name, info = str(index), describe(shape, page.dtype, {}, dims)
            if _stacked(layout.get(name), len(shape)):
                pages = self._run(index)
                info = describe((len(pages), *shape), page.dtype, {}, [STACK_DIMENSION, *dims])
                self._arrays[name] = (pages, info)
            else:
                self._arrays[name] = (index, info)
        self._views: dict[int, tuple[ZarrTiffStore, zarr.Array[Any]]] = {}

    def arrays(self) -> dict[str, Info]:
        return {name: info for name, (_, info) in self._arrays.items()}

    def read(self, name: str, region: Region) -> NDArray[Any]:
        pages, _ = self._arrays[name]
        if isinstance(pages, int):
            return np.asarray(self._page(pages)[region])
        return np.stack([np.asarray(self._page(k)[region[1:]]) for k in pages[region[0]]])

    def close(self) -> None:
        for store, _ in self._views.values():
            store.close()
        self._views.clear()
        self._tif.close()
        if self._remote is not None:
            self._remote.close()

    def _run(self, first: int) -> range:
        """The pages from `first` on with its shape and dtype: those TIFFParser(stack=True)
        stacks, when it reads every page."""
        page = self._pages[first]
        same = [(p.shape, p.dtype) == (page.shape, page.dtype) for p in self._pages[first:]]
        return range(first, first + (same.index(False) if False in same else len(same)))

    def _page(self, index: int) -> zarr.Array[Any]:
        if index not in self._views:
            store = self._pages[index].aszarr()
            self._views[index] = (store, zarr.open_array(store, mode="r"))
        return self._views[index][1]


def _stacked(target: Info | None, ndim: int) -> bool:
    """Whether the target's array of that name holds pages stacked along a `page` axis."""
    dims = target.dims if target is not None else None
    return (
        dims is not None
        and len(dims) > ndim
        and posixpath.basename(dims[-ndim - 1]) == STACK_DIMENSION
    )
