"""Dense link and attribute storage: version-2 B-trees indexing messages kept in a fractal heap.

A group with many links, or an object with many attributes, keeps each link or attribute message
as an object of a fractal heap, and finds them through version-2 B-trees whose records hold heap
IDs (File Format Specification version 3, sections III.A.2 and III.G). `btree_records` lists a
B-tree's records; `FractalHeap.get` turns a heap ID into the message bytes. Anything this does not
decode (filtered heaps, huge objects, other versions) raises `NativeUnsupported`.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from vcube.parsers.hdf5.binary import UNDEFINED, NativeUnsupported, check_sum

if TYPE_CHECKING:
    from vcube.parsers.hdf5.binary import Cursor, Image

__all__ = ["FractalHeap", "btree_records"]

_PREFIX: Final = 10  # signature, version, type and checksum of every B-tree node


def _log2(value: int) -> int:
    """The highest bit set (the library's `H5VM_log2_gen`), 0 for 0."""
    return max(value.bit_length() - 1, 0)


def _count_size(limit: int) -> int:
    """Bytes to store a count up to `limit` (the library's `H5VM_limit_enc_size`)."""
    return _log2(limit) // 8 + 1


# --------------------------------------------------------------------------------------------
# Version-2 B-trees


@dataclass(frozen=True, slots=True)
class _BTree:
    """A B-tree header's fields, and the widths of the counts in its internal nodes."""

    image: Image
    kind: int
    record_size: int
    max_records: tuple[int, ...]  # per depth, leaves first
    count_size: int  # width of "records in child", for every internal node
    total_sizes: tuple[int, ...]  # per depth: width of "records below child", 0 for leaves

    def node(self, address: int, depth: int, nrec: int) -> list[bytes]:
        """The records of the node at `address` and of its descendants, in order."""
        if address == UNDEFINED or nrec > self.max_records[depth]:
            raise NativeUnsupported(f"a v2 B-tree node at {address} is out of bounds")
        size = self.record_size
        if depth == 0:
            cur = self.image.cursor(address, 6 + nrec * size + 4)
            check_sum(cur.buf, "a v2 B-tree leaf")
            self.prefix(cur, b"BTLF")
            return self.records(cur, nrec)
        pointer = self.image.offset_size + self.count_size + self.total_sizes[depth - 1]
        cur = self.image.cursor(address, 6 + nrec * size + (nrec + 1) * pointer + 4)
        check_sum(cur.buf, "a v2 B-tree node")
        self.prefix(cur, b"BTIN")
        records = self.records(cur, nrec)
        out: list[bytes] = []
        for i in range(nrec + 1):
            child, child_nrec = cur.address(), cur.uint(self.count_size)
            cur.skip(self.total_sizes[depth - 1])
            out += self.node(child, depth - 1, child_nrec)
            if i < nrec:
                out.append(records[i])
        return out

    def records(self, cur: Cursor, nrec: int) -> list[bytes]:
        data, size = cur.take(nrec * self.record_size), self.record_size
        return [data[i : i + size] for i in range(0, len(data), size)]

    def prefix(self, cur: Cursor, signature: bytes) -> None:
        cur.signature(signature)
        if cur.u8() != 0 or cur.u8() != self.kind:
            raise NativeUnsupported(f"a {signature.decode()} node of another version or type")


def btree_records(image: Image, address: int, kind: int | None = None) -> list[bytes]:
    """All records of the version-2 B-tree whose header is at `address`, in key order.

    Parameters
    ----------
    image
        The file.
    address
        Address of the B-tree header ("BTHD").
    kind
        The B-tree type expected (5: link names, 6: link creation order, 8: attribute names,
        9: attribute creation order); any other type raises. None accepts any type.

    Returns
    -------
    list of bytes
        Each record's raw bytes (as long as the header's record size).
    """
    cur = image.cursor(address, 16 + image.offset_size + 2 + image.length_size + 4)
    check_sum(cur.buf, "a v2 B-tree header")
    cur.signature(b"BTHD")
    version, tree_kind = cur.u8(), cur.u8()
    if version != 0 or (kind is not None and tree_kind != kind):
        raise NativeUnsupported(f"a v2 B-tree of version {version}, type {tree_kind}")
    node_size, record_size, depth = cur.u32(), cur.u16(), cur.u16()
    cur.skip(2)  # split and merge percentages
    root, root_nrec = cur.address(), cur.u16()
    if cur.length() == 0:
        return []
    if record_size == 0 or node_size <= _PREFIX + record_size:
        raise NativeUnsupported(f"a v2 B-tree with {record_size}-byte records in {node_size}")

    # Count widths follow the library: records per leaf bound every node's count, and each depth
    # bounds the records below it by the capacity of a full subtree.
    leaf_max = (node_size - _PREFIX) // record_size
    count_size = _count_size(leaf_max)
    max_records, total_sizes, cumulative = [leaf_max], [0], leaf_max
    for d in range(1, depth + 1):
        pointer = image.offset_size + count_size + total_sizes[d - 1]
        max_d = (node_size - (_PREFIX + pointer)) // (record_size + pointer)
        if max_d < 1:
            raise NativeUnsupported(
                f"a v2 B-tree too deep ({depth}) for its {node_size}-byte nodes"
            )
        cumulative = (max_d + 1) * cumulative + max_d
        max_records.append(max_d)
        total_sizes.append(_count_size(cumulative))
    tree = _BTree(image, tree_kind, record_size, tuple(max_records), count_size, tuple(total_sizes))
    return tree.node(root, depth, root_nrec)


# --------------------------------------------------------------------------------------------
# Fractal heaps

_ID_HUGE: Final = 0x10
_ID_TINY: Final = 0x20


class FractalHeap:
    """A fractal heap: its header read once, its blocks read (and kept) as objects are asked for.

    Parameters
    ----------
    image
        The file.
    address
        Address of the heap header ("FRHP").
    """

    def __init__(self, image: Image, address: int) -> None:
        self.image = image
        length, offset = image.length_size, image.offset_size
        cur = image.cursor(address, 22 + 12 * length + 3 * offset + 4)
        check_sum(cur.buf, "a fractal heap header")
        cur.signature(b"FRHP")
        if cur.u8() != 0:
            raise NativeUnsupported("a fractal heap of an unknown version")
        self.id_size, filter_size = cur.u16(), cur.u16()
        if filter_size:
            raise NativeUnsupported("a filtered fractal heap")
        cur.skip(1)  # flags: wrapped huge IDs, direct-block checksums (not verified)
        max_object = cur.u32()
        cur.skip(2 * length + 2 * offset)  # huge objects and free-space bookkeeping
        self.managed_size = cur.length()
        cur.skip(7 * length)  # allocation iterator, object counts and sizes
        self.width = cur.u16()
        self.start_size, max_direct = cur.length(), cur.length()
        max_bits = cur.u16()
        cur.skip(2)  # starting rows of the root indirect block
        self.root, self.root_rows = cur.address(), cur.u16()
        sizes = (self.width, self.start_size, max_direct)
        if any(v <= 0 or v & (v - 1) for v in sizes) or max_direct < self.start_size:
            raise NativeUnsupported(f"a fractal heap's doubling table of widths and sizes {sizes}")

        self.offset_size = (max_bits + 7) // 8
        self.length_size = min((_log2(max_direct) + 7) // 8, _count_size(max_object))
        self._offset_end = 1 + self.offset_size  # where fields of a managed object's ID end
        self._id_end = self._offset_end + self.length_size
        self.max_direct_rows = _log2(max_direct) - _log2(self.start_size) + 2
        self.first_row_bits = _log2(self.start_size) + _log2(self.width)
        # Direct blocks read so far, sorted by heap offset, so that objects in them are found
        # by bisection; indirect blocks by address, as (heap offset, child addresses).
        self._starts: list[int] = []
        self._blocks: list[bytes] = []
        self._indirect: dict[int, tuple[int, list[int]]] = {}

    def get(self, heap_id: bytes) -> bytes:
        """The object a heap ID names: its bytes from a direct block, or from the ID if tiny."""
        if not heap_id or heap_id[0] & 0xF0 or len(heap_id) < self._id_end:
            return self._unmanaged(heap_id)
        offset = int.from_bytes(heap_id[1 : self._offset_end], "little")
        size = int.from_bytes(heap_id[self._offset_end : self._id_end], "little")
        if size == 0 or offset + size > self.managed_size:
            raise NativeUnsupported(f"a heap object at {offset} past the heap's managed space")
        i = bisect_right(self._starts, offset) - 1
        if i < 0 or offset + size > self._starts[i] + len(self._blocks[i]):
            i = self._read_direct(offset)
        start, block = offset - self._starts[i], self._blocks[i]
        if start + size > len(block):
            raise NativeUnsupported(f"a heap object at {offset} past the end of its direct block")
        return block[start : start + size]

    def _unmanaged(self, heap_id: bytes) -> bytes:
        """A tiny object's bytes, or the reason an ID is not read."""
        if not heap_id or heap_id[0] & 0xC0:
            raise NativeUnsupported("a fractal heap ID of an unknown version")
        kind = heap_id[0] & 0x30
        if kind == _ID_HUGE:
            raise NativeUnsupported("a huge fractal heap object")
        if kind != _ID_TINY:
            raise NativeUnsupported(f"a fractal heap ID of type {kind >> 4} or too short")
        # An ID longer than 18 bytes spends a second byte on the length (the library's rule).
        if self.id_size - 1 > 17:
            size, start = ((heap_id[0] & 0x0F) << 8 | heap_id[1]) + 1, 2
        else:
            size, start = (heap_id[0] & 0x0F) + 1, 1
        if start + size > len(heap_id):
            raise NativeUnsupported("a tiny heap object longer than its ID")
        return bytes(heap_id[start : start + size])

    def _row_size(self, row: int) -> int:
        return self.start_size if row == 0 else self.start_size << (row - 1)

    def _lookup(self, offset: int) -> tuple[int, int]:
        """Row and column of the block holding `offset` (counted from its indirect block)."""
        if offset < self.start_size * self.width:
            return 0, offset // self.start_size
        high = _log2(offset)
        row = high - self.first_row_bits + 1
        return row, (offset - (1 << high)) // self._row_size(row)

    def _locate(self, offset: int) -> tuple[int, int]:
        """Address and size of the direct block holding heap offset `offset`."""
        if self.root_rows == 0:
            return self.root, self.start_size
        address, rows = self.root, self.root_rows
        while True:
            block_offset, children = self._indirect_block(address, rows)
            row, col = self._lookup(offset - block_offset)
            if row >= rows or col >= self.width:
                raise NativeUnsupported(f"heap offset {offset} past its indirect block")
            address = children[row * self.width + col]
            if address == UNDEFINED:
                raise NativeUnsupported(f"heap offset {offset} in an unallocated block")
            if row < self.max_direct_rows:
                return address, self._row_size(row)
            rows = _log2(self._row_size(row)) - self.first_row_bits + 1

    def _block_prefix(self, address: int, size: int, signature: bytes) -> tuple[Cursor, int]:
        """A cursor on `size` bytes of a heap block, past its prefix; and its heap offset."""
        cur = self.image.cursor(address, size)
        cur.signature(signature)
        if cur.u8() != 0:
            raise NativeUnsupported(f"a {signature.decode()} block of an unknown version")
        cur.skip(self.image.offset_size)  # the heap header's address
        return cur, cur.uint(self.offset_size)

    def _indirect_block(self, address: int, rows: int) -> tuple[int, list[int]]:
        if address not in self._indirect:
            prefix = 5 + self.image.offset_size + self.offset_size
            count = rows * self.width
            size = prefix + count * self.image.offset_size + 4
            cur, block_offset = self._block_prefix(address, size, b"FHIB")
            check_sum(cur.buf, "a fractal heap indirect block")
            self._indirect[address] = (block_offset, [cur.address() for _ in range(count)])
        return self._indirect[address]

    def _read_direct(self, offset: int) -> int:
        """Read the direct block holding heap offset `offset`: its index in `_blocks`."""
        cur, block_offset = self._block_prefix(*self._locate(offset), b"FHDB")
        if not block_offset <= offset < block_offset + len(cur.buf):
            raise NativeUnsupported(f"heap offset {offset} not in the direct block found for it")
        i = bisect_right(self._starts, block_offset)
        if i and self._starts[i - 1] == block_offset:  # read already (the object overruns it)
            return i - 1
        # Objects are placed counting from the block's first byte, prefix included.
        self._starts.insert(i, block_offset)
        self._blocks.insert(i, cur.buf)
        return i
