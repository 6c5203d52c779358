"""The bytes of an HDF5 file as the native metadata reader sees them.

`Image` reads at HDF5 addresses (relative to the superblock, which a user block may push
forward), from a local file or through an `ObjectReader`'s cached blocks.
`Cursor` decodes the little-endian integers, addresses and lengths HDF5 metadata is made of.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["Cursor", "Image", "NativeUnsupported", "check_sum", "local_image", "lookup3"]


class NativeUnsupported(Exception):
    """The native reader met something it does not decode: the h5py walker takes over."""


UNDEFINED: Final = -1
"""An undefined address (all bits set in the file), as `Cursor.address` returns it."""
_U16, _U32, _U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")
_ALL_SET = {4: 2**32 - 1, 8: 2**64 - 1}


@dataclass
class Image:
    """An HDF5 file: `read(address, size)` at HDF5 addresses, and the file's integer sizes."""

    read_absolute: Callable[[int, int], bytes]
    size: int
    base: int = 0
    offset_size: int = 8
    length_size: int = 8

    def read(self, address: int, size: int) -> bytes:
        """`size` bytes at `address`; fewer means the file is truncated."""
        start = self.base + address
        if address < 0 or start + size > self.size:
            raise NativeUnsupported(f"{size} bytes at address {address} are past the end")
        return self.read_absolute(start, size)

    def cursor(self, address: int, size: int) -> Cursor:
        return Cursor(self.read(address, size), self)


@contextlib.contextmanager
def local_image(path: str) -> Iterator[Image]:
    """An `Image` of a local file, read with `pread` (for the few small reads of a metadata walk
    cheaper than mapping the file)."""
    fd = os.open(path, os.O_RDONLY)
    try:

        def read(start: int, size: int) -> bytes:
            return os.pread(fd, size, start)

        yield Image(read, os.fstat(fd).st_size)
    finally:
        os.close(fd)


_PROBE = b"Four score and seven years ago"
_WORDS = struct.Struct("<3I")
_MASK = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def lookup3(data: bytes) -> int:
    """Bob Jenkins' lookup3 hash (`hashlittle`, seed 0): the checksum of HDF5's version 2
    metadata (superblocks, object headers, B-trees, fractal heaps)."""
    a = b = c = (0xDEADBEEF + len(data)) & _MASK
    tail = len(data) % 12 or (12 if data else 0)
    body = len(data) - tail
    for pos in range(0, body, 12):
        x, y, z = _WORDS.unpack_from(data, pos)
        a, b, c = (a + x) & _MASK, (b + y) & _MASK, (c + z) & _MASK
        a = ((a - c) & _MASK) ^ _rot(c, 4)
        c = (c + b) & _MASK
        b = ((b - a) & _MASK) ^ _rot(a, 6)
        a = (a + c) & _MASK
        c = ((c - b) & _MASK) ^ _rot(b, 8)
        b = (b + a) & _MASK
        a = ((a - c) & _MASK) ^ _rot(c, 16)
        c = (c + b) & _MASK
        b = ((b - a) & _MASK) ^ _rot(a, 19)
        a = (a + c) & _MASK
        c = ((c - b) & _MASK) ^ _rot(b, 4)
        b = (b + a) & _MASK
    if not tail:
        return c
    x, y, z = _WORDS.unpack(data[body:] + bytes(12 - tail))
    a, b, c = (a + x) & _MASK, (b + y) & _MASK, (c + z) & _MASK
    c = ((c ^ b) - _rot(b, 14)) & _MASK
    a = ((a ^ c) - _rot(c, 11)) & _MASK
    b = ((b ^ a) - _rot(a, 25)) & _MASK
    c = ((c ^ b) - _rot(b, 16)) & _MASK
    a = ((a ^ c) - _rot(c, 4)) & _MASK
    b = ((b ^ a) - _rot(a, 14)) & _MASK
    return int(((c ^ b) - _rot(b, 24)) & _MASK)


def check_sum(block: bytes, what: str) -> None:
    """Raise `NativeUnsupported` unless `block` ends with the lookup3 checksum of the rest (h5py
    then reports the damage)."""
    checksum = _hdf5_lookup3() or lookup3
    if len(block) < 4 or checksum(block[:-4]) != int.from_bytes(block[-4:], "little"):
        raise NativeUnsupported(f"a wrong checksum in {what}")


@functools.cache
def _hdf5_lookup3() -> Callable[[bytes], int] | None:
    """HDF5's own lookup3 (`H5_checksum_lookup3` of the libhdf5 h5py ships), 50x faster than
    `lookup3`; None where that library or symbol is not found."""
    for path in _hdf5_libraries():
        try:
            function = ctypes.CDLL(path).H5_checksum_lookup3
        except (OSError, AttributeError):
            continue
        function.restype = ctypes.c_uint32
        function.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32]

        def checksum(data: bytes, function: Any = function) -> int:
            return int(function(data, len(data), 0))

        if checksum(_PROBE) == lookup3(_PROBE):
            return checksum
    return None


def _hdf5_libraries() -> list[str]:
    """The libhdf5 of an h5py wheel (`h5py.libs`, `h5py/.dylibs`), else the system's."""
    import h5py  # (only to find the library it loaded)

    package = Path(h5py.__file__).parent
    bundled = [*package.parent.glob("h5py.libs/libhdf5-*"), *package.glob(".dylibs/libhdf5*")]
    found = [str(p) for p in bundled if "_hl" not in p.name]
    system = ctypes.util.find_library("hdf5")
    return found + ([system] if system else [])


class Cursor:
    """Reads fields one after another from a block of metadata."""

    __slots__ = ("buf", "image", "pos")

    def __init__(self, buf: bytes, image: Image, pos: int = 0) -> None:
        self.buf = buf
        self.image = image
        self.pos = pos

    def uint(self, size: int) -> int:
        end = self.pos + size
        if end > len(self.buf):
            raise NativeUnsupported("a field runs past the end of its block")
        value = int.from_bytes(self.buf[self.pos : end], "little")
        self.pos = end
        return value

    # The fixed sizes unpack with struct, several times faster than slicing (struct.error, a
    # short block, is handled like NativeUnsupported by the caller).
    def u8(self) -> int:
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def u16(self) -> int:
        value: int = _U16.unpack_from(self.buf, self.pos)[0]
        self.pos += 2
        return value

    def u32(self) -> int:
        value: int = _U32.unpack_from(self.buf, self.pos)[0]
        self.pos += 4
        return value

    def u64(self) -> int:
        value: int = _U64.unpack_from(self.buf, self.pos)[0]
        self.pos += 8
        return value

    def address(self) -> int:
        value = self.u64() if self.image.offset_size == 8 else self.u32()
        return UNDEFINED if value == _ALL_SET[self.image.offset_size] else value

    def length(self) -> int:
        return self.u64() if self.image.length_size == 8 else self.u32()

    def unpack(self, fields: struct.Struct) -> tuple[Any, ...]:
        values = fields.unpack_from(self.buf, self.pos)
        self.pos += fields.size
        return values

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.buf):
            raise NativeUnsupported("a field runs past the end of its block")
        data = self.buf[self.pos : end]
        self.pos = end
        return data

    def skip(self, size: int) -> None:
        self.pos += size

    def align(self, boundary: int, start: int = 0) -> None:
        """Move to the next multiple of `boundary` counted from `start`."""
        self.pos += -(self.pos - start) % boundary

    def cstring(self) -> bytes:
        """A null-terminated string (the null consumed)."""
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            raise NativeUnsupported("an unterminated string")
        text = self.buf[self.pos : end]
        self.pos = end + 1
        return text

    def signature(self, expected: bytes) -> None:
        if self.take(len(expected)) != expected:
            raise NativeUnsupported(f"expected the signature {expected!r}")
