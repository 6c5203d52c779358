"""The HDF5 battery over S3: each generated file is uploaded to the S3 server, virtualized from its
`s3://` URL, and read back through the references with plain xarray / zarr; values equal what
netCDF4 and h5py read from the local file."""

from __future__ import annotations

from typing import TYPE_CHECKING

import h5py
import numpy as np
import pytest
import xarray as xr
import zarr
from hdf5_files import HDF5_CASES, NETCDF_CASES, write
from test_hdf5 import RAW, assert_reads_as_netcdf4, groups_of, read_back

import vcube
from vcube import HDFParser, ObjectStoreRegistry
from vcube.readers import ReadOptions, ReadStats, ReadStrategy

if TYPE_CHECKING:
    from pathlib import Path

    from s3_server import S3Server

pytestmark = pytest.mark.s3


def raw_netcdf4(path: Path, group: str | None = None) -> xr.Dataset:
    """What netCDF4 reads from (a group of) the local file, not decoded (as `RAW`)."""
    with xr.open_dataset(
        path, engine="netcdf4", group=group, mask_and_scale=False, decode_times=False
    ) as ds:
        return ds.load()


def uploaded(
    case: str, tmp_path: Path, server: S3Server, bucket: str
) -> tuple[Path, str, ObjectStoreRegistry]:
    """Write `case` locally, upload it; its local path, `s3://` URL and a registry for it."""
    path = write(case, tmp_path)
    url = server.upload(path, bucket, f"data/{path.name}")
    return path, url, ObjectStoreRegistry({f"s3://{bucket}": server.store(bucket)})


@pytest.mark.parametrize("case", sorted(NETCDF_CASES))
def test_netcdf_file_over_s3_reads_back_exactly(
    case: str, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    path, url, registry = uploaded(case, tmp_path, s3_server, s3_bucket)
    assert_reads_as_netcdf4(path, url, registry)


@pytest.mark.parametrize("case", sorted(HDF5_CASES))
def test_plain_hdf5_over_s3_reads_back_exactly_as_h5py(
    case: str, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    path, url, registry = uploaded(case, tmp_path, s3_server, s3_bucket)
    root = zarr.open_group(HDFParser()(url, registry), mode="r", zarr_format=3)
    with h5py.File(path) as f:
        datasets: list[str] = []
        f.visititems(lambda n, o: datasets.append(n) if isinstance(o, h5py.Dataset) else None)
        assert datasets
        for name in datasets:
            array = root[name]
            assert isinstance(array, zarr.Array)
            np.testing.assert_array_equal(array[...], f[name][()], strict=True)
        assert dict(root.attrs) == {k: str(v) for k, v in f.attrs.items()}


def test_references_point_at_the_s3_object(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    path, url, registry = uploaded("chunked_zlib_shuffle", tmp_path, s3_server, s3_bucket)
    vds = vcube.open_virtual_dataset(url, registry=registry)  # format detected over S3
    assert vds["air"].data.manifest.paths == (url,)
    requests = len(s3_server.requests(s3_bucket))
    actual = read_back(vds, registry, **RAW)
    xr.testing.assert_identical(actual, raw_netcdf4(path))
    chunk_gets = s3_server.requests(s3_bucket)[requests:]
    assert chunk_gets
    assert {(r.method, r.path, r.status) for r in chunk_gets} == {
        ("GET", f"/{s3_bucket}/data/{path.name}", 206)  # range requests, answered partially
    }


def parse(url: str, registry: ObjectStoreRegistry, strategy: ReadStrategy) -> ReadStats:
    stats = ReadStats()
    options = ReadOptions(strategy=strategy, block_size=4096)
    HDFParser(read_options=options, stats=stats)(url, registry)
    return stats


@pytest.mark.parametrize("strategy", ["ranges", "blocks", "whole"])
@pytest.mark.parametrize("case", ["chunked_zlib_shuffle", "nested_groups"])
def test_every_read_strategy_reads_back_exactly(
    case: str, strategy: ReadStrategy, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    path, url, registry = uploaded(case, tmp_path, s3_server, s3_bucket)
    options = ReadOptions(strategy=strategy, block_size=4096)
    for group in groups_of(path):
        parser = HDFParser(group=group, read_options=options)
        vds = vcube.open_virtual_dataset(url, registry=registry, parser=parser)
        expected = raw_netcdf4(path, group)
        xr.testing.assert_identical(read_back(vds, registry, **RAW), expected)
        assert parser.stats.urls == {url}
        assert parser.stats.requests > 1


def test_read_strategies_trade_requests_for_bytes(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    path, url, registry = uploaded("chunked_zlib_shuffle", tmp_path, s3_server, s3_bucket)
    size = path.stat().st_size
    before = len(s3_server.requests(s3_bucket))
    whole = parse(url, registry, "whole")
    answered = [(r.method, r.status) for r in s3_server.requests(s3_bucket)[before:]]
    assert answered == [("HEAD", 200), ("GET", 200)]
    assert (whole.requests, whole.bytes) == (2, size)
    ranges, blocks = parse(url, registry, "ranges"), parse(url, registry, "blocks")
    assert ranges.requests > blocks.requests > whole.requests
    assert ranges.bytes < size  # only the metadata is read


@pytest.mark.parametrize("strategy", ["blocks", "whole"])
def test_coordinates_load_from_what_the_parse_fetched(
    strategy: ReadStrategy, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """Loading the coordinates after the parse makes no request of its own: their bytes are in
    the blocks (or the whole file) the parser's reader already holds."""
    path, url, registry = uploaded("chunked_zlib_shuffle", tmp_path, s3_server, s3_bucket)
    parser = HDFParser(read_options=ReadOptions(strategy=strategy))
    before = len(s3_server.requests(s3_bucket))
    vds = vcube.open_virtual_dataset(url, registry=registry, parser=parser)
    assert len(s3_server.requests(s3_bucket)) - before == parser.stats.requests
    expected = xr.open_dataset(path, engine="netcdf4").load()
    for name in ("time", "lat", "lon"):
        np.testing.assert_array_equal(vds[name].values, expected[name].values)
