"""`run_demo`: the whole job on a small archive it writes itself, checked against netCDF4.

It writes hourly NetCDF4 files, ingests them into a local Icechunk repository in batches (one
commit each, reading only the files' metadata), verifies every chunk against the files with
`vcube.verify`, and reads the whole datacube back through xarray / Icechunk to compare every
value with what netCDF4 reads.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import xarray as xr

from vcube.combine import NO_LOAD_COMBINE
from vcube.errors import VcubeError
from vcube.ingest import ingest
from vcube.stores import ObjectStoreOptions, open_repository
from vcube.verify import verify

__all__ = ["DemoReport", "run_demo", "write_sample_archive"]

START = datetime(2024, 1, 1)


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What the demo did and found."""

    directory: Path
    repo: Path
    files: int
    batch_size: int
    commits: int
    variables: int
    references: int
    data_bytes: int
    seconds_ingest: float
    chunks_verified: int
    verified: bool
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


def run_demo(directory: Path | None = None, files: int = 48, batch_size: int = 12) -> DemoReport:
    """Write a sample archive, ingest it into Icechunk in batches, and verify every value."""
    directory = Path(directory or tempfile.mkdtemp(prefix="vcube-demo-"))
    archive, repo = directory / "archive", directory / "cube.icechunk"
    archive.mkdir(parents=True, exist_ok=True)
    paths = write_sample_archive(archive, files)
    start = time.perf_counter()
    ingested = ingest(str(archive / "*.nc"), str(repo), append_dim="time", batch_size=batch_size)
    seconds = time.perf_counter() - start
    checked = verify(str(repo), samples=None)
    store = open_repository(str(repo), ObjectStoreOptions()).readonly_session("main").store
    actual = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None).load()
    expected = xr.concat([_read(p) for p in paths], dim="time", **NO_LOAD_COMBINE)
    return DemoReport(
        directory=directory,
        repo=repo,
        files=len(paths),
        batch_size=batch_size,
        commits=len(ingested.commits),
        variables=len(actual.data_vars),
        references=ingested.references,
        data_bytes=int(expected.nbytes),
        seconds_ingest=seconds,
        chunks_verified=sum(v.checked for v in checked.variables),
        verified=checked.ok,
        identical=actual.identical(expected),
    )


def _read(path: Path) -> xr.Dataset:
    """What netCDF4 reads from the file, with the file closed again."""
    with xr.open_dataset(path, engine="netcdf4") as ds:
        return ds.load()
