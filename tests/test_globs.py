"""Globs as the `paths` of `open_virtual_mfdataset`: over a local folder and over the S3 server.

Patterns use `*`, `?` and `[...]` (no `**`); matches come back sorted, and `*` stays within one
folder, as in the shell and `glob.glob`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import netCDF4
import numpy as np
import pytest
import zarr

import vcube
from vcube.errors import SourceNotFoundError, VcubeError
from vcube.registry import ObjectStoreRegistry, expand_glob

if TYPE_CHECKING:
    from pathlib import Path

    from s3_server import S3Server

# Written in this (unsorted) order; the time step of each file is its rank in sorted order.
NAMES = ["b10.nc", "a2.nc", "b1.nc", "a1.nc", "c.nc"]
RANK = {name: i for i, name in enumerate(sorted(NAMES))}
CASES = {
    "*.nc": ["a1.nc", "a2.nc", "b1.nc", "b10.nc", "c.nc"],
    "a?.nc": ["a1.nc", "a2.nc"],
    "b?.nc": ["b1.nc"],
    "[ab]1.nc": ["a1.nc", "b1.nc"],
    "[!a]*.nc": ["b1.nc", "b10.nc", "c.nc"],
    "b1*": ["b1.nc", "b10.nc"],
    "*1.nc": ["a1.nc", "b1.nc"],
}


def write_file(path: Path, step: int) -> None:
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("x", 3)
        time = nc.createVariable("time", "i4", ("time",))
        time.units = "days since 2020-01-01"
        time[:] = [step]
        v = nc.createVariable("v", "f4", ("time", "x"), zlib=True, chunksizes=(1, 3))
        v[:] = np.arange(3, dtype="f4")[None] + step


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files, plus what no `*.nc` pattern may match: a subfolder's file, a folder named like a
    file, another extension."""
    root = tmp_path_factory.mktemp("globs")
    for name in NAMES:
        write_file(root / name, RANK[name])
    (root / "sub").mkdir()
    write_file(root / "sub" / "a3.nc", 99)
    (root / "dir.nc").mkdir()
    (root / "notes.txt").write_text("not a netCDF file")
    return root


# --------------------------------------------------------------------------- local


@pytest.mark.parametrize("pattern", CASES)
def test_local_glob_matches_sorted(folder: Path, pattern: str) -> None:
    urls = expand_glob(str(folder / pattern), ObjectStoreRegistry())
    assert urls == [(folder / name).as_uri() for name in CASES[pattern]]


@pytest.mark.parametrize("pattern", ["*.nc", "a?.nc", "[ab]1.nc"])
def test_local_glob_opens_the_matches_in_order(folder: Path, pattern: str) -> None:
    ds = vcube.open_virtual_mfdataset(folder / pattern, combine="nested", concat_dim="time")
    report = ds.vcube.report
    assert report is not None
    assert report.succeeded == [(folder / name).as_uri() for name in CASES[pattern]]
    steps = [RANK[name] for name in CASES[pattern]]
    days = np.array(steps, dtype="timedelta64[D]")
    np.testing.assert_array_equal(ds["time"].values, np.datetime64("2020-01-01") + days)


@pytest.mark.parametrize("pattern", ["*.nc", "[ab]1.nc", "b1*", "a?.nc"])
def test_local_glob_as_file_url(folder: Path, pattern: str) -> None:
    urls = expand_glob(f"{folder.as_uri()}/{pattern}", ObjectStoreRegistry())
    assert urls == [(folder / name).as_uri() for name in CASES[pattern]]


def test_local_glob_relative_to_the_working_directory(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(folder)
    urls = expand_glob("a?.nc", ObjectStoreRegistry())
    assert urls == [(folder / name).as_uri() for name in CASES["a?.nc"]]


def test_local_glob_without_match_raises(folder: Path) -> None:
    pattern = str(folder / "*.h5")
    with pytest.raises(VcubeError, match="no files match"):
        vcube.open_virtual_mfdataset(pattern)


# --------------------------------------------------------------------------- S3


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server, folder: Path) -> str:
    """The files under `prefix/` (plus decoys elsewhere) in a bucket of their own (read only)."""
    name = s3_server.create_bucket()
    for file in NAMES:
        s3_server.upload(folder / file, name, f"prefix/{file}")
    s3_server.upload(folder / "sub" / "a3.nc", name, "prefix/sub/a3.nc")
    s3_server.upload(folder / "a1.nc", name, "other/a1.nc")
    s3_server.upload(folder / "notes.txt", name, "prefix/notes.txt")
    return name


@pytest.fixture(scope="module")
def registry(s3_server: S3Server, bucket: str) -> ObjectStoreRegistry:
    return ObjectStoreRegistry({f"s3://{bucket}": s3_server.store(bucket)})


@pytest.mark.parametrize("pattern", CASES)
def test_s3_glob_matches_sorted(bucket: str, registry: ObjectStoreRegistry, pattern: str) -> None:
    urls = expand_glob(f"s3://{bucket}/prefix/{pattern}", registry)
    assert urls == [f"s3://{bucket}/prefix/{name}" for name in CASES[pattern]]


def test_s3_glob_with_a_pattern_in_a_folder_name(
    bucket: str, registry: ObjectStoreRegistry
) -> None:
    urls = expand_glob(f"s3://{bucket}/*/a1.nc", registry)
    assert urls == [f"s3://{bucket}/other/a1.nc", f"s3://{bucket}/prefix/a1.nc"]


def test_s3_glob_with_a_registry_for_the_prefix(s3_server: S3Server, bucket: str) -> None:
    """A store registered for `s3://bucket/prefix` lists relative to that prefix."""
    store = s3_server.store(bucket, prefix="prefix")
    registry = ObjectStoreRegistry({f"s3://{bucket}/prefix": store})
    urls = expand_glob(f"s3://{bucket}/prefix/a?.nc", registry)
    assert urls == [f"s3://{bucket}/prefix/{name}" for name in CASES["a?.nc"]]


def test_s3_glob_opens_the_matches_in_order(bucket: str, registry: ObjectStoreRegistry) -> None:
    pattern = f"s3://{bucket}/prefix/b1*"
    ds = vcube.open_virtual_mfdataset(pattern, registry=registry)
    report = ds.vcube.report
    assert report is not None
    assert report.succeeded == [f"s3://{bucket}/prefix/{n}" for n in CASES["b1*"]]
    store = vcube.ManifestStore.from_virtual_dataset(ds, registry=registry)
    values = np.asarray(zarr.open_array(store, path="v", mode="r", zarr_format=3)[...])
    steps = np.array([RANK[n] for n in CASES["b1*"]], dtype="f4")
    np.testing.assert_array_equal(values, np.arange(3, dtype="f4")[None] + steps[:, None])


@pytest.mark.parametrize("pattern", ["prefix/*.h5", "nothing/*.nc", "prefix/a[3-9].nc"])
def test_s3_glob_without_match_raises(
    bucket: str, registry: ObjectStoreRegistry, pattern: str
) -> None:
    with pytest.raises(VcubeError, match="no files match"):
        vcube.open_virtual_mfdataset(f"s3://{bucket}/{pattern}", registry=registry)


@pytest.mark.xfail(
    reason="registry.resolve unquotes s3:// URLs, so a key with a literal `%xx` is not found",
    raises=SourceNotFoundError,
    strict=True,
)
def test_s3_glob_match_with_a_percent_in_its_key_opens(
    s3_server: S3Server, s3_bucket: str, folder: Path
) -> None:
    """Object keys are taken literally, as the listing gives them (and as fsspec reads them)."""
    url = s3_server.upload(folder / "a1.nc", s3_bucket, "p/rate_100%25.nc")
    registry = ObjectStoreRegistry({f"s3://{s3_bucket}": s3_server.store(s3_bucket)})
    assert expand_glob(f"s3://{s3_bucket}/p/*.nc", registry) == [url]
    vcube.open_virtual_dataset(url, registry=registry)
