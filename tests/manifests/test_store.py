"""`ManifestStore` as a read-only zarr store over real NetCDF4 / HDF5 files.

Expected bytes come from the file itself at the chunk addresses h5py reports; expected listings come
from zarr's own `MemoryStore` after zarr writes the same arrays with the same writes.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import MemoryStore

from vcube.errors import ReadOnlyError, VcubeError
from vcube.manifests import ManifestGroup, ManifestStore
from vcube.parsers import HDFParser
from vcube.registry import normalize_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine
    from pathlib import Path

    from zarr.abc.store import ByteRequest, Store

SETTINGS = settings(max_examples=50, deadline=None, database=None)
PROTO = default_buffer_prototype()
INLINE_BLOCK = np.full((2, 4), 7, dtype="<i4").tobytes()


@dataclass(frozen=True)
class Spec:
    """One variable, written the same way into the netCDF4 file and into a zarr `MemoryStore`."""

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    fill: Any
    chunks: tuple[int, ...] | None = None  # None: contiguous (a single chunk)
    zlib: bool = False
    writes: list[tuple[Any, Any]] = field(default_factory=list)


SPECS = {
    "v": Spec(
        ("y", "x"),
        (6, 8),
        "i4",
        -9,
        (2, 4),
        writes=[((slice(0, 2), slice(None)), 1), ((slice(4, 6), slice(4, 8)), 2)],
    ),
    "z": Spec(("t",), (7,), "f8", -1.0, (3,), zlib=True, writes=[(slice(None), np.arange(7.0))]),
    "s": Spec((), (), "f8", -1.0, writes=[((), 1.5)]),
    "g/w": Spec(("n",), (3,), "f4", -1.0, writes=[(slice(None), [1, 2, 3])]),
    "g/h/u": Spec(("a", "b"), (2, 2), "i2", -1, (1, 2), writes=[(slice(None), [[1, 2], [3, 4]])]),
}


def run[T](coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def collect(items: AsyncIterator[str]) -> list[str]:
    return sorted([k async for k in items])


def fetch(store: Store, key: str, byte_range: ByteRequest | None = None) -> bytes:
    """The bytes at `key`, which must exist."""
    got = run(store.get(key, PROTO, byte_range=byte_range))
    assert got is not None, key
    return got.to_bytes()


def write_netcdf(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as root:
        root.title = "store tests"
        for name, spec in SPECS.items():
            group_path, _, var = name.rpartition("/")
            group = root
            for part in filter(None, group_path.split("/")):
                group = group.groups.get(part) or group.createGroup(part)
            for dim, n in zip(spec.dims, spec.shape, strict=True):
                group.createDimension(dim, n)
            kwargs: dict[str, Any] = {"fill_value": spec.fill, "zlib": spec.zlib}
            if spec.chunks is None:
                kwargs["contiguous"] = bool(spec.shape)
            else:
                kwargs["chunksizes"] = spec.chunks
            v = group.createVariable(var, spec.dtype, spec.dims, **kwargs)
            for where, value in spec.writes:
                v[where] = value


def write_zarr() -> MemoryStore:
    mem = MemoryStore()
    root = zarr.open_group(mem, mode="w", zarr_format=3)
    for name, spec in SPECS.items():
        group_path, _, var = name.rpartition("/")
        group = root.require_group(group_path) if group_path else root
        array = group.create_array(
            var,
            shape=spec.shape,
            chunks=spec.chunks or spec.shape,
            dtype=spec.dtype,
            fill_value=spec.fill,
        )
        for where, value in spec.writes:
            array[where] = value
    return mem


@pytest.fixture(scope="module")
def nc_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "cube.nc"
    write_netcdf(path)
    return path


@pytest.fixture(scope="module")
def store(nc_path: Path) -> ManifestStore:
    return HDFParser()(normalize_url(nc_path))


@pytest.fixture(scope="module")
def reference() -> MemoryStore:
    return write_zarr()


def chunk_bytes(path: Path) -> dict[str, bytes]:
    """Every allocated chunk of every dataset, by zarr chunk key, as h5py locates it."""
    raw = path.read_bytes()
    out: dict[str, bytes] = {}

    def visit(name: str, node: object) -> None:
        if not isinstance(node, h5py.Dataset) or name not in SPECS:
            return
        if node.chunks is None:
            key = f"{name}/c" + "/0" * node.ndim
            start, size = node.id.get_offset(), node.id.get_storage_size()
            out[key] = raw[start : start + size]
            return
        for i in range(node.id.get_num_chunks()):
            info = node.id.get_chunk_info(i)
            index = (o // c for o, c in zip(info.chunk_offset, node.chunks, strict=True))
            key = f"{name}/c/" + "/".join(map(str, index))
            out[key] = raw[info.byte_offset : info.byte_offset + info.size]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


@pytest.fixture(scope="module")
def file_chunks(nc_path: Path) -> dict[str, bytes]:
    return chunk_bytes(nc_path)


# -- reading with zarr --------------------------------------------------------------------------


def test_zarr_reads_what_netcdf4_reads(store: ManifestStore, nc_path: Path) -> None:
    group = zarr.open_group(store, mode="r")
    assert group.attrs["title"] == "store tests"
    with netCDF4.Dataset(nc_path) as nc:
        nc.set_auto_mask(False)
        for name in SPECS:
            expected = nc[name][...]
            array = group[name]
            assert isinstance(array, zarr.Array)
            np.testing.assert_array_equal(array[...], expected, err_msg=name)
    assert sorted(group.group_keys()) == ["g"]
    assert sorted(zarr.open_group(store, path="g/h", mode="r").array_keys()) == ["u"]


def test_documents_are_zarr_v3_json(store: ManifestStore) -> None:
    for key, node_type in [("zarr.json", "group"), ("g/h/zarr.json", "group")]:
        doc = json.loads(fetch(store, key))
        assert (doc["zarr_format"], doc["node_type"]) == (3, node_type)
    doc = json.loads(fetch(store, "v/zarr.json"))
    assert doc["shape"] == [6, 8]
    assert doc["chunk_grid"]["configuration"]["chunk_shape"] == [2, 4]
    assert doc["fill_value"] == -9


# -- get, get_partial_values --------------------------------------------------------------------


def test_every_chunk_is_the_file_bytes(store: ManifestStore, file_chunks: dict[str, bytes]) -> None:
    assert "s/c" in file_chunks  # the 0-d array's one chunk
    for key, expected in file_chunks.items():
        assert fetch(store, key) == expected, key
        assert run(store.getsize(key)) == len(expected)


def test_absent_keys_get_none(store: ManifestStore) -> None:
    for key in ["v/c/1/0", "v/c/3/0", "v/c/0/2", "v/c/0", "s/c/0", "nope/zarr.json", "v/x/0/0"]:
        assert run(store.get(key, PROTO)) is None, key


def requests() -> st.SearchStrategy[ByteRequest | None]:
    n = st.integers(0, 60)
    return st.one_of(
        st.none(),
        st.builds(RangeByteRequest, n, n),
        st.builds(OffsetByteRequest, n),
        st.builds(SuffixByteRequest, n),
    )


def sliced(data: bytes, request: ByteRequest | None) -> bytes:
    match request:
        case None:
            return data
        case RangeByteRequest(start=start, end=end):
            return data[start:end]
        case OffsetByteRequest(offset=offset):
            return data[offset:]
        case SuffixByteRequest(suffix=suffix):
            return data[max(len(data) - suffix, 0) :]
    raise AssertionError(request)


@SETTINGS
@given(st.lists(requests(), min_size=1, max_size=6))
def test_byte_requests_slice_the_chunk(
    store: ManifestStore,
    inline_store: ManifestStore,
    file_chunks: dict[str, bytes],
    batch: list[ByteRequest | None],
) -> None:
    targets: list[tuple[Store, str, bytes]] = [
        (store, "v/c/0/0", file_chunks["v/c/0/0"]),
        (store, "z/c/2", file_chunks["z/c/2"]),  # compressed, partial chunk
        (store, "s/c", file_chunks["s/c"]),
        (store, "v/zarr.json", fetch(store, "v/zarr.json")),
        (inline_store, "v/c/1/1", INLINE_BLOCK),
    ]
    for target, key, whole in targets:
        got = run(target.get_partial_values(PROTO, [(key, r) for r in batch]))
        assert [None if b is None else b.to_bytes() for b in got] == [
            sliced(whole, r) for r in batch
        ]
        for r in batch[:2]:
            assert fetch(target, key, r) == sliced(whole, r)


def test_partial_values_of_absent_keys_are_none(store: ManifestStore) -> None:
    got = run(
        store.get_partial_values(
            PROTO, [("v/c/1/0", None), ("v/c/0/0", RangeByteRequest(0, 4)), ("no/c/0", None)]
        )
    )
    assert got[0] is None
    assert got[1] is not None
    assert len(got[1]) == 4
    assert got[2] is None


# -- exists -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("zarr.json", True),
        ("v/zarr.json", True),
        ("g/zarr.json", True),
        ("g/h/u/zarr.json", True),
        ("v/c/0/0", True),  # present
        ("v/c/2/1", True),
        ("s/c", True),  # 0-d
        ("g/h/u/c/1/0", True),
        ("v/c/1/0", False),  # missing: never written
        ("v/c/2/0", False),
        ("v/c/3/0", False),  # outside the grid
        ("v/c/0/2", False),
        ("z/c/3", False),
        ("v/c/0", False),  # wrong number of indices
        ("s/c/0", False),
        ("v/c", False),
        ("v", False),
        ("g/w", False),
        ("v/zarr.jsonx", False),
        ("nope/zarr.json", False),
        ("v/c/-1/0", False),
    ],
)
def test_exists(store: ManifestStore, key: str, expected: bool) -> None:
    assert run(store.exists(key)) is expected


@pytest.mark.parametrize("key", ["v/c/00/0", "v/c/0/01", "v/c/²/0", "v/c/\u0660/0"])
def test_non_canonical_chunk_keys_do_not_exist(store: ManifestStore, key: str) -> None:
    assert run(store.exists(key)) is False
    assert run(store.get(key, PROTO)) is None


# -- listing ------------------------------------------------------------------------------------


def test_list_is_what_zarr_writes(
    store: ManifestStore, reference: MemoryStore, file_chunks: dict[str, bytes]
) -> None:
    keys = run(collect(store.list()))
    assert keys == run(collect(reference.list()))
    assert len(keys) == len(set(keys))
    chunk_keys = {k for k in keys if not k.endswith("zarr.json")}
    assert chunk_keys == set(file_chunks)  # exactly the chunks HDF5 allocated


@pytest.mark.parametrize(
    "prefix", ["", "v/", "v/c/", "v/c/0/", "g/", "g/h/", "g/h/u/c/", "s/", "zarr.json", "nope/"]
)
def test_list_prefix_is_what_zarr_lists(
    store: ManifestStore, reference: MemoryStore, prefix: str
) -> None:
    assert run(collect(store.list_prefix(prefix))) == run(collect(reference.list_prefix(prefix)))


@pytest.mark.parametrize(
    "prefix", ["", "v", "v/", "v/c", "v/c/0", "s", "s/c", "g", "g/", "g/h", "g/h/u/c", "nope"]
)
def test_list_dir_is_what_zarr_lists(
    store: ManifestStore, reference: MemoryStore, prefix: str
) -> None:
    assert run(collect(store.list_dir(prefix))) == run(collect(reference.list_dir(prefix)))


def test_is_empty(store: ManifestStore) -> None:
    assert not run(store.is_empty(""))
    assert not run(store.is_empty("g/h"))
    assert run(store.is_empty("nope"))


# -- writes are refused -------------------------------------------------------------------------


WRITES: dict[str, Callable[[ManifestStore], Any]] = {
    "set": lambda s: run(s.set("v/c/1/0", PROTO.buffer.from_bytes(b"x"))),
    "set new key": lambda s: run(s.set("new/zarr.json", PROTO.buffer.from_bytes(b"{}"))),
    "set_if_not_exists": lambda s: run(
        s.set_if_not_exists("v/c/1/0", PROTO.buffer.from_bytes(b"x"))
    ),
    "delete": lambda s: run(s.delete("v/c/0/0")),
    "zarr attrs": lambda s: zarr.open_group(s, mode="r").attrs.update({"a": 1}),
    "zarr setitem": lambda s: zarr.open_array(s, path="v", mode="r").__setitem__(
        (slice(None), slice(None)), 3
    ),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_writes_are_refused(
    store: ManifestStore, file_chunks: dict[str, bytes], write: str
) -> None:
    assert store.read_only
    assert not store.supports_writes
    assert not store.supports_deletes
    with pytest.raises(ReadOnlyError, match="read-only"):
        WRITES[write](store)
    assert fetch(store, "v/c/0/0") == file_chunks["v/c/0/0"]
    assert not run(store.exists("v/c/1/0"))


# -- inline chunks ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inline_store(store: ManifestStore) -> ManifestStore:
    """`v` with chunk (1, 1) (never written in the file) held in memory, and every file
    reference pointing at a bucket no registry knows."""
    v = store.group.arrays["v"]
    manifest = v.manifest.with_inline([(1, 1)], [INLINE_BLOCK])
    manifest = manifest.rename_paths("s3://no-such-bucket/cube.nc")
    return ManifestStore(ManifestGroup(arrays={"v": v.replace(manifest=manifest)}))


def test_inline_chunks_are_served_from_memory(inline_store: ManifestStore) -> None:
    assert run(inline_store.exists("v/c/1/1"))
    assert "v/c/1/1" in run(collect(inline_store.list_prefix("v/c/")))
    assert fetch(inline_store, "v/c/1/1") == INLINE_BLOCK
    array = zarr.open_array(inline_store, path="v", mode="r")
    np.testing.assert_array_equal(array[2:4, 4:8], np.full((2, 4), 7))
    np.testing.assert_array_equal(array[2:4, 0:4], np.full((2, 4), -9))  # still missing
    with pytest.raises(VcubeError, match="no-such-bucket"):
        run(inline_store.get("v/c/0/0", PROTO))  # a file chunk: fetched, so it fails here


def test_loaded_variables_become_inline_chunks() -> None:
    ds = xr.Dataset(
        {"k": ((), np.int16(3)), "lat": (("lat",), np.array([-10.0, 0.0, 10.0]))},
        attrs={"title": "in memory"},
    )
    store = ManifestStore.from_virtual_dataset(ds)
    assert run(collect(store.list())) == sorted(
        ["zarr.json", "k/zarr.json", "k/c", "lat/zarr.json", "lat/c/0"]
    )
    assert run(store.exists("k/c"))
    back = xr.open_zarr(store, zarr_format=3, consolidated=False).load()
    xr.testing.assert_identical(back, ds)


# -- a plain HDF5 file with deep groups ---------------------------------------------------------


def test_nested_hdf5_groups(tmp_path: Path) -> None:
    path = tmp_path / "deep.h5"
    data = np.arange(24, dtype="<u2").reshape(4, 6)
    with h5py.File(path, "w") as f:
        f.attrs["level"] = 0
        d = f.create_group("a/b/c").create_dataset("d", data=data, chunks=(2, 3))
        d.attrs["units"] = "m"
        f["a"].create_dataset("e", data=np.float32(2.5))
    store = HDFParser()(normalize_url(path))
    root = zarr.open_group(store, mode="r")
    np.testing.assert_array_equal(root["a/b/c/d"][...], data)
    assert root["a/b/c/d"].attrs["units"] == "m"
    assert root["a/e"][()] == np.float32(2.5)
    assert run(collect(store.list_dir("a"))) == ["b", "e", "zarr.json"]
    assert run(collect(store.list_dir("a/b/c/d/c"))) == ["0", "1"]
    assert run(collect(store.list_prefix("a/e/"))) == ["a/e/c", "a/e/zarr.json"]
    raw = path.read_bytes()
    with h5py.File(path, "r") as f:
        info = f["a/b/c/d"].id.get_chunk_info_by_coord((2, 3))
        offset, size = f["a/e"].id.get_offset(), f["a/e"].id.get_storage_size()
    assert fetch(store, "a/b/c/d/c/1/1") == raw[info.byte_offset : info.byte_offset + info.size]
    assert fetch(store, "a/e/c", SuffixByteRequest(2)) == raw[offset : offset + size][-2:]


def test_read_plain_equals_zarr(tmp_path: Path) -> None:
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("contiguous", data=np.arange(7, dtype=">i4"))
        sparse = f.create_dataset("sparse", shape=(5, 7), chunks=(2, 3), dtype="f8", fillvalue=-1)
        sparse[0:2, 0:3] = 1.5
        sparse[4, 6] = 2.5
        f.create_dataset("scalar", data=np.float32(3.25))
        f.create_dataset("compressed", data=np.arange(10.0), chunks=(5,), compression="gzip")
    store = HDFParser()(str(path))
    for name in ("contiguous", "sparse", "scalar"):
        plain = asyncio.run(store.read_plain(name))
        assert plain is not None, name
        np.testing.assert_array_equal(plain, zarr.open_array(store, path=name)[...], strict=True)
    assert asyncio.run(store.read_plain("compressed")) is None
