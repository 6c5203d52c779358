"""HDF5 file structures the native reader walks: the superblock, object headers and their
messages, old-style (symbol table) groups and the global heap."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from vcube.parsers.hdf5.binary import UNDEFINED, Cursor, Image, NativeUnsupported, check_sum

__all__ = [
    "GlobalHeap",
    "Message",
    "ObjectHeader",
    "read_object_header",
    "read_superblock",
    "symbol_table_links",
    "tree_node",
]

CONTINUATION: Final = 0x10
# The messages a variable or a group is read from; the others (times, comments, reference
# counts, group storage hints...) change nothing in what is read, and are not kept.
KEPT: Final = frozenset({0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x0B, 0x0C, 0x11, 0x15})
LAST_KNOWN: Final = 0x18
FAIL_IF_UNKNOWN: Final = 0x80
# Object header v2 flags: the width of chunk 0's size, and which optional fields follow.
ATTR_ORDER_TRACKED: Final = 0x04
STORE_PHASE_CHANGE: Final = 0x10
STORE_TIMES: Final = 0x20
MSG_SHARED: Final = 0x02
MSG_ORDER_TRACKED: Final = 0x04
# A version 2 header message's type, size and flags, and its creation order where tracked;
# a version 1 message's type, size and flags (and 3 reserved bytes).
_ENTRY, _ORDERED_ENTRY = struct.Struct("<BHB"), struct.Struct("<BHBH")
_V1_ENTRY = struct.Struct("<HHB3x")
HEADER_READ: Final = 512
GROUP_NODES, CHUNK_NODES = 0, 1


@dataclass(frozen=True, slots=True)
class Message:
    """One object header message: its type, flags, body and creation order (0 if untracked)."""

    type: int
    flags: int
    body: bytes
    order: int = 0


@dataclass(slots=True)
class ObjectHeader:
    """An object's header messages, and whether its attributes' creation order is tracked."""

    address: int
    messages: list[Message] = field(default_factory=list)
    attr_order_tracked: bool = False

    def find(self, kind: int) -> Message | None:
        for message in self.messages:
            if message.type == kind:
                if message.flags & MSG_SHARED:
                    raise NativeUnsupported(f"shared message of type {kind}")
                return message
        return None

    def all(self, kind: int) -> list[Message]:
        found = [m for m in self.messages if m.type == kind]
        if any(m.flags & MSG_SHARED for m in found):
            raise NativeUnsupported(f"shared message of type {kind}")
        return found


def read_superblock(image: Image, at: int) -> int:
    """Set `image`'s base address and integer sizes from the superblock at absolute offset `at`;
    return the root group's object header address."""
    head = Cursor(image.read_absolute(at, 24), image)
    head.skip(8)  # signature, checked by detection
    version = head.u8()
    if version in (0, 1):
        head.skip(4)
        image.offset_size, image.length_size = head.u8(), head.u8()
        size = 24 + (4 if version == 1 else 0) + 4 * image.offset_size + 24 + 2 * image.offset_size
        body = Cursor(image.read_absolute(at, size), image, 24 + (4 if version == 1 else 0))
        base = body.address()
        body.skip(image.offset_size)  # free space
        end = body.address()
        body.skip(2 * image.offset_size)  # driver info, the root's link name offset
        root = body.address()
    elif version in (2, 3):
        image.offset_size, image.length_size = head.u8(), head.u8()
        block = image.read_absolute(at, 12 + 4 * image.offset_size + 4)
        check_sum(block, "the superblock")
        body = Cursor(block, image, 12)
        base = body.address()
        extension = body.address()
        if extension != UNDEFINED:
            raise NativeUnsupported("a superblock extension (shared messages, file spaces)")
        end = body.address()
        root = body.address()
    else:
        raise NativeUnsupported(f"superblock version {version}")
    if image.offset_size not in (4, 8) or image.length_size not in (4, 8):
        raise NativeUnsupported("offsets or lengths that are not 4 or 8 bytes")
    image.base = base or at
    # (HDF5 writes the end-of-file address counted from the file's start, user block included)
    if end == UNDEFINED or end > image.size:
        raise NativeUnsupported("the file is shorter than its superblock says: truncated")
    return root


def read_object_header(image: Image, address: int) -> ObjectHeader:
    """The messages of the object header at `address`, continuation blocks included."""
    # One read usually holds the whole header: most are a few hundred bytes.
    head = image.read(address, min(HEADER_READ, image.size - image.base - address))
    if head[:4] == b"OHDR":
        return _read_v2(image, address, head)
    if head[:1] != b"\x01" or len(head) < 16:
        raise NativeUnsupported("object header version")
    size = int.from_bytes(head[8:12], "little")
    header = ObjectHeader(address)
    blocks = [(address + 16, size)]
    while blocks:
        start, size = blocks.pop(0)
        cursor = _block(image, head, address, start, size)
        while cursor.pos + 8 <= size:
            kind, length, flags = _V1_ENTRY.unpack_from(cursor.buf, cursor.pos)
            cursor.pos += 8
            _add(header, blocks, image, kind, flags, cursor.take(length), 0)
    return header


def _read_v2(image: Image, address: int, head: bytes) -> ObjectHeader:
    prefix = Cursor(head, image, 4)
    if prefix.u8() != 2:
        raise NativeUnsupported("object header version")
    flags = prefix.u8()
    if flags & STORE_TIMES:
        prefix.skip(16)
    if flags & STORE_PHASE_CHANGE:
        prefix.skip(4)
    size = prefix.uint(1 << (flags & 0x03))
    check_sum(_chunk(image, head, address, address, prefix.pos + size + 4), "an object header")
    tracked = bool(flags & ATTR_ORDER_TRACKED)
    entry = _ORDERED_ENTRY if tracked else _ENTRY
    header = ObjectHeader(address, attr_order_tracked=tracked)
    blocks = [(address + prefix.pos, size)]
    continued = False
    while blocks:
        start, size = blocks.pop(0)
        cursor = _block(image, head, address, start, size)
        if continued:
            check_sum(cursor.buf, "an object header continuation block")
            cursor.signature(b"OCHK")
        end = size - 4 if continued else size  # (a continuation block ends with a checksum)
        continued = True
        while cursor.pos + entry.size <= end:
            kind, length, mflags, *order = entry.unpack_from(cursor.buf, cursor.pos)
            cursor.pos += entry.size
            order_value = order[0] if order else 0
            _add(header, blocks, image, kind, mflags, cursor.take(length), order_value)
    return header


def _block(image: Image, head: bytes, address: int, start: int, size: int) -> Cursor:
    """A block of header messages, from the bytes already read when they hold it."""
    return Cursor(_chunk(image, head, address, start, size), image)


def _chunk(image: Image, head: bytes, address: int, start: int, size: int) -> bytes:
    """`size` bytes at `start`, from `head` (read at `address`) when it holds them."""
    offset = start - address
    if offset >= 0 and offset + size <= len(head):
        return head[offset : offset + size]
    return image.read(start, size)


def _add(
    header: ObjectHeader,
    blocks: list[tuple[int, int]],
    image: Image,
    kind: int,
    flags: int,
    body: bytes,
    order: int,
) -> None:
    if kind in KEPT:
        header.messages.append(Message(kind, flags, body, order))
    elif kind == CONTINUATION:
        continuation = Cursor(body, image)
        blocks.append((continuation.address(), continuation.length()))
    elif kind > LAST_KNOWN and flags & FAIL_IF_UNKNOWN:
        raise NativeUnsupported(f"an object header message of unknown type {kind}")


def tree_node(image: Image, address: int, kind: int) -> tuple[int, int]:
    """The level (0: a leaf) and entry count of the version 1 B-tree node at `address`, which
    must index groups (`GROUP_NODES`) or chunks (`CHUNK_NODES`)."""
    head = image.cursor(address, 8)
    head.signature(b"TREE")
    if head.u8() != kind:
        raise NativeUnsupported(f"a version 1 B-tree node of another type than {kind}")
    return head.u8(), head.u16()


def symbol_table_links(image: Image, btree: int, heap: int) -> list[tuple[bytes, int]]:
    """The (name, object header address) of every link of an old-style group, from its group
    B-tree (version 1, type 0) and local heap."""
    names = _local_heap(image, heap)
    links: list[tuple[bytes, int]] = []
    nodes = [btree]
    while nodes:
        address = nodes.pop(0)
        level, entries = tree_node(image, address, GROUP_NODES)
        prefix = 8 + 2 * image.offset_size  # then keys and children, interleaved
        size = prefix + entries * (image.length_size + image.offset_size) + image.length_size
        node = image.cursor(address, size)
        node.skip(prefix)
        children = []
        for _ in range(entries):
            node.skip(image.length_size)  # key: a name's offset in the local heap
            children.append(node.address())
        if level > 0:
            nodes[:0] = children
        else:
            for child in children:
                links.extend(_symbol_node(image, child, names))
    return links


def _symbol_node(image: Image, address: int, names: bytes) -> list[tuple[bytes, int]]:
    entry = 2 * image.offset_size + 24
    head = image.cursor(address, 8)
    head.signature(b"SNOD")
    head.skip(2)
    count = head.u16()
    body = image.cursor(address + 8, count * entry)
    links = []
    for _ in range(count):
        offset = body.uint(image.offset_size)
        target = body.address()
        body.skip(24)  # cache type, reserved, scratch pad
        end = names.find(b"\0", offset)
        links.append((names[offset:end], target))
    return links


def _local_heap(image: Image, address: int) -> bytes:
    head = image.cursor(address, 8 + 2 * image.length_size + image.offset_size)
    head.signature(b"HEAP")
    head.skip(4)
    size = head.length()
    head.skip(image.length_size)  # free list
    return bytes(image.read(head.address(), size))


class GlobalHeap:
    """Objects of the global heap collections of one file (variable-length data), each
    collection read once."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.collections: dict[int, dict[int, bytes]] = {}

    def get(self, collection: int, index: int) -> bytes:
        if collection not in self.collections:
            self.collections[collection] = self._read(collection)
        try:
            return self.collections[collection][index]
        except KeyError:
            raise NativeUnsupported(f"no object {index} in global heap {collection}") from None

    def _read(self, address: int) -> dict[int, bytes]:
        image = self.image
        head = image.cursor(address, 8 + image.length_size)
        head.signature(b"GCOL")
        head.skip(4)
        size = head.length()
        cursor = image.cursor(address, size)
        # The collection's header and each object's are padded to 8 bytes, as the data are.
        cursor.skip(8 + image.length_size)
        cursor.align(8)
        objects = {}
        while cursor.pos + 8 + image.length_size <= size:
            index = cursor.u16()
            cursor.skip(6)  # reference count, reserved
            length = cursor.length()
            cursor.align(8)
            if index == 0:  # free space: the rest of the collection
                break
            objects[index] = cursor.take(length)
            cursor.align(8)
        return objects
