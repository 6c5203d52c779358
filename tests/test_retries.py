"""Task-level retries of `open_virtual_mfdataset`, with obstore's own retries off.

A fault-injecting proxy (`faults.py`) in front of the S3 server makes the first k requests for some
files fail with 503 SlowDown, 500 or a connection lost mid-body. One failed request fails the whole
task attempt, so a file whose first k requests fail needs k + 1 attempts; every other file needs 1.
Deterministic failures (a corrupt file) are never retried.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import netCDF4
import numpy as np
import obstore
import pytest
import xarray as xr
from s3_server import s3_store_for

import vcube
import vcube.api
from vcube.errors import UnsupportedFormatError, VcubeError
from vcube.mapreduce import PartialFailureWarning
from vcube.parallel import RetryPolicy
from vcube.registry import ObjectStoreRegistry

if TYPE_CHECKING:
    from pathlib import Path

    from faults import FaultMode, FaultProxy
    from s3_server import S3Server

    from vcube.mapreduce import MapReport

pytest_plugins = ["faults"]
pytestmark = pytest.mark.s3

FILES = 6
STEPS = 2  # time steps per file
KEYS = [f"data/f{i}.nc" for i in range(FILES)]
FAULTY = (1, 4)  # the files that fail: the first with 503s, the second with connection resets


def write_file(path: Path, index: int) -> None:
    """A small NetCDF4 file: `STEPS` hours of a zlib-compressed variable and an uncompressed one
    on a 3 x 4 grid."""
    rng = np.random.default_rng(index)
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", 3)
        nc.createDimension("lon", 4)
        time = nc.createVariable("time", "i4", ("time",))
        time.units = "hours since 2000-01-01"
        time[:] = np.arange(STEPS) + STEPS * index
        nc.createVariable("lat", "f4", ("lat",))[:] = [-30.0, 0.0, 30.0]
        nc.createVariable("lon", "f4", ("lon",))[:] = [0.0, 90.0, 180.0, 270.0]
        t = nc.createVariable(
            "t", "f4", ("time", "lat", "lon"), zlib=True, shuffle=True, chunksizes=(1, 3, 4)
        )
        t[:] = rng.standard_normal((STEPS, 3, 4)).astype("f4")
        q = nc.createVariable("q", "f8", ("time", "lat", "lon"), chunksizes=(STEPS, 3, 4))
        q[:] = rng.uniform(0, 1, (STEPS, 3, 4))


@pytest.fixture(scope="module")
def local_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("retries")
    paths = [folder / f"f{i}.nc" for i in range(FILES)]
    for i, path in enumerate(paths):
        write_file(path, i)
    return paths


@dataclass(frozen=True)
class Remote:
    """The files in a bucket, a registry through the fault proxy (no obstore retries), and one
    straight to the server (for reading the result back)."""

    bucket: str
    urls: list[str]
    faulty: ObjectStoreRegistry
    direct: ObjectStoreRegistry
    proxy: FaultProxy

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


@pytest.fixture
def remote(
    s3_server: S3Server, s3_bucket: str, local_files: list[Path], fault_proxy: FaultProxy
) -> Remote:
    urls = [
        s3_server.upload(path, s3_bucket, key) for path, key in zip(local_files, KEYS, strict=True)
    ]
    prefix = f"s3://{s3_bucket}"
    through_proxy = s3_store_for(fault_proxy.endpoint, s3_bucket, retries=False)
    return Remote(
        bucket=s3_bucket,
        urls=urls,
        faulty=ObjectStoreRegistry({prefix: through_proxy}),
        direct=ObjectStoreRegistry({prefix: s3_server.store(s3_bucket)}),
        proxy=fault_proxy,
    )


@pytest.fixture(autouse=True)
def short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry after milliseconds, not seconds. `open_virtual_mfdataset` takes only `retries`, not a
    backoff; the policy it builds is a value carried by each task, so patching the class it
    builds it from reaches every executor (threads, processes, dask workers)."""
    fast = functools.partial(RetryPolicy, backoff=0.001, max_backoff=0.01)
    monkeypatch.setattr(vcube.api, "RetryPolicy", fast)


@pytest.fixture(params=["serial", "threads", "dask", "processes"])
def parallel(request: pytest.FixtureRequest) -> Any:
    if request.param == "dask":
        request.getfixturevalue("dask_client")
    return {"serial": False}.get(request.param, request.param)


def open_remote(remote: Remote, **kwargs: Any) -> tuple[xr.Dataset, MapReport, dict[str, int]]:
    ds = vcube.open_virtual_mfdataset(remote.urls, registry=remote.faulty, **kwargs)
    report = ds.vcube.report
    assert report is not None
    return ds, report, report.attempts_by_url


def assert_reads_back(ds: xr.Dataset, registry: ObjectStoreRegistry, files: list[Path]) -> None:
    """The virtual dataset read through zarr equals what netCDF4 reads from the local copies."""
    store = vcube.ManifestStore.from_virtual_dataset(ds, registry=registry)
    back = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None).load()
    expected: dict[str, list[np.ndarray]] = {"t": [], "q": [], "time": []}
    for path in files:
        with netCDF4.Dataset(path) as nc:
            for name in ("t", "q"):
                expected[name].append(np.asarray(nc[name][:]))
            hours = np.asarray(nc["time"][:]).astype("timedelta64[h]")
            expected["time"].append(np.datetime64("2000-01-01T00", "ns") + hours)
            lat, lon = np.asarray(nc["lat"][:]), np.asarray(nc["lon"][:])
    for name, parts in expected.items():
        want = np.concatenate(parts)
        assert back[name].dtype == want.dtype, name
        np.testing.assert_array_equal(back[name].values, want, err_msg=name)
    np.testing.assert_array_equal(back["lat"].values, lat)
    np.testing.assert_array_equal(back["lon"].values, lon)


def requests_per_clean_file(remote: Remote, faulty: set[str]) -> int:
    """Requests an untroubled file needs (the same for every file of the corpus)."""
    counts = {k: remote.proxy.requests(k) for k in KEYS if k not in faulty}
    assert len(set(counts.values())) == 1, counts
    return next(iter(counts.values()))


# --------------------------------------------------------------------------- retried


@pytest.mark.parametrize("k", [1, 3])
def test_transient_failures_are_retried_as_often_as_needed(
    remote: Remote, local_files: list[Path], parallel: Any, k: int
) -> None:
    proxy = remote.proxy
    proxy.fail(KEYS[FAULTY[0]], k, "503")
    proxy.fail(KEYS[FAULTY[1]], k, "reset", methods={"GET"})  # GETs have a body to cut
    ds, report, attempts = open_remote(remote, retries=3, parallel=parallel)

    assert report.failures == []
    assert report.succeeded == remote.urls
    expected = dict.fromkeys(remote.urls, 1) | {remote.url(KEYS[i]): k + 1 for i in FAULTY}
    assert attempts == expected
    assert report.attempts == FILES + 2 * k
    assert report.retried == 2 * k
    first, second = (KEYS[i] for i in FAULTY)
    assert proxy.failed(first) == proxy.failed(second) == k
    # A failed attempt stops at its failed request (the first one, the probe's GET, for both
    # files): nothing else is fetched again, and no other file is touched twice.
    clean = requests_per_clean_file(remote, {first, second})
    assert proxy.requests(first) == clean + k
    assert proxy.requests(second) == clean + k
    assert_reads_back(ds, remote.direct, local_files)


@pytest.mark.parametrize("mode", ["503", "500", "reset"])
def test_a_failure_at_any_request_of_a_file_is_retried(
    remote: Remote, local_files: list[Path], mode: FaultMode
) -> None:
    """Fail each request of one file in turn: the magic-bytes probe and the reads h5py makes
    through vcube's file object (the coordinates then load from the blocks those read)."""
    url, proxy = remote.urls[0], remote.proxy
    vcube.open_virtual_mfdataset([url], registry=remote.faulty)
    clean = proxy.requests(KEYS[0])
    assert clean == 3  # the probe's GET, the parse's HEAD and its one block
    for position in range(clean):
        proxy.clear()
        proxy.fail(KEYS[0], 1, mode, after=position)
        ds = vcube.open_virtual_mfdataset([url], registry=remote.faulty, retries=1)
        assert ds.vcube.report is not None
        assert ds.vcube.report.attempts_by_url == {url: 2}, position
        # The failed attempt stopped at its failed request (reads already in flight beside it,
        # the coordinates are read concurrently, may finish); the retry made a clean run.
        assert clean + position + 1 <= proxy.requests(KEYS[0]) <= 2 * clean, position
    assert_reads_back(ds, remote.direct, local_files[:1])


# --------------------------------------------------------------------------- given up


def test_without_retries_transient_failures_are_reported(remote: Remote) -> None:
    remote.proxy.fail(KEYS[FAULTY[0]], 1, "503")
    remote.proxy.fail(KEYS[FAULTY[1]], 1, "reset", methods={"GET"})
    ds, report, _ = open_remote(remote, retries=0, on_error="skip")
    faulty = [remote.url(KEYS[i]) for i in FAULTY]
    assert [f.url for f in report.failures] == faulty
    for failure in report.failures:
        assert failure.error_type == "TransientIOError", failure
        assert failure.attempts == 1
        assert failure.url in failure.message
    assert report.succeeded == [u for u in remote.urls if u not in faulty]
    assert report.attempts == FILES
    assert ds.sizes["time"] == STEPS * (FILES - len(FAULTY))


def test_retries_stop_at_the_budget(remote: Remote) -> None:
    remote.proxy.fail(KEYS[1], 5, "503")
    _, report, attempts = open_remote(remote, retries=2, on_error="skip")
    [failure] = report.failures
    assert failure.url == remote.url(KEYS[1])
    assert failure.error_type == "TransientIOError"
    assert failure.attempts == attempts[failure.url] == 3
    assert remote.proxy.failed(KEYS[1]) == 3


# --------------------------------------------------------------------------- not retried


@pytest.fixture
def corrupt(remote: Remote, s3_server: S3Server) -> str:
    """A file of garbage bytes with a `.nc` name, among the good ones."""
    key = "data/f2_corrupt.nc"
    garbage = np.random.default_rng(0).bytes(5000)
    obstore.put(s3_server.store(remote.bucket), key, garbage)
    url = remote.url(key)
    remote.urls.insert(3, url)
    return url


def test_a_corrupt_file_is_not_retried_and_is_reported(
    remote: Remote, corrupt: str, local_files: list[Path]
) -> None:
    ds, report, attempts = open_remote(remote, retries=3, on_error="skip")
    [failure] = report.failures
    assert failure.url == corrupt
    assert failure.error_type == UnsupportedFormatError.__name__
    assert failure.attempts == attempts[corrupt] == 1
    assert corrupt in failure.message
    assert report.attempts == FILES + 1
    assert report.succeeded == [u for u in remote.urls if u != corrupt]
    assert_reads_back(ds, remote.direct, local_files)


def test_a_corrupt_file_raises_naming_it(remote: Remote, corrupt: str) -> None:
    with pytest.raises(VcubeError, match=re.escape(corrupt)):
        open_remote(remote, retries=3)
    assert remote.proxy.requests(corrupt.removeprefix(f"s3://{remote.bucket}/")) <= 2


def test_a_corrupt_file_warns(remote: Remote, corrupt: str) -> None:
    with pytest.warns(PartialFailureWarning, match=re.escape(corrupt)):
        _, report, _ = open_remote(remote, retries=3, on_error="warn")
    assert [f.url for f in report.failures] == [corrupt]


def test_a_corrupt_file_is_not_retried_on_dask(
    remote: Remote, corrupt: str, dask_client: Any
) -> None:
    remote.proxy.fail(KEYS[0], 1, "503")
    _, report, attempts = open_remote(remote, retries=3, on_error="skip", parallel="dask")
    assert [(f.url, f.attempts) for f in report.failures] == [(corrupt, 1)]
    assert attempts[remote.url(KEYS[0])] == 2
