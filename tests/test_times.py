"""Time coordinates decoded once after the combine (`vcube.times`): the datacube equals what
xarray makes of the same files, whether the files encode their times alike or not."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import netCDF4
import numpy as np
import pytest
import xarray as xr

import vcube

if TYPE_CHECKING:
    from pathlib import Path


def write_file(path: Path, step: int, units: str, calendar: str = "standard") -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("time", None)
        d.createDimension("lead", 3)
        t = d.createVariable("time", "f8", ("time",))
        t.units, t.calendar = units, calendar
        t[:] = [2 * step, 2 * step + 1]
        lead = d.createVariable("lead", "i4", ("lead",))
        lead.units = "hours"  # a timedelta coordinate, alike in every file
        lead[:] = [0, 6, 12]
        v = d.createVariable("t2m", "f4", ("time", "lead"), chunksizes=(1, 3), zlib=True)
        v[:] = np.arange(6, dtype="f4").reshape(2, 3) + step


def read_back(ds: xr.Dataset) -> xr.Dataset:
    store = vcube.ManifestStore.from_virtual_dataset(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # xarray may respell units to keep them exact
        return xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None).load()


def expected(paths: list[Path], **kwargs: Any) -> xr.Dataset:
    parts = [xr.open_dataset(p, engine="netcdf4", **kwargs).load() for p in paths]
    return xr.concat(parts, dim="time", data_vars="minimal", coords="minimal")


@pytest.mark.parametrize(
    ("units", "calendars"),
    [
        (["hours since 2000-01-01"] * 4, ["standard"] * 4),  # alike: decoded once
        (["hours since 2000-01-01"] * 2 + ["days since 1999-12-31"] * 2, ["standard"] * 4),
        (["hours since 2000-01-01"] * 4, ["standard", "gregorian", "standard", "standard"]),
        (["hours since 2000-01-01"] * 4, ["noleap"] * 4),  # cftime objects
    ],
    ids=["alike", "units-differ", "calendar-spelled-differently", "noleap"],
)
def test_decoded_as_xarray_decodes_each_file(
    units: list[str], calendars: list[str], tmp_path: Path
) -> None:
    paths = []
    for i, (unit, calendar) in enumerate(zip(units, calendars, strict=True)):
        paths.append(tmp_path / f"f{i}.nc")
        write_file(paths[-1], i, unit, calendar)
    want = expected(paths)
    ds = vcube.open_virtual_mfdataset(paths)
    assert ds["time"].dtype == want["time"].dtype
    np.testing.assert_array_equal(ds["time"].values, want["time"].values)
    np.testing.assert_array_equal(ds["lead"].values, want["lead"].values)
    assert ds["lead"].dtype == want["lead"].dtype
    assert ds["time"].encoding["units"] == want["time"].encoding["units"]
    assert ds.indexes["time"].equals(want.indexes["time"])
    back = read_back(ds)
    np.testing.assert_array_equal(back["time"].values, want["time"].values)
    np.testing.assert_array_equal(back["t2m"].values, want["t2m"].values)


def test_preprocess_sees_decoded_times(tmp_path: Path) -> None:
    paths = [tmp_path / f"f{i}.nc" for i in range(3)]
    for i, path in enumerate(paths):
        write_file(path, i, "hours since 2000-01-01")
    seen: list[str] = []

    def preprocess(ds: xr.Dataset) -> xr.Dataset:
        seen.append(ds["time"].dtype.kind)
        return ds

    ds = vcube.open_virtual_mfdataset(paths, preprocess=preprocess)
    assert seen == ["M", "M", "M"]
    np.testing.assert_array_equal(ds["time"].values, expected(paths)["time"].values)


def test_decode_times_false_keeps_the_numbers(tmp_path: Path) -> None:
    paths = [tmp_path / f"f{i}.nc" for i in range(3)]
    for i, path in enumerate(paths):
        write_file(path, i, "hours since 2000-01-01")
    ds = vcube.open_virtual_mfdataset(paths, decode_times=False)
    assert ds["time"].values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert ds["time"].attrs["units"] == "hours since 2000-01-01"
    assert ds["lead"].values.tolist() == [0, 6, 12]


def test_only_files_encoded_alike_wait_for_the_combine(tmp_path: Path) -> None:
    from vcube.api import _open_with_raw_times
    from vcube.times import decode_for_combine

    paths = [tmp_path / f"f{i}.nc" for i in range(3)]
    for i, path in enumerate(paths):
        write_file(path, i, "days since 2000-01-01" if i == 2 else "hours since 2000-01-01")
    raw = [_open_with_raw_times(str(p)) for p in paths]
    assert all(ds["time"].dtype == np.float64 for ds in raw)  # left encoded by the map
    datasets, deferred = decode_for_combine(raw, None)
    assert deferred == ["lead"]  # alike everywhere
    assert all(ds["time"].dtype.kind == "M" for ds in datasets)  # decoded file by file
    assert all(ds["lead"].dtype == raw[0]["lead"].dtype for ds in datasets)


def test_a_time_variable_the_first_file_lacks_is_decoded(tmp_path: Path) -> None:
    first, second = tmp_path / "a.nc", tmp_path / "b.nc"
    with netCDF4.Dataset(first, "w") as d:
        d.createDimension("x", 3)
        d.createVariable("x", "i4", ("x",))[:] = [0, 1, 2]
        d.createVariable("a", "f4", ("x",))[:] = [1, 2, 3]
    with netCDF4.Dataset(second, "w") as d:
        d.createDimension("x", 3)
        d.createVariable("x", "i4", ("x",))[:] = [0, 1, 2]
        d.createDimension("t", 2)
        t = d.createVariable("t", "f8", ("t",))
        t.units = "days since 2000-01-01"
        t[:] = [0, 1]
        d.createVariable("b", "f4", ("t", "x"))[:] = np.ones((2, 3))
    for paths in ([first, second], [second, first]):
        ds = vcube.open_virtual_mfdataset(paths)
        with xr.open_mfdataset(paths, engine="netcdf4") as want:
            assert ds["t"].dtype == want["t"].dtype
            np.testing.assert_array_equal(ds["t"].values, want["t"].values)
