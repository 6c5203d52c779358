"""Failures over S3 raise vcube errors that name the `s3://` URL, promptly: missing objects, objects
that are not HDF5, and truncated HDF5 objects (at parse time, and when the object is truncated
after it was virtualized)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import obstore
import pytest
import zarr
from hdf5_files import write

import vcube
from vcube import HDFParser, ManifestStore, ObjectStoreRegistry
from vcube.errors import (
    SourceNotFoundError,
    TransientIOError,
    UnsupportedFormatError,
    VcubeError,
)
from vcube.readers import ReadOptions, ReadStrategy

if TYPE_CHECKING:
    from pathlib import Path

    from obstore.store import S3Store
    from s3_server import S3Server

pytestmark = pytest.mark.s3

STRATEGIES: list[ReadStrategy] = ["ranges", "blocks", "whole"]
PARSERS: dict[str, HDFParser | None] = {
    "detected": None,
    **{s: HDFParser(read_options=ReadOptions(strategy=s, block_size=4096)) for s in STRATEGIES},
}


@pytest.fixture
def bucket(s3_server: S3Server, s3_bucket: str) -> tuple[str, S3Store, ObjectStoreRegistry]:
    store = s3_server.store(s3_bucket, retries=False)  # failures must not be hidden by retries
    return s3_bucket, store, ObjectStoreRegistry({f"s3://{s3_bucket}": store})


def open_virtual(url: str, registry: ObjectStoreRegistry, parser: str) -> None:
    vcube.open_virtual_dataset(url, registry=registry, parser=PARSERS[parser])


@pytest.mark.parametrize("parser", PARSERS)
def test_missing_key_raises_source_not_found(
    bucket: tuple[str, S3Store, ObjectStoreRegistry], parser: str
) -> None:
    name, _, registry = bucket
    url = f"s3://{name}/no/such/file.nc"
    with pytest.raises(SourceNotFoundError, match=re.escape(url)) as info:
        open_virtual(url, registry, parser)
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize(
    "content",
    # A truncated NetCDF3 header: HDFParser rejects it, and so does the detected NetCDF3Parser.
    [b"", b"\x89HDF", b"not an HDF5 file at all\n" * 40, b"CDF\x01" + bytes(10)],
    ids=["empty", "signature-prefix", "text", "netcdf3"],
)
def test_non_hdf5_object_raises_unsupported_format(
    bucket: tuple[str, S3Store, ObjectStoreRegistry], parser: str, content: bytes
) -> None:
    name, store, registry = bucket
    obstore.put(store, "bad.nc", content)
    url = f"s3://{name}/bad.nc"
    with pytest.raises(UnsupportedFormatError, match=re.escape(url)):
        open_virtual(url, registry, parser)


@pytest.mark.parametrize("parser", PARSERS)
def test_truncated_hdf5_object_raises_a_vcube_error(
    tmp_path: Path, bucket: tuple[str, S3Store, ObjectStoreRegistry], parser: str
) -> None:
    name, store, registry = bucket
    data = write("nested_groups", tmp_path).read_bytes()
    for cut in (8, 100, 2000, len(data) // 2, len(data) - 1):
        obstore.put(store, f"cut{cut}.nc", data[:cut])
        url = f"s3://{name}/cut{cut}.nc"
        with pytest.raises(VcubeError, match=re.escape(url)) as info:
            open_virtual(url, registry, parser)
        assert not isinstance(info.value, TransientIOError), info.value


@pytest.mark.parametrize("lost", ["chunk_tail", "whole_chunk"])
def test_object_truncated_after_virtualizing_raises_a_vcube_error_on_read(
    tmp_path: Path, bucket: tuple[str, S3Store, ObjectStoreRegistry], lost: str
) -> None:
    name, store, registry = bucket
    data = write("chunked_zlib_shuffle", tmp_path).read_bytes()
    obstore.put(store, "x.nc", data)
    url = f"s3://{name}/x.nc"
    vds = vcube.open_virtual_dataset(url, registry=registry, loadable_variables=[])
    manifest = vds["air"].data.manifest
    last = manifest[np.unravel_index(np.argmax(manifest.offsets), manifest.grid_shape)]
    assert last is not None
    assert last.offset + last.length <= len(data)
    obstore.put(
        store, "x.nc", data[: last.offset + (last.length - 1 if lost == "chunk_tail" else 0)]
    )
    air = zarr.open_array(ManifestStore.from_virtual_dataset(vds, registry=registry), path="air")
    with pytest.raises(VcubeError, match=re.escape(url)) as info:
        air[...]
    assert not isinstance(info.value, TransientIOError), info.value
