"""ManifestGroup.from_virtual_dataset: what a virtual dataset becomes in the store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import netCDF4
import numpy as np
import xarray as xr

import vcube

if TYPE_CHECKING:
    from pathlib import Path


def test_non_index_coordinates_stay_coordinates(tmp_path: Path) -> None:
    path = tmp_path / "curvilinear.nc"
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("y", 2)
        d.createDimension("x", 3)
        d.createVariable("lat", "f4", ("y", "x"))[:] = np.arange(6).reshape(2, 3)
        d.createVariable("height", "f4", ())[:] = 2.0
        v = d.createVariable("t2m", "f4", ("y", "x"))
        v.coordinates = "lat height"
        v[:] = np.ones((2, 3))
    vds = vcube.open_virtual_dataset(path, loadable_variables=["lat"])
    store = vcube.ManifestStore.from_virtual_dataset(vds)
    back = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None)
    expected = xr.open_dataset(path, engine="netcdf4")
    assert set(back.coords) == set(expected.coords) == {"lat", "height"}
    xr.testing.assert_identical(back.load(), expected.load())
