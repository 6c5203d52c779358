"""`open_virtual_mfdataset` on lithops' localhost backend and storage, offline.

lithops runs each task in a fresh interpreter (`runtime`: this one) and costs seconds of overhead
per call, so the corpus is 4 files. Local files, and S3 files behind the fault proxy (task-level
retries on lithops, with obstore's own retries off).
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any

import netCDF4
import numpy as np
import pytest
import xarray as xr
from s3_server import s3_store_for

import vcube
import vcube.api
from vcube.parallel import LithopsEagerFunctionExecutor, RetryPolicy
from vcube.registry import ObjectStoreRegistry

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from faults import FaultProxy
    from s3_server import S3Server


pytest_plugins = ["faults"]
pytestmark = pytest.mark.slow

FILES = 4
CONFIG: dict[str, Any] = {
    "lithops": {"backend": "localhost", "storage": "localhost"},
    "localhost": {"runtime": sys.executable},
}


def write_file(path: Path, index: int) -> None:
    rng = np.random.default_rng(index)
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("y", 4)
        nc.createDimension("x", 5)
        time = nc.createVariable("time", "f8", ("time",))
        time.units = "days since 1990-01-01"
        time.calendar = "standard"
        time[:] = [3.0 * index, 3.0 * index + 1.5]
        nc.createVariable("y", "f4", ("y",))[:] = np.arange(4)
        nc.createVariable("x", "f4", ("x",))[:] = np.arange(5) * 0.5
        v = nc.createVariable(
            "sst", "f4", ("time", "y", "x"), zlib=True, chunksizes=(1, 2, 5), fill_value=-999.0
        )
        v[:] = rng.standard_normal((2, 4, 5)).astype("f4")
        v[0, 0, 0] = np.ma.masked  # a missing value: NaN after decoding, on both sides


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("lithops")
    paths = [folder / f"sst_{i}.nc" for i in range(FILES)]
    for i, path in enumerate(paths):
        write_file(path, i)
    return paths


@pytest.fixture
def executor() -> Iterator[LithopsEagerFunctionExecutor]:
    pytest.importorskip("lithops")
    lithops_executor = LithopsEagerFunctionExecutor(config=CONFIG)
    yield lithops_executor
    lithops_executor.shutdown()  # an instance passed in is the caller's to shut down


def assert_equals_netcdf4(ds: xr.Dataset, files: list[Path], registry: Any = None) -> None:
    """Read back through zarr, compared with what netCDF4 reads (masked values as NaN)."""
    store = vcube.ManifestStore.from_virtual_dataset(ds, registry=registry)
    back = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None).load()
    sst, times = [], []
    for path in files:
        with netCDF4.Dataset(path) as nc:
            sst.append(nc["sst"][:].astype("f4").filled(np.nan))
            dates = netCDF4.num2date(
                nc["time"][:], nc["time"].units, only_use_cftime_datetimes=False
            )
            times.append(np.array(dates, dtype="datetime64[ns]"))
            y, x = np.asarray(nc["y"][:]), np.asarray(nc["x"][:])
    np.testing.assert_array_equal(back["sst"].values, np.concatenate(sst))
    np.testing.assert_array_equal(back["time"].values, np.concatenate(times))
    np.testing.assert_array_equal(back["y"].values, y)
    np.testing.assert_array_equal(back["x"].values, x)


def test_local_files_on_lithops(files: list[Path], executor: LithopsEagerFunctionExecutor) -> None:
    reverse = files[::-1]
    ds = vcube.open_virtual_mfdataset([str(p) for p in reverse], parallel=executor)
    report = ds.vcube.report
    assert report is not None
    assert report.succeeded == [p.as_uri() for p in reverse]  # input order
    assert report.attempts == FILES
    assert ds.sizes == {"time": 2 * FILES, "y": 4, "x": 5}
    assert_equals_netcdf4(ds, files)


def test_retries_on_lithops(
    files: list[Path],
    executor: LithopsEagerFunctionExecutor,
    s3_server: S3Server,
    s3_bucket: str,
    fault_proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast = functools.partial(RetryPolicy, backoff=0.001, max_backoff=0.01)
    monkeypatch.setattr(vcube.api, "RetryPolicy", fast)  # the policy travels with each task
    urls = [s3_server.upload(p, s3_bucket, f"sst/{p.name}") for p in files]
    fault_proxy.fail(f"sst/{files[1].name}", 2, "503")
    fault_proxy.fail(f"sst/{files[2].name}", 1, "reset", methods={"GET"})
    through_proxy = s3_store_for(fault_proxy.endpoint, s3_bucket, retries=False)
    ds = vcube.open_virtual_mfdataset(
        urls,
        registry=ObjectStoreRegistry({f"s3://{s3_bucket}": through_proxy}),
        parallel=executor,
        retries=3,
    )
    report = ds.vcube.report
    assert report is not None
    assert report.attempts_by_url == {urls[0]: 1, urls[1]: 3, urls[2]: 2, urls[3]: 1}
    assert (report.attempts, report.failures) == (FILES + 3, [])
    direct = ObjectStoreRegistry({f"s3://{s3_bucket}": s3_server.store(s3_bucket)})
    assert_equals_netcdf4(ds, files, direct)
