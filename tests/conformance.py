"""The conformance battery every parser passes: what a file's virtual references read back as,
through every output path and with the real clients, equals what the format's own library reads.

A parser's tests build the expected `xr.Dataset` with the owner library (netCDF4, scipy, zarr,
astropy, tifffile) and call `assert_conformant` for local files and `assert_conformant_s3` for the
same file on the S3 server fixture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import icechunk as ic
import numpy as np
import xarray as xr

import vcube
from vcube import ManifestStore
from vcube.registry import ObjectStoreRegistry
from vcube.writers.icechunk import to_icechunk
from vcube.writers.kerchunk import to_kerchunk

if TYPE_CHECKING:
    from pathlib import Path

    from s3_server import S3Server

    from vcube.parsers import Parser

RAW: dict[str, Any] = {"mask_and_scale": False, "decode_times": False}


def assert_same(actual: xr.Dataset, expected: xr.Dataset, *, attrs: bool = True) -> None:
    """Equal values, dtypes and dimensions (and attributes when `attrs`)."""
    actual, expected = actual.load(), expected.load()
    if attrs:
        xr.testing.assert_identical(actual, expected)
    else:
        xr.testing.assert_equal(actual, expected)
    for name, var in expected.variables.items():
        assert actual[name].dtype == var.dtype, (name, actual[name].dtype, var.dtype)
        np.testing.assert_array_equal(actual[name].values, var.values, err_msg=str(name))


def read_store(store: Any, *, group: str | None = None) -> xr.Dataset:
    return xr.open_zarr(
        store, zarr_format=3, consolidated=False, chunks=None, group=group, **RAW
    ).load()


def read_kerchunk(refs: dict[str, Any], *, decode: bool = False) -> xr.Dataset:
    """Kerchunk references read by fsspec and xarray: raw values, or CF-decoded ones."""
    return xr.open_dataset(
        "reference://",
        engine="zarr",
        zarr_format=2,
        consolidated=False,
        storage_options={"fo": refs},
        chunks=None,
        **({} if decode else RAW),
    ).load()


def icechunk_repo(data_dir: Path, repo_dir: Path) -> ic.Repository:
    """A new local repository whose virtual chunk container covers `data_dir`."""
    config = ic.RepositoryConfig.default()
    prefix = data_dir.resolve().as_uri() + "/"
    config.set_virtual_chunk_container(
        ic.VirtualChunkContainer(prefix, ic.local_filesystem_store(str(data_dir.resolve())))
    )
    return ic.Repository.create(
        ic.local_filesystem_storage(str(repo_dir)),
        config=config,
        authorize_virtual_chunk_access={prefix: ic.credentials.LocalFileSystemAccess},
    )


def read_icechunk(vds: xr.Dataset, data_dir: Path, repo_dir: Path) -> xr.Dataset:
    repo = icechunk_repo(data_dir, repo_dir)
    session = repo.writable_session("main")
    to_icechunk(vds, session.store)
    session.commit("conformance")
    return read_store(repo.readonly_session("main").store)


def assert_conformant(
    path: Path,
    expected: xr.Dataset,
    parser: Parser,
    tmp_path: Path,
    *,
    attrs: bool = True,
    detect: bool = True,
    **open_kwargs: Any,
) -> xr.Dataset:
    """`path` (a local file, or a directory for Zarr) read back raw (no CF decoding) through
    `ManifestStore`, Kerchunk (fsspec) and Icechunk equals `expected`, with and without
    auto-detection. Returns the virtual dataset."""
    vds = vcube.open_virtual_dataset(str(path), parser=parser, **open_kwargs)
    assert_same(read_store(ManifestStore.from_virtual_dataset(vds)), expected, attrs=attrs)
    if detect:
        detected = vcube.open_virtual_dataset(str(path), **open_kwargs)
        assert_same(read_store(ManifestStore.from_virtual_dataset(detected)), expected, attrs=attrs)
    assert_same(read_kerchunk(to_kerchunk(vds)), expected, attrs=attrs)
    assert_same(read_icechunk(vds, path.parent, tmp_path / "repo"), expected, attrs=attrs)
    return vds


def assert_conformant_s3(
    path: Path,
    expected: xr.Dataset,
    parser: Parser,
    s3_server: S3Server,
    bucket: str,
    *,
    attrs: bool = True,
    **open_kwargs: Any,
) -> xr.Dataset:
    """The same file uploaded to the S3 server reads back as `expected` through `ManifestStore`
    (parsed and read through obstore), with and without auto-detection."""
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            url = s3_server.upload(file, bucket, f"{path.name}/{file.relative_to(path)}")
        url = f"s3://{bucket}/{path.name}"
    else:
        url = s3_server.upload(path, bucket, path.name)
    registry = ObjectStoreRegistry({f"s3://{bucket}": s3_server.store(bucket)})
    vds = vcube.open_virtual_dataset(url, registry=registry, parser=parser, **open_kwargs)
    store = ManifestStore.from_virtual_dataset(vds, registry=registry)
    assert_same(read_store(store), expected, attrs=attrs)
    detected = vcube.open_virtual_dataset(url, registry=registry, **open_kwargs)
    store = ManifestStore.from_virtual_dataset(detected, registry=registry)
    assert_same(read_store(store), expected, attrs=attrs)
    return vds
