"""Shared test setup; the S3 server fixture lives in `s3_server.py` (a pytest plugin)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# h5py and hdf5plugin must be imported before netCDF4: netCDF4's wheel bundles its own libhdf5,
# and hdf5plugin's filters registered after it fail with "error during user callback".
import h5py  # noqa: F401
import hdf5plugin  # noqa: F401
import icechunk
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

pytest_plugins = ["s3_server"]

# Icechunk warns on every local repository that local storage is unsafe for concurrent commits.
icechunk.set_logs_filter("error")


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """One real dask.distributed cluster (2 worker processes) for every dask test of a session."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client
