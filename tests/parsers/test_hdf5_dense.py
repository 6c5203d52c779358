"""The native reader's dense storage: v2 B-trees and fractal heaps of files h5py and netCDF4 write.

Each test locates a group's Link Info or an object's Attribute Info message in its object header
(decoded minimally here), then checks that every record of the name index leads through the
fractal heap to a message naming an expected link or attribute exactly once, in hash order, and
that the creation-order index gives them in creation order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h5py
import netCDF4
import numpy as np
import pytest

from vcube.parsers.hdf5.binary import (
    UNDEFINED,
    Cursor,
    Image,
    NativeUnsupported,
    local_image,
    lookup3,
)
from vcube.parsers.hdf5.dense import FractalHeap, btree_records

if TYPE_CHECKING:
    from pathlib import Path

LINK_INFO, ATTRIBUTE_INFO, CONTINUATION = 0x02, 0x15, 0x10
LINK_NAMES, LINK_ORDER, ATTRIBUTE_NAMES, ATTRIBUTE_ORDER = 5, 6, 8, 9


def image_of(data: bytes) -> Image:
    """An `Image` of bytes in memory (a copy of a file, altered)."""
    return Image(lambda start, size: data[start : start + size], len(data))


NO_FILE = image_of(b"")  # for cursors on messages, which read no addresses


# --------------------------------------------------------------------------------------------
# A minimal reader of version-2 object headers, for the test only


def header_messages(image: Image, address: int) -> list[tuple[int, bytes]]:
    """(type, body) of every message of the v2 object header at `address`, continuations too."""
    cur = image.cursor(address, 6)
    cur.signature(b"OHDR")
    assert cur.u8() == 2
    flags = cur.u8()
    start = address + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
    width = 1 << (flags & 3)
    chunks = [(start + width, image.cursor(start, width).uint(width))]
    prefix = 6 if flags & 0x04 else 4  # messages carry a creation order if tracked
    messages = []
    while chunks:
        chunk_start, size = chunks.pop(0)
        cur = image.cursor(chunk_start, size)
        while len(cur.buf) - cur.pos >= prefix:  # what is left may be a gap
            kind, length = cur.u8(), cur.u16()
            cur.skip(prefix - 3)
            body = cur.take(length)
            if kind == CONTINUATION:
                ref = Cursor(body, image)
                block, block_size = ref.address(), ref.length()
                image.cursor(block, 4).signature(b"OCHK")
                chunks.append((block + 4, block_size - 8))  # past signature, before checksum
            messages.append((kind, body))
    return messages


@dataclass(frozen=True)
class Dense:
    heap: int
    names: int
    order: int


def dense_info(image: Image, address: int, kind: int) -> Dense:
    """The heap and B-tree addresses of a Link Info or Attribute Info message."""
    (body,) = [body for k, body in header_messages(image, address) if k == kind]
    cur = Cursor(body, image)
    assert cur.u8() == 0
    flags = cur.u8()
    if flags & 1:  # the maximum creation index: 8 bytes for links, 2 for attributes
        cur.skip(8 if kind == LINK_INFO else 2)
    heap, names = cur.address(), cur.address()
    return Dense(heap, names, cur.address() if flags & 2 else UNDEFINED)


def link_name(message: bytes) -> str:
    """The name in a link message (version 1)."""
    cur = Cursor(message, NO_FILE)
    assert cur.u8() == 1
    flags = cur.u8()
    cur.skip((1 if flags & 0x08 else 0) + (8 if flags & 0x04 else 0) + (1 if flags & 0x10 else 0))
    size = cur.uint(1 << (flags & 3))
    return cur.take(size).decode()


def attribute_name(message: bytes) -> str:
    """The name in an attribute message (versions 1 to 3)."""
    cur = Cursor(message, NO_FILE)
    version = cur.u8()
    assert version in (1, 2, 3)
    cur.skip(1)
    size = cur.u16()
    cur.skip(4 + (version == 3))  # datatype and dataspace sizes, character set
    return cur.take(size).rstrip(b"\0").decode()


def btree_depth(image: Image, address: int) -> int:
    return image.cursor(address + 12, 2).u16()


def u32(record: bytes, at: int) -> int:
    return int.from_bytes(record[at : at + 4], "little")


# --------------------------------------------------------------------------------------------
# Links


def link_names(n: int) -> list[str]:
    # From 2 to 64 bytes, some non-ASCII, and one of 300 (its length needs 2 bytes).
    names = [f"{'température' if i % 7 == 0 else 'v'}{i}{'_x' * (i % 25)}" for i in range(n)]
    if n > 101:
        names[101] = "long" * 75
    return names


def write_links(path: Path, n: int, libver: str | None) -> None:
    with h5py.File(path, "w", track_order=True, libver=libver) as f:
        target = f.create_dataset("target", data=np.arange(3))
        g = f.create_group("g", track_order=True)
        for i, name in enumerate(link_names(n)):
            if i % 50 == 0:
                g.create_group(name)
            elif i % 3 == 0:
                g[name] = target  # a hard link
            else:
                g[name] = h5py.SoftLink(f"/target/{i}")


@pytest.mark.parametrize("libver", [None, "latest"])
@pytest.mark.parametrize(("n", "depth"), [(10, 0), (200, 1), (3000, 2)])
def test_links(tmp_path: Path, n: int, depth: int, libver: str | None) -> None:
    path = tmp_path / "links.h5"
    write_links(path, n, libver)
    with h5py.File(path, "r") as f:
        address = h5py.h5o.get_info(f["g"].id).addr
    with local_image(str(path)) as image:  # as the parser reads local files
        check_links(image, address, n, depth)


def check_links(image: Image, address: int, n: int, depth: int) -> None:
    info = dense_info(image, address, LINK_INFO)
    heap = FractalHeap(image, info.heap)
    expected = link_names(n)
    # 10 links fit in a root direct block; more need a root indirect block.
    assert (heap.root_rows == 0) == (n == 10)

    assert btree_depth(image, info.names) == depth
    records = btree_records(image, info.names, LINK_NAMES)
    assert [len(r) for r in records] == [4 + heap.id_size] * n
    hashes = [u32(r, 0) for r in records]
    assert hashes == sorted(hashes)  # the tree walked in order
    messages = [heap.get(r[4:]) for r in records]
    names = [link_name(m) for m in messages]
    assert sorted(names) == sorted(expected)
    for name, message in zip(names, messages, strict=True):
        i = expected.index(name)
        if i % 50 and i % 3:  # a soft link ends with its target path
            assert message.endswith(f"/target/{i}".encode())

    order = btree_records(image, info.order, LINK_ORDER)
    assert [int.from_bytes(r[:8], "little") for r in order] == list(range(n))
    assert [link_name(heap.get(r[8:])) for r in order] == expected


def test_netcdf4_variables(tmp_path: Path) -> None:
    """A NetCDF4 root group with many variables keeps its links dense, in creation order."""
    path = tmp_path / "many.nc"
    names = [f"var_{i:03d}" for i in range(120)]
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("x", 4)
        for name in names:
            ds.createVariable(name, "f4", ("x",))
    with h5py.File(path, "r") as f:
        address = h5py.h5o.get_info(f.id).addr
    image = image_of(path.read_bytes())
    info = dense_info(image, address, LINK_INFO)
    heap = FractalHeap(image, info.heap)
    found = [link_name(heap.get(r[8:])) for r in btree_records(image, info.order, LINK_ORDER)]
    assert found == ["x", *names]
    by_name = [link_name(heap.get(r[4:])) for r in btree_records(image, info.names, LINK_NAMES)]
    assert sorted(by_name) == sorted(found)


# --------------------------------------------------------------------------------------------
# Attributes


def attribute_values(n: int) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for i in range(n):
        name = f"attribute_{i}{'é' * (i % 3)}"
        if i % 4 == 0:
            values[name] = np.arange(i % 480, dtype="<f8") + 0.5  # up to 3.8 KB
        elif i % 8 == 1:
            values[name] = np.int32(i)
        elif i % 4 == 1:
            values[name] = np.full(i % 480, i, dtype="<i8")
        elif i % 4 == 2:
            values[name] = f"text {i} " * (i % 20)  # variable-length: in the global heap
        else:
            values[name] = np.bytes_(f"text {i} " * (i % 400))  # fixed-length, up to 3.6 KB
    return values


def write_attributes(path: Path, values: dict[str, Any], libver: str | None) -> int:
    """A dataset holding `values` as attributes, all in dense storage; its header's address."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_attr_phase_change(0, 0)  # dense storage from the first attribute on
    with h5py.File(path, "w", libver=libver) as f:
        d = f.create_dataset("d", data=np.arange(3), track_order=True, dcpl=dcpl)
        for name, value in values.items():
            d.attrs[name] = value
        return int(h5py.h5o.get_info(d.id).addr)


@pytest.mark.parametrize("libver", [None, "latest"])
@pytest.mark.parametrize("n", [5, 40, 500])
def test_attributes(tmp_path: Path, n: int, libver: str | None) -> None:
    path = tmp_path / "attributes.h5"
    values = attribute_values(n)
    address = write_attributes(path, values, libver)
    image = image_of(path.read_bytes())
    info = dense_info(image, address, ATTRIBUTE_INFO)
    heap = FractalHeap(image, info.heap)

    records = btree_records(image, info.names, ATTRIBUTE_NAMES)
    assert [len(r) for r in records] == [17] * n
    hashes = [u32(r, 13) for r in records]
    assert hashes == sorted(hashes)
    messages = {attribute_name(m): m for m in (heap.get(r[:8]) for r in records)}
    assert sorted(messages) == sorted(values)
    for name, value in values.items():
        if isinstance(value, np.ndarray | np.generic):  # the raw values end the message
            assert messages[name].endswith(value.tobytes())

    order = btree_records(image, info.order, ATTRIBUTE_ORDER)
    assert [u32(r, 9) for r in order] == list(range(n))
    assert [attribute_name(heap.get(r[:8])) for r in order] == list(values)
    if n == 500:  # enough objects for indirect blocks nested in the root one
        assert heap.root_rows > heap.max_direct_rows


def test_huge_attribute_is_unsupported(tmp_path: Path) -> None:
    """An attribute larger than the heap's managed objects is 'huge': left to h5py."""
    path = tmp_path / "huge.h5"
    address = write_attributes(path, {"small": np.int8(1), "big": np.arange(40_000.0)}, None)
    image = image_of(path.read_bytes())
    info = dense_info(image, address, ATTRIBUTE_INFO)
    heap = FractalHeap(image, info.heap)
    ids = {u32(r, 9): r[:8] for r in btree_records(image, info.order, ATTRIBUTE_ORDER)}
    assert attribute_name(heap.get(ids[0])) == "small"
    with pytest.raises(NativeUnsupported, match="huge"):
        heap.get(ids[1])


# --------------------------------------------------------------------------------------------
# Tiny objects, kept inside their heap IDs


def reseal_heap_header(data: bytearray, address: int) -> None:
    """Store the checksum of a fractal heap header altered in place (8-byte sizes)."""
    size = 22 + 12 * 8 + 3 * 8
    data[address + size : address + size + 4] = lookup3(
        bytes(data[address : address + size])
    ).to_bytes(4, "little")


def test_tiny_objects(tmp_path: Path) -> None:
    path = tmp_path / "links.h5"
    write_links(path, 10, None)
    with h5py.File(path, "r") as f:
        address = h5py.h5o.get_info(f["g"].id).addr
    data = path.read_bytes()
    info = dense_info(image_of(data), address, LINK_INFO)

    heap = FractalHeap(image_of(data), info.heap)
    assert heap.get(bytes([0x20 | 3, *b"abcd", 0, 0])) == b"abcd"
    with pytest.raises(NativeUnsupported):
        heap.get(bytes([0x20 | 15, *b"abc"]))  # longer than the ID

    # A heap whose IDs are longer than 18 bytes gives tiny objects a two-byte length.
    altered = bytearray(data)
    altered[info.heap + 5 : info.heap + 7] = (40).to_bytes(2, "little")
    reseal_heap_header(altered, info.heap)
    heap = FractalHeap(image_of(bytes(altered)), info.heap)
    assert heap.get(bytes([0x20, 19, *range(20), 0, 0])) == bytes(range(20))


# --------------------------------------------------------------------------------------------
# What is not decoded raises NativeUnsupported


@pytest.fixture
def links_file(tmp_path: Path) -> tuple[bytes, Dense]:
    path = tmp_path / "links.h5"
    write_links(path, 200, None)
    with h5py.File(path, "r") as f:
        address = h5py.h5o.get_info(f["g"].id).addr
    data = path.read_bytes()
    return data, dense_info(image_of(data), address, LINK_INFO)


def read_links(image: Image, info: Dense) -> list[bytes]:
    heap = FractalHeap(image, info.heap)
    return [heap.get(record[4:]) for record in btree_records(image, info.names)]


@pytest.mark.parametrize("signature", [b"BTHD", b"BTIN", b"BTLF", b"FRHP", b"FHIB", b"FHDB"])
def test_corrupt_signature(links_file: tuple[bytes, Dense], signature: bytes) -> None:
    data, info = links_file
    assert len(read_links(image_of(data), info)) == 200
    assert signature in data
    altered = data.replace(signature, b"XXXX")  # every header, node or block of that kind
    # (the checksum, which covers the signature, is what notices the damage first)
    with pytest.raises(NativeUnsupported, match=r"checksum|signature"):
        read_links(image_of(altered), info)


def test_unsupported(links_file: tuple[bytes, Dense]) -> None:
    data, info = links_file
    with pytest.raises(NativeUnsupported, match="type 5"):
        btree_records(image_of(data), info.names, ATTRIBUTE_NAMES)
    with pytest.raises(NativeUnsupported, match="past the end"):
        btree_records(image_of(data[: info.names + 20]), info.names)

    filtered = bytearray(data)
    filtered[info.heap + 7 : info.heap + 9] = (12).to_bytes(2, "little")
    with pytest.raises(NativeUnsupported, match="checksum"):
        FractalHeap(image_of(bytes(filtered)), info.heap)
    reseal_heap_header(filtered, info.heap)
    with pytest.raises(NativeUnsupported, match="filtered"):
        FractalHeap(image_of(bytes(filtered)), info.heap)

    heap = FractalHeap(image_of(data), info.heap)
    with pytest.raises(NativeUnsupported, match="past the heap"):
        heap.get(bytes([0, *b"\xff" * heap.offset_size, *b"\x01" * heap.length_size]))
    with pytest.raises(NativeUnsupported, match="unknown version"):
        heap.get(bytes([0x40, 0, 0, 0, 0, 0, 0]))
