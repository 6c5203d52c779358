"""`run_demo`: the whole job on a small archive it writes itself, checked against netCDF4.

It writes hourly NetCDF4 files, virtualizes each one (reading only metadata), combines them along
time into one virtual datacube, reads that back through plain xarray / zarr and compares every
value with what netCDF4 reads from the files.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from vcube.api import open_virtual_mfdataset
from vcube.errors import VcubeError
from vcube.manifests import ManifestStore

__all__ = ["DemoReport", "run_demo", "write_sample_archive"]

START = datetime(2024, 1, 1)
NO_LOAD_COMBINE: dict[str, Any] = {
    "coords": "minimal",
    "compat": "override",
    "data_vars": "minimal",
    "join": "exact",
    "combine_attrs": "override",
}


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What the demo did and found."""

    directory: Path
    files: int
    variables: int
    references: int
    reference_bytes: int
    data_bytes: int
    seconds_virtualize: float
    identical: bool


def write_sample_archive(directory: Path, files: int = 12) -> list[Path]:
    """Write `files` hourly NetCDF4 files (4 variables, zlib + shuffle, chunked) into `directory`."""
    try:
        import netCDF4  # optional: only the demo writes NetCDF4 files
    except ImportError as err:
        raise VcubeError("the demo writes NetCDF4 files: pip install 'vcube[demo]'") from err

    rng = np.random.default_rng(0)
    lat, lon = np.linspace(-90, 90, 73), np.arange(0, 360, 2.5)
    paths = []
    for hour in range(files):
        path = directory / f"air_{START + timedelta(hours=hour):%Y-%m-%dT%H}.nc"
        with netCDF4.Dataset(path, "w") as nc:
            nc.createDimension("time", None)
            nc.createDimension("lat", lat.size)
            nc.createDimension("lon", lon.size)
            t = nc.createVariable("time", "i4", ("time",))
            t.units = "hours since 2024-01-01"
            t[:] = [hour]
            nc.createVariable("lat", "f4", ("lat",))[:] = lat
            nc.createVariable("lon", "f4", ("lon",))[:] = lon
            for name in ("air", "uwnd", "vwnd", "rhum"):
                var = nc.createVariable(
                    name, "f4", ("time", "lat", "lon"), zlib=True, shuffle=True,
                    chunksizes=(1, 37, 72), fill_value=np.float32(-9999),
                )  # fmt: skip
                var[:] = rng.standard_normal((1, lat.size, lon.size)).astype("f4")
            nc.title = "vcube demo archive"
        paths.append(path)
    return paths


def run_demo(directory: Path | None = None, files: int = 12) -> DemoReport:
    """Write a sample archive, virtualize and combine it, and verify every value."""
    directory = Path(directory or tempfile.mkdtemp(prefix="vcube-demo-"))
    directory.mkdir(parents=True, exist_ok=True)
    paths = write_sample_archive(directory, files)
    start = time.perf_counter()
    cube = open_virtual_mfdataset(paths)
    seconds = time.perf_counter() - start
    store = ManifestStore.from_virtual_dataset(cube)
    actual = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None).load()
    expected = xr.concat(
        [xr.open_dataset(p, engine="netcdf4").load() for p in paths], dim="time", **NO_LOAD_COMBINE
    )
    return DemoReport(
        directory=directory,
        files=len(paths),
        variables=len(cube.data_vars),
        references=cube.vcube.nrefs,
        reference_bytes=cube.vcube.nbytes,
        data_bytes=int(expected.nbytes),
        seconds_virtualize=seconds,
        identical=actual.identical(expected),
    )
