"""The HDF5 parser over the battery of generated files: values read back through the references with
plain xarray / zarr equal what netCDF4 and h5py read from the files."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr
from hdf5_files import HDF5_CASES, NETCDF_CASES, write

import vcube
from vcube import HDFParser, ManifestStore

if TYPE_CHECKING:
    from pathlib import Path

RAW = {"mask_and_scale": False, "decode_times": False}


def groups_of(path: Path) -> list[str | None]:
    with netCDF4.Dataset(path) as d:
        out: list[str | None] = [None]
        todo = list(d.groups.values())
        while todo:
            g = todo.pop()
            out.append(g.path)
            todo.extend(g.groups.values())
        return out


def read_back(vds: xr.Dataset, registry: Any = None, **kwargs: Any) -> xr.Dataset:
    store = ManifestStore.from_virtual_dataset(vds, registry=registry)
    return xr.open_zarr(store, zarr_format=3, consolidated=False, **kwargs).load()


def assert_reads_as_netcdf4(path: Path, url: str, registry: Any = None) -> None:
    for group in groups_of(path):
        vds = vcube.open_virtual_dataset(url, registry=registry, parser=HDFParser(group=group))
        raw_expected = xr.open_dataset(path, engine="netcdf4", group=group, **RAW).load()
        raw_actual = read_back(vds, registry, **RAW)
        xr.testing.assert_identical(raw_actual, raw_expected)
        for name in raw_expected.variables:
            assert_same_dtype(raw_actual[name], raw_expected[name])
        expected = xr.open_dataset(path, engine="netcdf4", group=group).load()
        actual = read_back(vds, registry)
        packed = [k for k, v in raw_expected.variables.items() if is_packed(v)]
        xr.testing.assert_identical(actual.drop_vars(packed), expected.drop_vars(packed))
        for name in packed:
            # JSON attributes carry no float32, so xarray unpacks Zarr data in float64
            # (netCDF4 in the dtype of scale_factor); the packed integers are equal above.
            np.testing.assert_allclose(actual[name], expected[name], rtol=1e-6)


def is_packed(var: xr.Variable) -> bool:
    return "scale_factor" in var.attrs or "add_offset" in var.attrs


def assert_same_dtype(actual: xr.DataArray, expected: xr.DataArray) -> None:
    if expected.dtype.kind in "OUT":
        # zarr reads variable-length strings as numpy's StringDType
        assert actual.dtype.kind in "OUT", actual.name
    else:
        assert actual.dtype == expected.dtype, actual.name


@pytest.mark.parametrize("case", sorted(NETCDF_CASES))
def test_netcdf_file_reads_back_exactly(case: str, tmp_path: Path) -> None:
    path = write(case, tmp_path)
    assert_reads_as_netcdf4(path, str(path))


@pytest.mark.parametrize("case", sorted(HDF5_CASES))
def test_plain_hdf5_reads_back_exactly_as_h5py(case: str, tmp_path: Path) -> None:
    path = write(case, tmp_path)
    store = HDFParser()(str(path))
    root = zarr.open_group(store, mode="r", zarr_format=3)
    with h5py.File(path) as f:
        datasets: list[str] = []
        f.visititems(lambda n, o: datasets.append(n) if isinstance(o, h5py.Dataset) else None)
        for name in datasets:
            np.testing.assert_array_equal(root[name][...], f[name][()], strict=True)
        assert dict(root.attrs) == {k: str(v) for k, v in f.attrs.items()}


def test_plain_hdf5_phony_dims_match_netcdf4(tmp_path: Path) -> None:
    path = write("plain_hdf5_phony_dims", tmp_path)
    vds = vcube.open_virtual_dataset(path)
    expected = xr.open_dataset(path, engine="netcdf4")
    assert {k: v.dims for k, v in vds.variables.items()} == {
        k: v.dims for k, v in expected.variables.items()
    }
    xr.testing.assert_identical(read_back(vds), expected.load())
