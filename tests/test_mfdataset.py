"""open_virtual_mfdataset over every executor: 40 generated NetCDF4 files, combined by coords
along time and nested along two dimensions, read back through ManifestStore and compared with
`xr.open_mfdataset` of the same files."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import netCDF4
import numpy as np
import pytest
import xarray as xr

import vcube
from vcube.errors import VcubeError
from vcube.mapreduce import Outcome, PartialFailureWarning
from vcube.parallel import SerialExecutor

if TYPE_CHECKING:
    from pathlib import Path

FILES = 40


def write_file(path: Path, step: int, member: int = 0) -> None:
    rng = np.random.default_rng(step * 100 + member)
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("time", None)
        d.createDimension("lat", 6)
        d.createDimension("lon", 8)
        t = d.createVariable("time", "i4", ("time",))
        t.units = "hours since 2024-01-01"
        t[:] = [2 * step, 2 * step + 1]
        d.createVariable("lat", "f4", ("lat",))[:] = np.linspace(-50, 50, 6)
        d.createVariable("lon", "f4", ("lon",))[:] = np.arange(8) * 45.0
        for name in ("air", "rhum"):
            v = d.createVariable(
                name, "f4", ("time", "lat", "lon"), zlib=True, chunksizes=(1, 3, 8), fill_value=-1
            )
            v[:] = rng.standard_normal((2, 6, 8)).astype("f4") + member
        d.member = member


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("archive")
    paths = [folder / f"air_{i:03d}.nc" for i in range(FILES)]
    for i, path in enumerate(paths):
        write_file(path, i)
    return paths


def read_back(ds: xr.Dataset) -> xr.Dataset:
    store = vcube.ManifestStore.from_virtual_dataset(ds)
    return xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None).load()


def expected(paths: list[Path], **kwargs: Any) -> xr.Dataset:
    with xr.open_mfdataset(paths, engine="netcdf4", **kwargs) as ds:
        return ds.load()


EXECUTORS: dict[str, Any] = {
    "serial": False,
    "threads": "threads",
    "processes": "processes",
    "thread-class": ThreadPoolExecutor,
    "thread-instance": lambda: ThreadPoolExecutor(max_workers=3),
    "custom-executor": SerialExecutor,
    "dask": "dask",
}


@pytest.fixture(params=sorted(EXECUTORS))
def parallel(request: pytest.FixtureRequest) -> Any:
    value = EXECUTORS[request.param]
    if request.param == "dask":
        request.getfixturevalue("dask_client")
    return value() if callable(value) and not isinstance(value, type) else value


def test_combine_by_coords_on_every_executor(archive: list[Path], parallel: Any) -> None:
    shuffled = [archive[i] for i in np.random.default_rng(1).permutation(FILES)]
    ds = vcube.open_virtual_mfdataset(shuffled, parallel=parallel)
    assert ds.sizes == {"time": 2 * FILES, "lat": 6, "lon": 8}
    assert ds.vcube.nrefs == 2 * FILES * 2 * 2
    report = ds.vcube.report
    assert report is not None
    assert report.succeeded == [
        p.as_uri() for p in shuffled
    ]  # input order, whatever finished first
    assert report.failures == []
    xr.testing.assert_identical(read_back(ds), expected(archive, combine="by_coords"))


def test_nested_along_two_dimensions(tmp_path: Path, parallel: Any) -> None:
    grid = [[tmp_path / f"m{m}_t{t}.nc" for t in range(3)] for m in range(2)]
    for m, row in enumerate(grid):
        for t, path in enumerate(row):
            write_file(path, t, member=m)
    ds = vcube.open_virtual_mfdataset(
        [[str(p) for p in row] for row in grid],
        combine="nested",
        concat_dim=["member", "time"],
        parallel=parallel,
    )
    assert ds["air"].dims == ("member", "time", "lat", "lon")
    want = expected(
        [[str(p) for p in row] for row in grid],
        combine="nested",
        concat_dim=["member", "time"],
        coords="minimal",
        compat="override",
        data_vars=None,
        join="exact",
        combine_attrs="override",
    )
    xr.testing.assert_identical(read_back(ds), want)


def test_glob_and_progress_callback(archive: list[Path]) -> None:
    seen: list[Outcome] = []

    class Recorder:
        def on_start(self, total: int) -> None:
            seen.clear()
            assert total == FILES

        def on_task_end(self, outcome: Outcome) -> None:
            seen.append(outcome)

        def on_end(self) -> None:
            assert len(seen) == FILES

    ds = vcube.open_virtual_mfdataset(
        str(archive[0].parent / "air_*.nc"), parallel="threads", progress=Recorder()
    )
    assert ds.sizes["time"] == 2 * FILES
    assert sorted(o.url for o in seen) == sorted(p.as_uri() for p in archive)


def test_progress_bar_writes_to_stderr(
    archive: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    vcube.open_virtual_mfdataset(archive[:3], progress=True)
    assert "3/3" in capsys.readouterr().err


@pytest.fixture
def with_corrupt(archive: list[Path], tmp_path: Path) -> list[Path]:
    corrupt = tmp_path / "air_corrupt.nc"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    return [*archive[:3], corrupt]


def test_on_error_raise_names_the_file(with_corrupt: list[Path]) -> None:
    with pytest.raises(VcubeError, match=r"air_corrupt\.nc"):
        vcube.open_virtual_mfdataset(with_corrupt)


@pytest.mark.parametrize("on_error", ["skip", "warn"])
def test_on_error_skip_and_warn_report_the_failure(with_corrupt: list[Path], on_error: Any) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = vcube.open_virtual_mfdataset(with_corrupt, on_error=on_error)
    assert ds.sizes["time"] == 6
    report = ds.vcube.report
    assert report is not None
    [failure] = report.failures
    assert failure.url == with_corrupt[-1].as_uri()
    assert failure.error_type == "UnsupportedFormatError"
    assert failure.attempts == 1  # a corrupt file is not retried
    warned = [w for w in caught if issubclass(w.category, PartialFailureWarning)]
    assert len(warned) == (1 if on_error == "warn" else 0)


def test_bad_arguments(archive: list[Path], tmp_path: Path) -> None:
    with pytest.raises(VcubeError, match="no files match"):
        vcube.open_virtual_mfdataset(str(tmp_path / "nothing-*.nc"))
    with pytest.raises(VcubeError, match="unknown parallel='fibers'"):
        vcube.open_virtual_mfdataset(archive[:2], parallel="fibers")  # type: ignore[arg-type]


def test_reduce_holds_only_references(archive: list[Path]) -> None:
    ds = vcube.open_virtual_mfdataset(archive)
    data = sum(v.nbytes for v in ds.data_vars.values())
    # 160 chunk references (20 bytes each) plus 40 paths, against 15 kB of data values.
    assert ds.vcube.nbytes < 20 * ds.vcube.nrefs + 40 * 120 + 2_000
    assert ds.vcube.nbytes < data


def _exit_worker(ds: xr.Dataset) -> xr.Dataset:
    if "air_002" in str(ds["air"].data.manifest.paths[0]):
        import os

        os._exit(1)
    return ds


def test_lost_worker_is_reported_with_its_file(archive: list[Path]) -> None:
    with pytest.raises(Exception, match=r"air_00\d\.nc") as caught:
        vcube.open_virtual_mfdataset(archive[:4], parallel="processes", preprocess=_exit_worker)
    assert not isinstance(caught.value, AssertionError)


def test_times_in_different_units_combine_exactly(tmp_path: Path) -> None:
    paths = []
    for i, units in enumerate(["days since 2000-01-01", "days since 2000-01-01 12:00:00"]):
        path = tmp_path / f"t{i}.nc"
        with netCDF4.Dataset(path, "w") as d:
            d.createDimension("time", None)
            t = d.createVariable("time", "f8", ("time",))
            t.units = units
            t[:] = [i, i + 0.5]
            d.createVariable("v", "f4", ("time",), chunksizes=(1,))[:] = [i, i]
        paths.append(path)
    ds = vcube.open_virtual_mfdataset(paths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # xarray warns that it changes the units to be exact
        back = read_back(ds)
    want = xr.concat([xr.open_dataset(p).load() for p in paths], dim="time")
    np.testing.assert_array_equal(back["time"].values, want["time"].values)
