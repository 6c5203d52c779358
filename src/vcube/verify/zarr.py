"""Zarr stores, read by zarr-python from the original store (a local directory, or a prefix in
object storage through the registry's store): each array by its path in the store, as
`ZarrParser` names it; a store that is one array by the store's name."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
import zarr
import zarr.storage

from vcube.registry import local_path
from vcube.verify.arrays import describe

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from zarr.abc.store import Store

    from vcube.registry import ObjectStoreRegistry
    from vcube.verify.arrays import Info, Region
    from vcube.verify.sources import Layout, Reader

__all__ = ["open_zarr"]


def open_zarr(url: str, registry: ObjectStoreRegistry, head: bytes, layout: Layout) -> Reader:
    return _ZarrReader(url, registry)


class _ZarrReader:
    def __init__(self, url: str, registry: ObjectStoreRegistry) -> None:
        path = local_path(url)
        store: Store
        if path is not None:
            store, prefix = zarr.storage.LocalStore(path, read_only=True), ""
        else:
            objects, prefix = registry.resolve(url)
            store = zarr.storage.ObjectStore(objects, read_only=True)
        node = zarr.open(store=store, path=prefix, mode="r")
        if isinstance(node, zarr.Array):
            name = unquote(posixpath.basename(url.rstrip("/"))).removesuffix(".zarr") or "data"
            self._arrays: dict[str, zarr.Array[Any]] = {name: node}
        else:
            members = node.members(max_depth=None)
            self._arrays = {p: a for p, a in members if isinstance(a, zarr.Array)}

    def arrays(self) -> dict[str, Info]:
        return {name: _info(array) for name, array in self._arrays.items()}

    def read(self, name: str, region: Region) -> NDArray[Any]:
        return np.asarray(self._arrays[name][region])

    def close(self) -> None:
        self._arrays.clear()


def _info(array: zarr.Array[Any]) -> Info:
    """Shape, dtype, CF attributes and dimension names (v3 `dimension_names`, v2
    `_ARRAY_DIMENSIONS`) when every axis has one."""
    dims = getattr(array.metadata, "dimension_names", None) or array.attrs.get("_ARRAY_DIMENSIONS")
    named = isinstance(dims, list | tuple) and all(isinstance(d, str) for d in dims)
    names = [str(d) for d in dims] if named and isinstance(dims, list | tuple) else None
    return describe(array.shape, array.dtype, array.attrs, names)
