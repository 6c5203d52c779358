"""Decoders of the object header messages a variable is made of: dataspace, datatype, fill value,
data layout, filter pipeline, attributes and links (HDF5 file format, section IV.A.2)."""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from vcube.parsers.hdf5.binary import UNDEFINED, Cursor, Image, NativeUnsupported

__all__ = [
    "Attribute",
    "DataType",
    "DenseInfo",
    "Layout",
    "Link",
    "attribute",
    "attribute_name",
    "cached_dataspace",
    "cached_datatype",
    "cached_filters",
    "dataspace",
    "datatype",
    "dense_info",
    "fill_value",
    "filters",
    "layout",
    "link",
]

DATASPACE: Final = 0x01
LINK_INFO: Final = 0x02
DATATYPE: Final = 0x03
OLD_FILL_VALUE: Final = 0x04
FILL_VALUE: Final = 0x05
LINK: Final = 0x06
EXTERNAL_FILES: Final = 0x07
LAYOUT: Final = 0x08
FILTERS: Final = 0x0B
ATTRIBUTE: Final = 0x0C
SYMBOL_TABLE: Final = 0x11
ATTRIBUTE_INFO: Final = 0x15

# Names HDF5 gives its predefined filters, which version 2 pipelines do not store.
FILTER_NAMES: Final = {
    1: "deflate",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
}
_STRING, _VLEN_STRING, _NUMBER, _REFERENCE, _VLEN = "S", "vlen-str", "number", "ref", "vlen"
NULLTERM, NULLPAD, SPACEPAD = 0, 1, 2
# A float's bit offset, precision, exponent location and size, mantissa location and size and
# exponent bias, as IEEE 754 has them; and its class bits beyond the byte order (the sign's
# position, an implied mantissa bit). Anything else is left to h5py.
_FLOAT_FIELDS = struct.Struct("<HHBBBBI")
IEEE_FLOATS: Final = {
    2: (0, 16, 10, 5, 0, 10, 15),
    4: (0, 32, 23, 8, 0, 23, 127),
    8: (0, 64, 52, 11, 0, 52, 1023),
}
_IEEE_BITS: Final = {2: 15 << 8 | 0x20, 4: 31 << 8 | 0x20, 8: 63 << 8 | 0x20}


@dataclass(frozen=True, slots=True)
class DataType:
    """An HDF5 datatype: `dtype` as h5py maps it (complex for an `r`/`i` compound), and what kind
    of values it holds: `number`, `S` (fixed-length string), `vlen-str`, `ref` or `vlen`."""

    kind: str
    dtype: np.dtype[Any]
    base: DataType | None = None  # the element type of a variable-length sequence
    fields: tuple[tuple[bytes, int, DataType], ...] = ()  # a compound's (name, offset, type)
    padding: int = NULLPAD  # a fixed-length string's: NULLTERM, NULLPAD or SPACEPAD

    def strings(self, data: bytes, count: int) -> np.ndarray[Any, Any]:
        """`count` fixed-length strings as h5py reads them: converted to its null-padded type,
        which ends a null-terminated string at its first null and strips a space-padded one."""
        size = self.dtype.itemsize
        items = [data[i * size : (i + 1) * size] for i in range(count)]
        if self.padding == NULLTERM:
            items = [item.split(b"\0", 1)[0] for item in items]
        elif self.padding == SPACEPAD:
            items = [item.rstrip(b" ") for item in items]
        return np.array(items, dtype=self.dtype)


def dataspace(body: bytes, image: Image) -> tuple[tuple[int, ...] | None, tuple[int | None, ...]]:
    """Shape (None for a null dataspace) and maximum shape (None where unlimited)."""
    c = Cursor(body, image)
    version, ndim, flags = c.u8(), c.u8(), c.u8()
    if version == 1:
        c.skip(5)
        kind = 1 if ndim else 0
    elif version == 2:
        kind = c.u8()
    else:
        raise NativeUnsupported(f"dataspace version {version}")
    if kind == 2:
        return None, ()
    shape = tuple(c.length() for _ in range(ndim))
    if not flags & 1:
        return shape, shape
    unlimited = (1 << (8 * image.length_size)) - 1
    maxshape = tuple(None if n == unlimited else n for n in (c.length() for _ in range(ndim)))
    return shape, maxshape


def datatype(c: Cursor) -> DataType:
    """The datatype at the cursor (which is left after it)."""
    head = c.u8()
    cls, version = head & 0x0F, head >> 4
    bits = c.uint(3)
    size = c.u32()
    order = ">" if bits & 1 else "<"
    if cls == 0:  # fixed-point
        offset, precision = c.u16(), c.u16()
        if size not in (1, 2, 4, 8) or bits & 0x06 or (offset, precision) != (0, 8 * size):
            raise NativeUnsupported(f"a {size}-byte integer of {precision} bits at {offset}")
        return DataType(_NUMBER, np.dtype(f"{order}{'i' if bits & 0x08 else 'u'}{size}"))
    if cls == 1:  # floating point
        fields = c.unpack(_FLOAT_FIELDS)
        if fields != IEEE_FLOATS.get(size) or bits & ~0x01 != _IEEE_BITS.get(size):
            raise NativeUnsupported(f"a {size}-byte float that is not IEEE 754")
        return DataType(_NUMBER, np.dtype(f"{order}f{size}"))
    if cls == 3:
        return DataType(_STRING, np.dtype(f"S{size}"), padding=bits & 0x0F)
    if cls == 6:
        return _compound(c, version, bits & 0xFFFF, size)
    if cls == 7 and bits & 0x0F == 0 and version < 4:
        return DataType(_REFERENCE, np.dtype("<u8" if size == 8 else "<u4"))
    if cls == 9:
        base = datatype(c)
        if bits & 0x0F == 1:
            return DataType(_VLEN_STRING, np.dtype(object))
        return DataType(_VLEN, np.dtype(object), base)
    raise NativeUnsupported(f"datatype class {cls}")


def _compound(c: Cursor, version: int, members: int, size: int) -> DataType:
    """A compound: complex when it is two floats `r` and `i` (as h5py reads it), else its
    fields, for the few compound attributes HDF5 itself writes (REFERENCE_LIST)."""
    fields = []
    for _ in range(members):
        name_start = c.pos
        name = c.cstring()
        if version < 3:
            c.align(8, name_start)
            offset = c.u32()
            if version == 1:
                c.skip(28)  # dimensionality, reserved, permutation, dimension sizes
        else:
            offset = c.uint(max(1, (size.bit_length() + 7) // 8))
        fields.append((name, offset, datatype(c)))
    parts = {member.dtype for _, _, member in fields}
    if [name for name, _, _ in fields] == [b"r", b"i"] and len(parts) == 1:
        part = parts.pop()
        if part.kind == "f" and fields[1][1] == part.itemsize and size == 2 * part.itemsize:
            return DataType(_NUMBER, np.dtype(f"{part.str[0]}c{size}"))
    return DataType("compound", np.dtype(f"V{size}"), fields=tuple(fields))


def fill_value(body: bytes, image: Image) -> bytes | None:
    """The fill value's bytes when the file defines one, None for HDF5's default (zeros)."""
    c = Cursor(body, image)
    version = c.u8()
    if version in (1, 2):
        c.skip(2)
        defined = c.u8()
        if defined:
            size = c.u32()
            return c.take(size) if size else None
        raise NativeUnsupported("an undefined fill value")
    if version == 3:
        flags = c.u8()
        if flags & 0x10:
            raise NativeUnsupported("an undefined fill value")
        if flags & 0x20:
            return c.take(c.u32())
        return None
    raise NativeUnsupported(f"fill value message version {version}")


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a dataset's bytes are: `compact` (inline `data`), `contiguous` (`address`, `size`)
    or `chunked` (chunks of `chunks`, `element_size` bytes per element, found through the chunk
    index at `address`).

    A chunked layout also says which `index` it uses (0: version 1 B-tree, the only one of
    message version 3; then 1: single chunk, 2: implicit, 3: fixed array, 4: extensible array,
    5: version 2 B-tree), that index's creation parameters `index_params` (fixed array: page
    bits; extensible array: element bits, index block elements, super block minimum data block
    pointers, data block minimum elements, page bits; version 2 B-tree: node size, split and
    merge percentages), its `flags` (1: partial edge chunks unfiltered, 2: a filtered single
    chunk) and, for a filtered single chunk, its stored size and filter mask.
    """

    kind: str
    address: int = UNDEFINED
    size: int = 0
    chunks: tuple[int, ...] = ()
    data: bytes = b""
    version: int = 3  # of the message: 3, 4 or 5
    flags: int = 0
    index: int = 0
    element_size: int = 0
    index_params: tuple[int, ...] = ()
    filtered_size: int = 0
    filter_mask: int = 0


# Bytes of the creation parameters of each version 4 chunk index (single chunk and implicit
# have none): fixed array, extensible array, version 2 B-tree (a 4-byte node size, then two).
_INDEX_PARAMS: Final = {1: (), 2: (), 3: (1,), 4: (1, 1, 1, 1, 1), 5: (4, 1, 1)}


def layout(body: bytes, image: Image) -> Layout:
    c = Cursor(body, image)
    version = c.u8()
    if version not in (3, 4, 5):
        raise NativeUnsupported(f"layout message version {version}")
    kind = c.u8()
    if kind == 0:
        return Layout("compact", data=c.take(c.u16()), version=version)
    if kind == 1:
        return Layout("contiguous", address=c.address(), size=c.length(), version=version)
    if kind == 2 and version == 3:
        rank = c.u8()
        address = c.address()
        dims = tuple(c.u32() for _ in range(rank))
        if not all(dims):
            raise NativeUnsupported(f"chunk dimensions {dims}")
        return Layout("chunked", address=address, chunks=dims[:-1], element_size=dims[-1])
    if kind == 2:
        return _chunked_v4(c, version)
    raise NativeUnsupported(f"layout class {kind} (message version {version})")


def _chunked_v4(c: Cursor, version: int) -> Layout:
    """A version 4 or 5 chunked layout, after its class: as in version 3, the last of the
    chunk's dimensions is the size of an element. (Version 5, of HDF5 2.0, is alike: only the
    width of filtered chunk sizes in the index differs, which the index's headers tell.)"""
    flags, rank, width = c.u8(), c.u8(), c.u8()
    if flags & ~0x03 or not 2 <= rank <= 33 or not 1 <= width <= 8:
        raise NativeUnsupported(f"a chunked layout of flags {flags}, rank {rank}")
    dims = tuple(c.uint(width) for _ in range(rank))
    index = c.u8()
    if index not in _INDEX_PARAMS or not all(dims):
        raise NativeUnsupported(f"chunk index type {index} of chunks {dims}")
    filtered_size = filter_mask = 0
    if index == 1 and flags & 0x02:
        filtered_size, filter_mask = c.length(), c.u32()
    params = tuple(c.uint(size) for size in _INDEX_PARAMS[index])
    return Layout(
        "chunked",
        address=c.address(),
        chunks=dims[:-1],
        version=version,
        flags=flags,
        index=index,
        element_size=dims[-1],
        index_params=params,
        filtered_size=filtered_size,
        filter_mask=filter_mask,
    )


def filters(body: bytes, image: Image) -> tuple[tuple[int, int, tuple[int, ...], bytes], ...]:
    """The pipeline as `h5p.PropDCID.get_filter` lists it: (id, flags, client data, name)."""
    c = Cursor(body, image)
    version, count = c.u8(), c.u8()
    if version == 1:
        c.skip(6)
    elif version != 2:
        raise NativeUnsupported(f"filter pipeline version {version}")
    pipeline = []
    for _ in range(count):
        code = c.u16()
        name_length = c.u16() if version == 1 or code >= 256 else 0
        flags, nvalues = c.u16(), c.u16()
        # (a version 1 name's length includes its padding to 8 bytes)
        name = c.take(name_length).split(b"\0", 1)[0]
        values = tuple(c.u32() for _ in range(nvalues))
        if version == 1 and nvalues % 2:
            c.skip(4)
        pipeline.append((code, flags, values, name or FILTER_NAMES.get(code, "").encode()))
    return tuple(pipeline)


@dataclass(frozen=True, slots=True)
class Attribute:
    """An attribute as stored: name, type, shape (None for a null dataspace) and raw value."""

    name: bytes
    type: DataType
    shape: tuple[int, ...] | None
    data: bytes


def attribute_name(body: bytes) -> bytes:
    """An attribute message's name, without decoding the rest."""
    version, size = body[0], int.from_bytes(body[2:4], "little")
    start = 9 if version == 3 else 8
    return body[start : start + size].rstrip(b"\0")


def attribute(body: bytes, image: Image) -> Attribute:
    c = Cursor(body, image)
    version, flags = c.u8(), c.u8()
    if flags & 0x03:
        raise NativeUnsupported("an attribute of a shared datatype or dataspace")
    name_size, type_size, space_size = c.u16(), c.u16(), c.u16()
    if version == 3:
        c.skip(1)  # the name's character set
    elif version not in (1, 2):
        raise NativeUnsupported(f"attribute message version {version}")
    padded = version == 1  # version 1 pads name, datatype and dataspace to 8 bytes
    name = c.take(name_size).rstrip(b"\0")
    if padded:
        c.align(8)
    kind = cached_datatype(c.take(type_size), image)
    if padded:
        c.align(8)
    shape, _ = cached_dataspace(c.take(space_size), image)
    if padded:
        c.align(8)
    return Attribute(name, kind, shape, c.buf[c.pos :])


# The objects of a file, and the files of an archive, share a few types, shapes and filter
# pipelines: each is decoded once (the messages are immutable bytes, the results immutable).
def cached_datatype(body: bytes, image: Image) -> DataType:
    return _cached_datatype(body, image.offset_size, image.length_size)


def cached_dataspace(
    body: bytes, image: Image
) -> tuple[tuple[int, ...] | None, tuple[int | None, ...]]:
    return _cached_dataspace(body, image.offset_size, image.length_size)


def cached_filters(body: bytes) -> tuple[tuple[int, int, tuple[int, ...], bytes], ...]:
    return _cached_filters(body)


@functools.lru_cache(maxsize=1024)
def _cached_datatype(body: bytes, offset_size: int, length_size: int) -> DataType:
    return datatype(Cursor(body, Image(_no_reads, 0, 0, offset_size, length_size)))


@functools.lru_cache(maxsize=1024)
def _cached_dataspace(
    body: bytes, offset_size: int, length_size: int
) -> tuple[tuple[int, ...] | None, tuple[int | None, ...]]:
    return dataspace(body, Image(_no_reads, 0, 0, offset_size, length_size))


@functools.lru_cache(maxsize=256)
def _cached_filters(body: bytes) -> tuple[tuple[int, int, tuple[int, ...], bytes], ...]:
    return filters(body, Image(_no_reads, 0))


def _no_reads(start: int, size: int) -> bytes:
    raise NativeUnsupported("a datatype or dataspace that refers elsewhere in the file")


@dataclass(frozen=True, slots=True)
class Link:
    """A link: its name and the object header it leads to (`kind` 0 = hard; others are soft or
    external links, which the native reader leaves to h5py)."""

    name: bytes
    kind: int
    address: int
    order: int


def link(body: bytes, image: Image) -> Link:
    c = Cursor(body, image)
    if c.u8() != 1:
        raise NativeUnsupported("link message version")
    flags = c.u8()
    kind = c.u8() if flags & 0x08 else 0
    order = c.u64() if flags & 0x04 else 0
    if flags & 0x10:
        c.skip(1)
    name = c.take(c.uint(1 << (flags & 0x03)))
    return Link(name, kind, c.address() if kind == 0 else UNDEFINED, order)


@dataclass(frozen=True, slots=True)
class DenseInfo:
    """Link Info or Attribute Info: whether creation order is tracked, and the fractal heap and
    name index B-tree of dense storage (UNDEFINED when the links or attributes are compact)."""

    order_tracked: bool
    heap: int
    names: int


def dense_info(body: bytes, image: Image, counter_size: int) -> DenseInfo:
    """Link Info (`counter_size` 8) or Attribute Info (2)."""
    c = Cursor(body, image)
    c.skip(1)
    flags = c.u8()
    if flags & 0x01:
        c.skip(counter_size)  # the largest creation order given so far
    heap, names = c.address(), c.address()
    return DenseInfo(bool(flags & 0x01), heap, names)
