"""NetCDF4 / HDF5 and NetCDF3 source files, read raw by their owner libraries: h5py (no CF
decoding at all), scipy for CDF-1 / CDF-2 (`maskandscale=False`), netCDF4-python for CDF-5
(masking, scaling and char conversion off)."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any

import h5py
import hdf5plugin  # noqa: F401  (registers the blosc, zstd, lz4, bzip2 filters with HDF5)
import numpy as np

from vcube.registry import local_path
from vcube.verify.access import fetch, object_reader
from vcube.verify.arrays import describe

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from vcube.registry import ObjectStoreRegistry
    from vcube.verify.arrays import Info, Region
    from vcube.verify.sources import Layout, Reader

__all__ = ["open_hdf5", "open_netcdf3"]


def open_hdf5(url: str, registry: ObjectStoreRegistry, head: bytes, layout: Layout) -> Reader:
    return _HDF5Reader(url, registry)


def open_netcdf3(url: str, registry: ObjectStoreRegistry, head: bytes, layout: Layout) -> Reader:
    return _NetCDF4Reader(url, registry) if head[3:4] == b"\x05" else _ScipyReader(url, registry)


class _HDF5Reader:
    """NetCDF4 / HDF5 with h5py, which applies no CF decoding: `dataset[region]` is raw."""

    def __init__(self, url: str, registry: ObjectStoreRegistry) -> None:
        path = local_path(url)
        self._file = h5py.File(path if path is not None else object_reader(url, registry), "r")

    def arrays(self) -> dict[str, Info]:
        found: dict[str, Info] = {}

        def visit(name: str, node: object) -> None:
            if isinstance(node, h5py.Dataset):
                found[name] = describe(node.shape, node.dtype, node.attrs, _dimensions(node))

        self._file.visititems(visit)
        return found

    def read(self, name: str, region: Region) -> NDArray[Any]:
        return np.asarray(self._file[name][region])

    def close(self) -> None:
        self._file.close()


def _dimensions(dataset: h5py.Dataset) -> list[str] | None:
    """The names of the dimension scales attached to each axis (a scale names its own axis),
    as NetCDF4 names dimensions; None when an axis has none."""
    names = []
    for k, axis in enumerate(dataset.dims):
        if len(axis):
            names.append(posixpath.basename(axis[0].name))
        elif k == 0 and dataset.ndim == 1 and h5py.h5ds.is_scale(dataset.id):
            names.append(posixpath.basename(dataset.name))
        else:
            return None
    return names


class _ScipyReader:
    """NetCDF3 CDF-1 / CDF-2 with scipy (`maskandscale=False`); local files memory-mapped."""

    def __init__(self, url: str, registry: ObjectStoreRegistry) -> None:
        from scipy.io import netcdf_file  # optional: a reference library, not a dependency

        path = local_path(url)
        source = path if path is not None else object_reader(url, registry)
        self._file = netcdf_file(source, "r", mmap=path is not None, maskandscale=False)

    def arrays(self) -> dict[str, Info]:
        variables = self._file.variables.items()
        return {
            n: describe(v.shape, v.data.dtype, v._attributes, v.dimensions) for n, v in variables
        }

    def read(self, name: str, region: Region) -> NDArray[Any]:
        # A copy: scipy cannot close a memory-mapped file while views of it exist.
        return np.array(self._file.variables[name].data[region])

    def close(self) -> None:
        self._file.close()


class _NetCDF4Reader:
    """NetCDF3 CDF-5 (which scipy does not read) with netCDF4-python, masking, scaling and char
    conversion off; a remote file is read whole (netCDF4 opens paths or bytes only)."""

    def __init__(self, url: str, registry: ObjectStoreRegistry) -> None:
        import netCDF4  # optional: a reference library, not a dependency

        path = local_path(url)
        if path is None:
            self._ds = netCDF4.Dataset("memory", memory=fetch(url, registry))
        else:
            self._ds = netCDF4.Dataset(path)
        self._ds.set_auto_maskandscale(False)
        self._ds.set_auto_chartostring(False)

    def arrays(self) -> dict[str, Info]:
        found = {}
        for name, v in self._ds.variables.items():
            attrs = {k: v.getncattr(k) for k in v.ncattrs()}
            found[name] = describe(v.shape, v.dtype, attrs, v.dimensions)
        return found

    def read(self, name: str, region: Region) -> NDArray[Any]:
        return np.asarray(self._ds.variables[name][region or ...])

    def close(self) -> None:
        self._ds.close()
