"""Shared test setup; the S3 server fixture lives in `s3_server.py` (a pytest plugin)."""

from __future__ import annotations

# h5py and hdf5plugin must be imported before netCDF4: netCDF4's wheel bundles its own libhdf5,
# and hdf5plugin's filters registered after it fail with "error during user callback".
import h5py  # noqa: F401
import hdf5plugin  # noqa: F401

pytest_plugins = ["s3_server"]
