"""The chunk indexes of layout messages 4 and 5 (single chunk, implicit, fixed array, extensible
array, version 2 B-tree) read natively: against h5py's `chunk_iter`, the h5py walker, and the
values read back through the virtual dataset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import pytest
import xarray as xr
from h5py import h5d, h5f, h5p, h5s, h5t
from test_hdf5_native import assert_same_tree, h5py_walk, native_walk

import vcube
from vcube import HDFParser
from vcube.parsers.hdf5 import messages as msg
from vcube.parsers.hdf5.binary import Image, NativeUnsupported, local_image
from vcube.parsers.hdf5.chunk_index import ChunkIndex, read_chunk_index
from vcube.parsers.hdf5.objects import read_object_header, read_superblock
from vcube.registry import normalize_url

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

LIBVERS: dict[str, Any] = {"latest": "latest", "v110": ("v110", "latest")}


def fixed_array(f: h5py.Group) -> None:
    data = np.arange(40 * 200, dtype="f4").reshape(40, 200)
    f.create_dataset("plain", data=data, chunks=(1, 4))  # 2000 chunks: paged data block
    f.create_dataset("deflated", data=data, chunks=(1, 4), compression="gzip", shuffle=True)
    sparse = f.create_dataset(
        "sparse", shape=(40, 200), chunks=(1, 4), dtype="i2", fillvalue=-1, compression="gzip"
    )
    sparse[5:7, 100:180] = 3
    sparse[39, 199] = 4
    few = f.create_dataset("few", shape=(10, 20), chunks=(3, 7), dtype="f8", fillvalue=np.nan)
    few[2:5, :] = np.arange(60.0).reshape(3, 20)
    # A finite maximum larger than the extent: chunks numbered over the largest grid.
    grown = f.create_dataset("grown", shape=(10, 20), maxshape=(30, 50), chunks=(3, 7), dtype="f4")
    grown[...] = np.arange(200.0, dtype="f4").reshape(10, 20)


def extensible_array(f: h5py.Group) -> None:
    big = f.create_dataset("big", shape=(0,), maxshape=(None,), chunks=(2,), dtype="i4")
    big.resize((10000,))  # 5000 chunks: super blocks and their data blocks
    big[:] = np.arange(10000, dtype="i4")
    rows = f.create_dataset(
        "rows", (0, 3), maxshape=(None, 3), chunks=(2, 3), dtype="i4", compression="gzip"
    )
    rows.resize((9000, 3))
    rows[:] = np.arange(27000, dtype="i4").reshape(9000, 3)
    sparse = f.create_dataset(
        "sparse", (10000,), maxshape=(None,), chunks=(2,), dtype="f4", fillvalue=7
    )
    sparse[100:110] = 1
    sparse[5000:5020] = 2
    sparse[9999] = 3
    never = f.create_dataset("never", (10,), maxshape=(None,), chunks=(4,), dtype="u2")
    del never  # no chunk written: no index allocated


def extensible_array_other_axis(f: h5py.Group) -> None:
    """The unlimited axis is not the first: the array numbers chunks with it moved first."""
    wide = f.create_dataset("wide", (5, 100), maxshape=(8, None), chunks=(2, 3), dtype="f4")
    wide[...] = np.arange(500, dtype="f4").reshape(5, 100)
    cube = f.create_dataset(
        "cube", (4, 5, 60), maxshape=(4, 9, None), chunks=(3, 2, 7), dtype="u1", compression="gzip"
    )
    cube[...] = (np.arange(1200) % 251).astype("u1").reshape(4, 5, 60)
    cube[:, :, 30:40] = 0


def btree_v2(f: h5py.Group) -> None:
    grid = f.create_dataset("grid", (200, 300), maxshape=(None, None), chunks=(4, 5), dtype="f8")
    grid[...] = np.arange(60000.0).reshape(200, 300)  # 3000 chunks: a tree of depth 1 or more
    part = f.create_dataset(
        "part",
        (200, 300),
        maxshape=(None, None),
        chunks=(4, 5),
        dtype="f8",
        compression="gzip",
        fillvalue=-9.0,
    )
    part[:100, :150] = np.arange(15000.0).reshape(100, 150)
    part[150:152, 290:] = 1.5


def single_chunk(f: h5py.Group) -> None:
    data = np.arange(100.0).reshape(10, 10)
    f.create_dataset("plain", data=data, chunks=(10, 10))
    f.create_dataset("deflated", data=data, chunks=(10, 10), compression="gzip")
    f.create_dataset("unwritten", shape=(6,), chunks=(6,), dtype="i8", fillvalue=5)


def implicit(f: h5py.Group) -> None:
    for name, maxshape in (("early", (10, 10)), ("larger", (20, 14))):
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_chunk((3, 4))
        dcpl.set_alloc_time(h5d.ALLOC_TIME_EARLY)
        space = h5s.create_simple((10, 10), maxshape)
        h5d.create(f.id, name.encode(), h5t.NATIVE_INT16, space, dcpl=dcpl)
        f[name][:4] = np.arange(40, dtype="i2").reshape(4, 10)


MAKERS: dict[str, Callable[[h5py.Group], None]] = {
    "fixed_array": fixed_array,
    "extensible_array": extensible_array,
    "extensible_array_other_axis": extensible_array_other_axis,
    "btree_v2": btree_v2,
    "single_chunk": single_chunk,
    "implicit": implicit,
}
INDEX_TYPES = {
    "fixed_array": {3},
    "extensible_array": {4},
    "extensible_array_other_axis": {4},
    "btree_v2": {5},
    "single_chunk": {1},
    "implicit": {2},
}


def native_index(image: Image, ds: h5py.Dataset) -> tuple[msg.Layout, ChunkIndex]:
    """A dataset's layout and chunk index as the native reader decodes them."""
    read_superblock(image, ds.file.userblock_size)  # the file's address and length sizes
    header = read_object_header(image, h5py.h5o.get_info(ds.id).addr)
    layout_message = header.find(msg.LAYOUT)
    space = header.find(msg.DATASPACE)
    assert layout_message is not None
    assert space is not None
    layout = msg.layout(layout_message.body, image)
    shape, maxshape = msg.dataspace(space.body, image)
    assert shape is not None
    return layout, read_chunk_index(image, layout, shape, maxshape)


def h5py_index(ds: h5py.Dataset) -> ChunkIndex:
    """`chunk_iter`'s chunks, in C order."""
    infos: list[Any] = []
    ds.id.chunk_iter(infos.append)
    starts = np.array([i.chunk_offset for i in infos], dtype=np.int64).reshape(len(infos), ds.ndim)
    order = np.lexsort(starts.T[::-1])
    return ChunkIndex(
        starts=starts[order],
        masks=np.array([i.filter_mask for i in infos], dtype=np.uint32)[order],
        offsets=np.array([i.byte_offset for i in infos], dtype=np.uint64)[order],
        lengths=np.array([i.size for i in infos], dtype=np.uint64)[order],
    )


def assert_same_index(index: ChunkIndex, expected: ChunkIndex) -> None:
    for field in ("starts", "masks", "offsets", "lengths"):
        got, want = getattr(index, field), getattr(expected, field)
        assert got.dtype == want.dtype, field
        np.testing.assert_array_equal(got, want, err_msg=field)


def assert_chunks_hold_the_values(image: Image, ds: h5py.Dataset, index: ChunkIndex) -> None:
    """Each chunk's bytes (unfiltered) are the values at its place."""
    values, chunks = ds[...], ds.chunks
    for start, offset, length in zip(index.starts, index.offsets, index.lengths, strict=True):
        raw = image.read_absolute(int(offset), int(length))
        chunk = np.frombuffer(raw, dtype=ds.dtype).reshape(chunks)
        part = values[tuple(slice(s, s + c) for s, c in zip(start, chunks, strict=True))]
        np.testing.assert_array_equal(chunk[tuple(slice(0, n) for n in part.shape)], part)


def write(path: Path, case: str, libver: str) -> None:
    with h5py.File(path, "w", libver=LIBVERS[libver]) as f:
        MAKERS[case](f)


def read_back(path: Path) -> xr.Dataset:
    vds = vcube.open_virtual_dataset(str(path))
    store = vcube.ManifestStore.from_virtual_dataset(vds)
    return xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None).load()


@pytest.mark.parametrize("libver", sorted(LIBVERS))
@pytest.mark.parametrize("case", sorted(MAKERS))
def test_chunk_index_as_h5py_lists_it(case: str, libver: str, tmp_path: Path) -> None:
    path = tmp_path / f"{case}.h5"
    write(path, case, libver)
    with h5py.File(path, "r") as f, local_image(str(path)) as image:
        for name, ds in f.items():
            layout, index = native_index(image, ds)
            assert layout.version in (4, 5), name
            assert layout.index in INDEX_TYPES[case], name
            assert layout.element_size == ds.dtype.itemsize
            if case == "extensible_array_other_axis":
                # HDF5's chunk iteration misplaces these chunks (its coordinates advance in
                # the dataset's order over the array's): the chunks' bytes are the witness.
                assert len(index.offsets) == len(h5py_index(ds).offsets)
                if not ds.compression:
                    assert_chunks_hold_the_values(image, ds, index)
                continue
            assert_same_index(index, h5py_index(ds))


@pytest.mark.parametrize("libver", sorted(LIBVERS))
@pytest.mark.parametrize("case", sorted(MAKERS))
def test_native_walk_and_values(case: str, libver: str, tmp_path: Path) -> None:
    path = tmp_path / f"{case}.h5"
    write(path, case, libver)
    parser, url = HDFParser(), normalize_url(path)
    native = native_walk(parser, url)
    if case != "extensible_array_other_axis":  # (h5py lists those chunks misplaced, above)
        assert_same_tree(native, h5py_walk(parser, url))
    decoded = read_back(path)
    with h5py.File(path, "r") as f:
        assert sorted(decoded.data_vars) == sorted(f)
        for name, ds in f.items():
            expected = ds[...]
            assert decoded[name].dtype == expected.dtype, name
            np.testing.assert_array_equal(decoded[name].values, expected, err_msg=name)


def test_paged_extensible_array_data_blocks(tmp_path: Path) -> None:
    """Past 131060 chunks the extensible array's data blocks are paged, their super blocks
    telling which pages were written."""
    path = tmp_path / "paged.h5"
    with h5py.File(path, "w", libver="latest") as f:
        ds = f.create_dataset("x", (140000,), maxshape=(None,), chunks=(1,), dtype="u1")
        ds[:70000] = 1
        ds[100000:135000] = 2  # pages of the first paged data blocks never written
        ds[139999] = 3
    with h5py.File(path, "r") as f, local_image(str(path)) as image:
        _, index = native_index(image, f["x"])
        assert_same_index(index, h5py_index(f["x"]))
    assert len(index.offsets) == 105001


@pytest.mark.parametrize("sizes", [(4, 4), (8, 8)])
def test_address_sizes_and_a_user_block(sizes: tuple[int, int], tmp_path: Path) -> None:
    path = tmp_path / "small.h5"
    fcpl = h5p.create(h5p.FILE_CREATE)
    fcpl.set_sizes(*sizes)
    fcpl.set_userblock(512)
    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5f.LIBVER_LATEST, h5f.LIBVER_LATEST)
    # (HDF5 does not reopen unlimited axes it wrote with 4-byte lengths)
    makers = (fixed_array, single_chunk, implicit)
    if sizes[1] == 8:
        makers += (extensible_array, btree_v2)
    with h5py.File(h5f.create(bytes(path), h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl)) as f:
        for make in makers:
            group = f.create_group(make.__name__)
            make(group)
    with h5py.File(path, "r") as f, local_image(str(path)) as image:
        for make in makers:
            for ds in f[make.__name__].values():
                assert_same_index(native_index(image, ds)[1], h5py_index(ds))
    parser, url = HDFParser(), normalize_url(path)
    assert_same_tree(native_walk(parser, url), h5py_walk(parser, url))


@pytest.mark.parametrize(("case", "signature"), [("fixed_array", b"FAHD"), ("btree_v2", b"BTHD")])
def test_corrupt_index_is_left_to_h5py(case: str, signature: bytes, tmp_path: Path) -> None:
    path = tmp_path / f"{case}.h5"
    write(path, case, "latest")
    data = path.read_bytes()
    at = data.index(signature)
    path.write_bytes(data[:at] + b"XXXX" + data[at + 4 :])
    with pytest.raises(NativeUnsupported):
        native_walk(HDFParser(), normalize_url(path))


def test_extensible_array_blocks_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "ea.h5"
    write(path, "extensible_array", "latest")
    data = path.read_bytes()
    at = data.index(b"EADB")
    path.write_bytes(data[:at] + b"EADC" + data[at + 4 :])
    with pytest.raises(NativeUnsupported, match="EADB"):
        native_walk(HDFParser(), normalize_url(path))
