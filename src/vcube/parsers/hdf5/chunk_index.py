"""A chunked dataset's index, read with numpy: the version 1 B-tree of chunks (layout message
version 3), and the indexes of layout messages 4 and 5 (File Format Specification version 3:
the Data Layout message, Fixed Array, Extensible Array and version 2 B-trees): a single chunk,
implicit (every chunk allocated at once, one after the other), fixed array, extensible array
(one unlimited axis) and version 2 B-tree (several unlimited axes). Anything unexpected raises
`NativeUnsupported`."""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from vcube.parsers.hdf5.binary import UNDEFINED, Image, NativeUnsupported
from vcube.parsers.hdf5.dense import btree_records
from vcube.parsers.hdf5.objects import CHUNK_NODES, tree_node

if TYPE_CHECKING:
    from vcube.parsers.hdf5.messages import Layout

__all__ = ["ChunkIndex", "read_chunk_btree", "read_chunk_index"]

# Chunk index types of a layout message (`Layout.index`).
BTREE_V1: Final = 0
SINGLE: Final = 1
IMPLICIT: Final = 2
FIXED_ARRAY: Final = 3
EXTENSIBLE_ARRAY: Final = 4
BTREE_V2: Final = 5

_Bytes = np.ndarray[Any, np.dtype[np.uint8]]
_U64 = np.ndarray[Any, np.dtype[np.uint64]]


@dataclass(frozen=True, slots=True)
class ChunkIndex:
    """Every stored chunk: element offset of its first element per axis, filter mask, absolute
    byte offset in the file and stored size, in C order of the chunks."""

    starts: np.ndarray[Any, np.dtype[np.int64]]
    masks: np.ndarray[Any, np.dtype[np.uint32]]
    offsets: np.ndarray[Any, np.dtype[np.uint64]]
    lengths: np.ndarray[Any, np.dtype[np.uint64]]


def _empty(ndim: int) -> ChunkIndex:
    none = np.zeros(0, dtype=np.uint64)
    return ChunkIndex(np.zeros((0, ndim), np.int64), np.zeros(0, np.uint32), none, none)


def read_chunk_index(
    image: Image, layout: Layout, shape: tuple[int, ...], maxshape: tuple[int | None, ...]
) -> ChunkIndex:
    """The chunks of a chunked dataset of `shape` (maximum shape `maxshape`, None where
    unlimited) whose layout message is `layout`.

    Raises
    ------
    NativeUnsupported
        For an index or a structure of it this does not decode, or bytes that are not one.
    """
    ndim = len(layout.chunks)
    if len(shape) != ndim or len(maxshape) != ndim:
        raise NativeUnsupported("a chunk shape of another rank")
    if layout.index == BTREE_V1:
        return read_chunk_btree(image, layout.address, ndim)
    if layout.flags & 0x01:
        # Edge chunks stored without the filters: no single codec pipeline decodes them all.
        raise NativeUnsupported("partial edge chunks stored unfiltered")
    if layout.address == UNDEFINED:
        return _empty(ndim)
    chunk_bytes = math.prod(layout.chunks) * layout.element_size
    if layout.index == SINGLE:
        filtered = bool(layout.flags & 0x02)
        return ChunkIndex(
            starts=np.zeros((1, ndim), np.int64),
            masks=np.array([layout.filter_mask if filtered else 0], np.uint32),
            offsets=np.array([layout.address + image.base], np.uint64),
            lengths=np.array([layout.filtered_size if filtered else chunk_bytes], np.uint64),
        )
    if layout.index == IMPLICIT:
        return _implicit(image, layout, shape, _grid(maxshape, layout.chunks), chunk_bytes)
    if layout.index == FIXED_ARRAY:
        grid = _grid(maxshape, layout.chunks)
        rows, valid = _fixed_array(image, layout.address, math.prod(grid))
        linear = np.arange(len(rows), dtype=np.int64)
        return _entries(image, layout, rows, valid, linear, grid, chunk_bytes)
    if layout.index == EXTENSIBLE_ARRAY:
        return _extensible_array(image, layout, maxshape, chunk_bytes)
    if layout.index == BTREE_V2:
        return _btree_v2(image, layout, chunk_bytes)
    raise NativeUnsupported(f"chunk index type {layout.index}")


def _grid(maxshape: tuple[int | None, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    """Chunks per axis of the largest extent (what array indexes number their chunks over)."""
    if any(n is None for n in maxshape):
        raise NativeUnsupported("an unlimited axis where the chunk index has none")
    return tuple(-(-int(n or 0) // c) for n, c in zip(maxshape, chunks, strict=True))


# --------------------------------------------------------------------------------------------
# Elements of the array indexes: an address, and for filtered chunks a size and a filter mask


def _uint(columns: _Bytes) -> _U64:
    """Little-endian unsigned integers of up to 8 bytes, one per row of byte columns."""
    rows, width = columns.shape
    if not 1 <= width <= 8:
        raise NativeUnsupported(f"a {width}-byte integer in a chunk index")
    padded = np.zeros((rows, 8), dtype=np.uint8)
    padded[:, :width] = columns
    return padded.view("<u8").reshape(rows).astype(np.uint64)


def _entries(
    image: Image,
    layout: Layout,
    rows: _Bytes,
    valid: np.ndarray[Any, np.dtype[np.bool_]],
    linear: np.ndarray[Any, np.dtype[np.int64]],
    grid: tuple[int, ...],
    chunk_bytes: int,
    front: int = 0,
) -> ChunkIndex:
    """The chunks of an array index's elements `rows` (one per row, `valid` where they hold a
    chunk's entry), element `linear[i]` being the chunk at that C-order position of `grid`.

    With `front` > 0, the grid's first axis is the dataset's axis `front` (the extensible
    array's order when its unlimited axis is not the first).
    """
    size, width = image.offset_size, rows.shape[1]
    if width != size and not size + 5 <= width <= size + 12:
        raise NativeUnsupported(f"{width}-byte elements in a chunk index")
    addresses = _uint(rows[:, :size])
    keep = valid & (addresses != _undefined(image))
    if width == size:
        lengths = np.full(len(rows), chunk_bytes, dtype=np.uint64)
        masks = np.zeros(len(rows), dtype=np.uint32)
    else:
        lengths = _uint(rows[:, size:-4])
        masks = _uint(rows[:, -4:]).astype(np.uint32)
    addresses, lengths, masks, linear = addresses[keep], lengths[keep], masks[keep], linear[keep]
    positions = np.stack(np.unravel_index(linear, grid), axis=1).astype(np.int64)
    if front:
        axes = list(range(1, len(grid)))
        axes.insert(front, 0)
        positions = positions[:, axes]
        order = np.lexsort(positions.T[::-1])  # back to C order
        positions, addresses = positions[order], addresses[order]
        lengths, masks = lengths[order], masks[order]
    return ChunkIndex(
        starts=positions * np.array(layout.chunks, dtype=np.int64),
        masks=masks,
        offsets=addresses + np.uint64(image.base),
        lengths=lengths,
    )


def _undefined(image: Image) -> np.uint64:
    """An undefined address as an index stores it (all bits set)."""
    return np.uint64((1 << (8 * image.offset_size)) - 1)


def _check_prefix(buf: bytes, signature: bytes, client: int, header: int, image: Image) -> None:
    """A fixed or extensible array block's signature, version, client and header address."""
    size = image.offset_size
    if (
        buf[:4] != signature
        or buf[4] != 0
        or buf[5] != client
        or int.from_bytes(buf[6 : 6 + size], "little") != header
    ):
        raise NativeUnsupported(f"a {signature.decode(errors='replace')} block not as expected")


def _bits(bitmap: bytes) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """The bits of a page bitmap, most significant first."""
    return np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8)).astype(bool)


def _paged(
    buf: bytes, start: int, count: int, page: int, width: int, written: np.ndarray[Any, Any]
) -> tuple[_Bytes, np.ndarray[Any, np.dtype[np.bool_]]]:
    """The `count` elements of `width` bytes in pages of `page` elements from `start` of `buf`
    (each page followed by its checksum, the last maybe shorter), and which of them are in the
    pages `written` says were."""
    pages = -(-count // page)
    page_bytes = page * width + 4
    body = buf[start:].ljust(pages * page_bytes, b"\0")
    flat = np.frombuffer(body, dtype=np.uint8, count=pages * page_bytes)
    rows = flat.reshape(pages, page_bytes)[:, : page * width].reshape(pages * page, width)
    if len(written) < pages:
        raise NativeUnsupported("a page bitmap shorter than its pages")
    return rows[:count], np.repeat(written[:pages], page)[:count]


# --------------------------------------------------------------------------------------------
# Implicit index and fixed array


def _implicit(
    image: Image,
    layout: Layout,
    shape: tuple[int, ...],
    grid: tuple[int, ...],
    chunk_bytes: int,
) -> ChunkIndex:
    """Every chunk of the current extent, the largest extent's chunks laid end to end from the
    index address in C order."""
    current = tuple(-(-n // c) for n, c in zip(shape, layout.chunks, strict=True))
    positions = np.indices(current, dtype=np.int64).reshape(len(current), -1).T
    linear: _U64 = np.asarray(np.ravel_multi_index(tuple(positions.T), grid), dtype=np.uint64)
    return ChunkIndex(
        starts=positions * np.array(layout.chunks, dtype=np.int64),
        masks=np.zeros(len(positions), dtype=np.uint32),
        offsets=linear * np.uint64(chunk_bytes) + np.uint64(layout.address + image.base),
        lengths=np.full(len(positions), chunk_bytes, dtype=np.uint64),
    )


def _fixed_array(
    image: Image, address: int, expected: int
) -> tuple[_Bytes, np.ndarray[Any, np.dtype[np.bool_]]]:
    """The elements of the fixed array whose header ("FAHD") is at `address`, and which of them
    were written (the others are in pages never written)."""
    size = image.offset_size
    cur = image.cursor(address, 8 + image.length_size + size)
    cur.signature(b"FAHD")
    version, client, width, page_bits = cur.u8(), cur.u8(), cur.u8(), cur.u8()
    count, block = cur.length(), cur.address()
    if version != 0 or client > 1 or count != expected or not 1 <= page_bits < 32:
        raise NativeUnsupported(f"a fixed array of {count} elements, version {version}")
    if block == UNDEFINED:
        return np.zeros((0, width), np.uint8), np.zeros(0, bool)
    prefix, page = 6 + size, 1 << page_bits
    if count <= page:
        buf = image.read(block, prefix + count * width)
        _check_prefix(buf, b"FADB", client, address, image)
        rows = np.frombuffer(buf, dtype=np.uint8, offset=prefix).reshape(count, width)
        return rows, np.ones(count, dtype=bool)
    # Paged: a bitmap of the pages written and a checksum, then the pages.
    pages = -(-count // page)
    bitmap_size = (pages + 7) // 8
    start = prefix + bitmap_size + 4
    buf = image.read(block, start + 4 * pages + count * width)  # the last page maybe shorter
    _check_prefix(buf, b"FADB", client, address, image)
    return _paged(buf, start, count, page, width, _bits(buf[prefix : prefix + bitmap_size]))


# --------------------------------------------------------------------------------------------
# Extensible array


def _extensible_array(
    image: Image, layout: Layout, maxshape: tuple[int | None, ...], chunk_bytes: int
) -> ChunkIndex:
    """The chunks of a dataset with one unlimited axis, numbered in C order of a grid whose
    first axis is the unlimited one (the others as long as their largest extent)."""
    unlimited = [axis for axis, n in enumerate(maxshape) if n is None]
    if len(unlimited) != 1:
        raise NativeUnsupported("an extensible array index without one unlimited axis")
    front = unlimited[0]
    others = tuple(n for axis, n in enumerate(maxshape) if axis != front)
    other_chunks = tuple(c for axis, c in enumerate(layout.chunks) if axis != front)
    fixed = _grid(others, other_chunks)
    rows, valid, linear = _ExtensibleArray(image, layout.address).elements()
    per_row = max(math.prod(fixed), 1)
    grid = (int(linear.max()) // per_row + 1 if len(linear) else 1, *fixed)
    return _entries(image, layout, rows, valid, linear, grid, chunk_bytes, front)


class _ExtensibleArray:
    """An extensible array: its header ("EAHD") read at construction, `elements()` the rest.

    Past the index block's own elements, element indexes are split into super blocks; super
    block u holds 2**(u // 2) data blocks of 2**((u + 1) // 2) times the minimum elements. The
    data blocks of the first super blocks are listed by the index block itself, the others by
    their super block (which also holds the page bitmaps of its paged data blocks).
    """

    def __init__(self, image: Image, address: int) -> None:
        self.image, self.address = image, address
        length, size = image.length_size, image.offset_size
        cur = image.cursor(address, 12 + 6 * length + size)
        cur.signature(b"EAHD")
        version, self.client = cur.u8(), cur.u8()
        self.width, max_bits, self.index_elements = cur.u8(), cur.u8(), cur.u8()
        block_min, pointers_min, page_bits = cur.u8(), cur.u8(), cur.u8()
        cur.skip(4 * length)  # super and data blocks created, and their sizes
        self.used, _ = cur.length(), cur.length()  # largest index set (plus one), realized
        self.index_block = cur.address()
        powers = (block_min, pointers_min)
        if version != 0 or self.client > 1 or any(v <= 0 or v & (v - 1) for v in powers):
            raise NativeUnsupported(f"an extensible array of version {version}")
        if not 0 < page_bits < 32 or not block_min.bit_length() <= max_bits <= 64:
            raise NativeUnsupported("an extensible array of other sizes")
        self.page = 1 << page_bits
        self.offset_size = (max_bits + 7) // 8  # of block offsets within the array
        self.supers = 1 + max_bits - (block_min.bit_length() - 1)
        self.blocks = [1 << (u // 2) for u in range(self.supers)]
        self.block_elements = [block_min << ((u + 1) // 2) for u in range(self.supers)]
        sizes = (n * e for n, e in zip(self.blocks, self.block_elements, strict=True))
        self.super_starts = list(itertools.accumulate(sizes, initial=0))
        self.direct_supers = 2 * (pointers_min.bit_length() - 1)
        self.direct_blocks = 2 * (pointers_min - 1)

    def elements(self) -> tuple[_Bytes, np.ndarray[Any, np.dtype[np.bool_]], np.ndarray[Any, Any]]:
        """Every element stored (as rows of bytes), whether each was written, and its index."""
        image, size, width = self.image, self.image.offset_size, self.width
        pieces: list[tuple[int, _Bytes, np.ndarray[Any, np.dtype[np.bool_]]]] = []
        if self.index_block != UNDEFINED and self.used:
            n_index, n_supers = self.index_elements, self.supers - self.direct_supers
            prefix = 6 + size
            buf = image.read(
                self.index_block,
                prefix + n_index * width + (self.direct_blocks + n_supers) * size,
            )
            _check_prefix(buf, b"EAIB", self.client, self.address, image)
            rows = np.frombuffer(buf, np.uint8, n_index * width, prefix).reshape(n_index, width)
            pieces.append((0, rows, np.ones(n_index, dtype=bool)))
            table = np.frombuffer(buf, np.uint8, offset=prefix + n_index * width)
            pointers = _uint(table.reshape(-1, size)).tolist()
            blocks = iter(pointers[: self.direct_blocks])
            for u in range(self.direct_supers):
                for j in range(self.blocks[u]):
                    pieces += self.data_block(next(blocks), u, j, None)
            for u, super_block in enumerate(pointers[self.direct_blocks :], self.direct_supers):
                pieces += self.super_block(super_block, u)
        if not pieces:
            return np.zeros((0, width), np.uint8), np.zeros(0, bool), np.zeros(0, np.int64)
        firsts = [np.arange(first, first + len(rows)) for first, rows, _ in pieces]
        linear = np.concatenate(firsts).astype(np.int64)
        rows = np.concatenate([rows for _, rows, _ in pieces])
        valid = np.concatenate([valid for _, _, valid in pieces]) & (linear < self.used)
        return rows, valid, linear

    def super_block(
        self, address: int, u: int
    ) -> list[tuple[int, _Bytes, np.ndarray[Any, np.dtype[np.bool_]]]]:
        """The data blocks of super block `u` at `address` (none if not allocated)."""
        if (
            address == _undefined(self.image)
            or self.index_elements + self.super_starts[u] >= self.used
        ):
            return []
        size, count = self.image.offset_size, self.blocks[u]
        # Paged data blocks: one bitmap of their pages written, each block's pages in turn
        # (its size rounded up to whole bytes per block).
        pages = self.block_elements[u] // self.page if self.block_elements[u] > self.page else 0
        bitmap = count * ((pages + 7) // 8)
        prefix = 6 + size + self.offset_size
        buf = self.image.read(address, prefix + bitmap + count * size)
        _check_prefix(buf, b"EASB", self.client, self.address, self.image)
        written = _bits(buf[prefix : prefix + bitmap])
        table = np.frombuffer(buf, np.uint8, count * size, prefix + bitmap)
        pieces = []
        for j, block in enumerate(_uint(table.reshape(count, size)).tolist()):
            bits = written[j * pages : (j + 1) * pages] if pages else None
            pieces += self.data_block(block, u, j, bits)
        return pieces

    def data_block(
        self, address: int, u: int, j: int, written: np.ndarray[Any, Any] | None
    ) -> list[tuple[int, _Bytes, np.ndarray[Any, np.dtype[np.bool_]]]]:
        """Data block `j` of super block `u` at `address` (`written`: which of its pages were,
        if paged): [(index of its first element, its elements, which were written)], or [] if
        not allocated."""
        offset = self.super_starts[u] + j * self.block_elements[u]
        first = self.index_elements + offset
        if address == _undefined(self.image) or first >= self.used:
            return []
        count, width, size = self.block_elements[u], self.width, self.image.offset_size
        # (The block's offset in the array, in its prefix, is not checked: the library writes
        # another number than the offset for the data blocks listed by the index block.)
        prefix = 6 + size + self.offset_size
        paged = count > self.page
        if paged and written is None:
            raise NativeUnsupported("a paged data block listed by the index block")
        pages = count // self.page if paged else 0
        buf = self.image.read(address, prefix + count * width + (4 + 4 * pages if paged else 0))
        _check_prefix(buf, b"EADB", self.client, self.address, self.image)
        if written is not None:
            rows, valid = _paged(buf, prefix + 4, count, self.page, width, written)
            return [(first, rows, valid)]
        rows = np.frombuffer(buf, np.uint8, count * width, prefix).reshape(count, width)
        return [(first, rows, np.ones(count, dtype=bool))]


# --------------------------------------------------------------------------------------------
# Version 2 B-tree


def _btree_v2(image: Image, layout: Layout, chunk_bytes: int) -> ChunkIndex:
    """The records of a version 2 B-tree of chunks (type 10, or 11 for filtered chunks): an
    element as in the arrays, then the chunk's position in the grid."""
    ndim = len(layout.chunks)
    head = image.read(layout.address, 12)
    kind, record_size = head[5], int.from_bytes(head[10:12], "little")
    if head[:4] != b"BTHD" or kind not in (10, 11):
        raise NativeUnsupported(f"a chunk B-tree of type {kind}")
    width = record_size - 8 * ndim
    plain = image.offset_size
    if (kind == 10 and width != plain) or (kind == 11 and not plain + 5 <= width <= plain + 12):
        raise NativeUnsupported(f"{record_size}-byte records in a chunk B-tree of type {kind}")
    records = btree_records(image, layout.address, kind)
    if not records:
        return _empty(ndim)
    rows = np.frombuffer(b"".join(records), dtype=np.uint8).reshape(len(records), record_size)
    scaled = rows[:, width:].copy().view("<u8").astype(np.int64)
    grid = tuple(int(n) + 1 for n in scaled.max(axis=0))
    linear = np.ravel_multi_index(tuple(scaled.T), grid).astype(np.int64)
    valid = np.ones(len(rows), dtype=bool)
    return _entries(image, layout, rows[:, :width], valid, linear, grid, chunk_bytes)


# --------------------------------------------------------------------------------------------
# Version 1 B-tree


def read_chunk_btree(image: Image, address: int, ndim: int) -> ChunkIndex:
    """The chunks listed by the B-tree at `address` of a dataset with `ndim` axes."""
    entry = _entry_dtype(ndim, image.offset_size)
    prefix = 8 + 2 * image.offset_size
    leaves: list[np.ndarray[Any, Any]] = []
    nodes = [address] if address != UNDEFINED else []
    while nodes:
        node = nodes.pop(0)
        level, count = tree_node(image, node, CHUNK_NODES)
        raw = image.read(node + prefix, count * entry.itemsize)
        entries = np.frombuffer(raw, dtype=entry, count=count)
        if level > 0:
            nodes[:0] = entries["child"].tolist()
        else:
            leaves.append(entries)
    if not leaves:
        return _empty(ndim)
    found = np.concatenate(leaves) if len(leaves) > 1 else leaves[0]
    return ChunkIndex(
        starts=found["start"][:, :ndim].astype(np.int64),
        masks=found["mask"].astype(np.uint32),
        offsets=found["child"].astype(np.uint64) + np.uint64(image.base),
        lengths=found["size"].astype(np.uint64),
    )


@functools.lru_cache(maxsize=64)
def _entry_dtype(ndim: int, offset_size: int) -> np.dtype[Any]:
    """A key (chunk size, filter mask, element offsets, and one more for the element itself)
    followed by the child it leads to; the node's last key, alone, is never read."""
    address = "<u8" if offset_size == 8 else "<u4"
    return np.dtype(
        [
            ("size", "<u4"),
            ("mask", "<u4"),
            ("start", "<u8", (ndim + 1,)),
            ("child", address),
        ]
    )
