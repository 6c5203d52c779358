"""`NetCDF3Parser`: NetCDF classic files (CDF-1, CDF-2 64-bit offset, CDF-5 64-bit data) as
virtual Zarr arrays.

vcube reads the classic header itself (big-endian; dimensions, global attributes, variables). One
ranged GET returns the first 64 KiB and the file's size; a longer header costs one more request
per doubling. A variable is a stack of rows along its first axis (records, for record variables):

- fixed-size variables are contiguous: one chunk each, or chunks of `chunk_bytes` worth of rows;
- record variables are interleaved record by record, so each record is a chunk at
  ``begin + i * recsize``; the one exception is a file with a single record variable, whose
  records are stored back to back and can be grouped into chunks like a fixed-size variable.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import obstore
from zarr.codecs import BytesCodec

from vcube.errors import UnsupportedFormatError, VcubeError
from vcube.manifests import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore
from vcube.manifests.attrs import encode_attributes, json_value
from vcube.manifests.metadata import array_metadata
from vcube.readers import ReadOptions, ReadStats, translate_io_error
from vcube.registry import ObjectStoreRegistry, normalize_url

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from obstore.store import ObjectStore

__all__ = ["NetCDF3Parser"]

HEADER_READ: Final = 64 * 2**10
STREAMING: Final = 0xFFFFFFFF
STREAMING_64: Final = 0xFFFFFFFFFFFFFFFF
NC_DIMENSION: Final = 0x0A
NC_VARIABLE: Final = 0x0B
NC_ATTRIBUTE: Final = 0x0C
NC_CHAR: Final = 2
NC_FILL_FLOAT: Final = float(np.float32(9.9692099683868690e36))
NC_FILL_DOUBLE: Final = 9.9692099683868690e36
# nc_type -> (big-endian numpy dtype, netCDF default fill value)
NC_TYPES: Final[dict[int, tuple[str, Any]]] = {
    1: ("i1", -127),
    2: ("S1", b"\x00"),
    3: (">i2", -32767),
    4: (">i4", -2147483647),
    5: (">f4", NC_FILL_FLOAT),
    6: (">f8", NC_FILL_DOUBLE),
    7: ("u1", 255),
    8: (">u2", 65535),
    9: (">u4", 4294967295),
    10: (">i8", -9223372036854775806),
    11: (">u8", 18446744073709551614),
}
CDF5_ONLY: Final = frozenset({7, 8, 9, 10, 11})
VERSIONS: Final = {1: "classic", 2: "64-bit offset", 5: "64-bit data"}

_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_BIG_ENDIAN: Final = (BytesCodec(endian="big"),)


@dataclass(frozen=True, slots=True)
class _Type:
    """What one nc_type becomes in Zarr, computed once per type, not per variable."""

    disk: np.dtype[Any]  # big-endian, as stored
    dtype: np.dtype[Any]  # native, as zarr and xarray show it
    default_fill: Any
    codecs: tuple[BytesCodec, ...]

    @classmethod
    def of(cls, big: str, fill: Any) -> _Type:
        disk = np.dtype(big)
        dtype = disk.newbyteorder("=")
        codecs = _BIG_ENDIAN if disk.itemsize > 1 else ()
        return cls(disk, dtype, _fill(fill, dtype), codecs)


def _fill(value: Any, dtype: np.dtype[Any]) -> Any:
    """`value` as a Python scalar of `dtype` (the Zarr fill value)."""
    return np.asarray(value).astype(dtype).reshape(-1)[0].item()


TYPES: Final = {code: _Type.of(big, fill) for code, (big, fill) in NC_TYPES.items()}


@dataclass(frozen=True)
class NetCDF3Parser:
    """Parse NetCDF3 (classic, 64-bit offset, 64-bit data) files into a `ManifestStore`.

    Parameters
    ----------
    drop_variables
        Variables to leave out.
    read_options
        How the header is read: ``"ranges"`` and ``"blocks"`` read it in exact range requests
        (the first 64 KiB, more only if needed); ``"whole"`` downloads the file.
    chunk_bytes
        Split contiguous variables along their first axis into chunks of at most this many bytes
        (but at least one row each): every fixed-size variable, and the record variable of a
        file that has only one. None (the default) keeps one chunk per fixed-size variable and
        one per record. The rows per chunk are the most that fit; when they do not divide the
        first axis, the last chunk's reference still covers a whole chunk, reading past the
        variable's end into bytes of the file that zarr discards. Should that run past the end of
        the file, fewer rows are taken: a divisor of the axis length, or few enough that the
        overrun stays inside the file.
    """

    drop_variables: Collection[str] = ()
    read_options: ReadOptions = field(default_factory=ReadOptions)
    stats: ReadStats = field(default_factory=ReadStats, compare=False)
    """Requests and bytes of every parse made with this parser (in this process)."""
    chunk_bytes: int | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        size: object = self.chunk_bytes  # checked as given: a bool or float is a mistake
        if size is not None and (type(size) is not int or size < 1):
            raise ValueError(
                f"chunk_bytes must be a positive number of bytes or None, not {size!r}"
            )

    def __call__(self, url: str, registry: ObjectStoreRegistry | None = None) -> ManifestStore:
        url = normalize_url(url)
        registry = registry or ObjectStoreRegistry()
        stats = ReadStats()
        store, path = registry.resolve(url)
        source = _Source(store, path, url, self.read_options, stats)
        header = _Header.read(source)
        drop = set(self.drop_variables)
        arrays = {
            v.name: _array(v, header, url, self.chunk_bytes)
            for v in header.variables
            if v.name not in drop
        }
        group = ManifestGroup(arrays=arrays, groups={}, attributes=json_value(header.attributes))
        self.stats.merge(stats)
        return ManifestStore(group, registry=registry, read_stats=stats)


class _Source:
    """The bytes of the file the header needs. One ranged GET gives both the first
    `HEADER_READ` bytes and the file's size (no separate HEAD request); ``"whole"`` downloads
    the file in that one GET instead."""

    def __init__(
        self, store: ObjectStore, path: str, url: str, options: ReadOptions, stats: ReadStats
    ) -> None:
        self.store, self.path, self.url, self.stats = store, path, url, stats
        self.whole = options.strategy == "whole"
        self.size, self.first = self._first_read(options)
        stats.add(url, len(self.first))

    def _first_read(self, options: ReadOptions) -> tuple[int, bytes]:
        try:
            result = obstore.get(
                self.store, self.path, options={} if self.whole else {"range": (0, HEADER_READ)}
            )
        except Exception as err:
            # An empty file has no byte range to read: the one failure that the header check
            # reports better (as not NetCDF3) than the object store does.
            if self._call(lambda: obstore.head(self.store, self.path))["size"] != 0:
                raise translate_io_error(err, self.url) from err
            return 0, b""
        size = int(result.meta["size"])
        if self.whole and size > options.max_whole_file:
            raise VcubeError(
                f"{self.url}: {size} bytes is larger than max_whole_file="
                f"{options.max_whole_file}; use strategy='ranges' or raise the limit"
            )
        return size, self._call(lambda: bytes(result.bytes()))

    def read(self, start: int, length: int) -> bytes:
        """Bytes `[start, start + length)`, clipped to the end of the file."""
        stop = min(start + length, self.size)
        if self.whole or stop <= len(self.first):
            return self.first[start:stop]
        if stop <= start:
            return b""
        data = self._call(lambda: obstore.get_range(self.store, self.path, start=start, end=stop))
        self.stats.add(self.url, stop - start)
        return bytes(data)

    def _call[T](self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as err:
            raise translate_io_error(err, self.url) from err


@dataclass(frozen=True, slots=True)
class _Variable:
    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]  # the record axis at its length in the file
    type: _Type
    attributes: dict[str, Any]
    begin: int
    is_record: bool

    @property
    def row_bytes(self) -> int:
        """Bytes of one row: one index along the first axis (one record of a record variable)."""
        return math.prod(self.shape[1:]) * self.type.disk.itemsize


@dataclass(frozen=True, slots=True)
class _Header:
    numrecs: int
    recsize: int  # stride between records; == the row bytes of a lone record variable
    file_size: int
    attributes: dict[str, Any]
    variables: tuple[_Variable, ...]

    @classmethod
    def read(cls, source: _Source) -> _Header:
        cursor = _Cursor(source)
        try:
            return cls._parse(cursor, source.size)
        except (struct.error, UnicodeDecodeError, ValueError, KeyError, IndexError) as err:
            if isinstance(err, VcubeError):
                raise
            raise UnsupportedFormatError(f"{source.url}: corrupt NetCDF3 header ({err})") from err

    @classmethod
    def _parse(cls, c: _Cursor, file_size: int) -> _Header:
        magic = c.take(4)
        if magic[:3] != b"CDF" or magic[3] not in VERSIONS:
            raise UnsupportedFormatError(
                f"{c.url}: not a NetCDF3 file (first bytes {magic!r}, expected CDF\\x01, "
                f"CDF\\x02 or CDF\\x05)"
            )
        version = magic[3]
        c.wide = version == 5
        numrecs = c.count()
        dims = c.tagged(NC_DIMENSION, c.dimension)
        attributes = dict(c.tagged(NC_ATTRIBUTE, c.attribute))
        offset = c.uint64 if version != 1 else c.uint32
        raw_vars = c.tagged(NC_VARIABLE, lambda: c.variable(offset))
        record_dim = next((i for i, (_, n) in enumerate(dims) if n == 0), -1)  # -1: none
        for name, dimids, _, nc_type, _ in raw_vars:
            if nc_type not in NC_TYPES or (nc_type in CDF5_ONLY and version != 5):
                raise UnsupportedFormatError(
                    f"{c.url}: variable {name!r} has an unknown NetCDF3 type {nc_type}"
                )
            if any(d >= len(dims) for d in dimids):
                raise UnsupportedFormatError(
                    f"{c.url}: variable {name!r} refers to dimension ids {dimids}, but the header "
                    f"defines {len(dims)} dimensions (corrupt header)"
                )
            if record_dim in dimids[1:]:
                raise UnsupportedFormatError(
                    f"{c.url}: variable {name!r} has the unlimited dimension "
                    f"{dims[record_dim][0]!r} after its first axis (corrupt header)"
                )
        records = [
            (dimids, TYPES[nc_type].disk.itemsize, begin)
            for _, dimids, _, nc_type, begin in raw_vars
            if dimids and dimids[0] == record_dim
        ]
        row_bytes = [math.prod(dims[d][1] for d in ids[1:]) * size for ids, size, _ in records]
        # netCDF-C packs a lone record variable's records without padding.
        recsize = row_bytes[0] if len(records) == 1 else sum(-(-n // 4) * 4 for n in row_bytes)
        if numrecs == (STREAMING_64 if c.wide else STREAMING):
            first = min((begin for *_, begin in records), default=file_size)
            numrecs = (file_size - first) // recsize if recsize else 0
        variables = []
        for name, dimids, attrs, nc_type, begin in raw_vars:
            is_record = bool(dimids) and dimids[0] == record_dim
            names = tuple(dims[d][0] for d in dimids)
            shape = tuple(
                numrecs if is_record and i == 0 else dims[d][1] for i, d in enumerate(dimids)
            )
            variables.append(_Variable(name, names, shape, TYPES[nc_type], attrs, begin, is_record))
        return cls(numrecs, recsize, file_size, attributes, tuple(variables))


class _Cursor:
    """Reads the header forward from a buffer that grows (by doubling) as the header needs."""

    def __init__(self, source: _Source) -> None:
        self.source = source
        self.url = source.url
        self.buffer = source.first
        self.pos = 0
        self.wide = False  # CDF-5: counts and lengths are 64-bit

    def _need(self, n: int) -> int:
        """The position of the next `n` bytes, which are then in the buffer (and consumed)."""
        pos, end = self.pos, self.pos + n
        if end > len(self.buffer):
            more = max(end - len(self.buffer), len(self.buffer))
            self.buffer += self.source.read(len(self.buffer), more)
            if end > len(self.buffer):
                raise UnsupportedFormatError(
                    f"{self.url}: truncated NetCDF3 header (needs at least {end} bytes, the file "
                    f"has {len(self.buffer)})"
                )
        self.pos = end
        return pos

    def take(self, n: int) -> bytes:
        pos = self._need(n)
        return self.buffer[pos : pos + n]

    def uint32(self) -> int:
        value: int = _U32.unpack_from(self.buffer, self._need(4))[0]
        return value

    def uint64(self) -> int:
        value: int = _U64.unpack_from(self.buffer, self._need(8))[0]
        return value

    def count(self) -> int:
        """A NON_NEG: 32-bit, or 64-bit in CDF-5."""
        return self.uint64() if self.wide else self.uint32()

    def padded(self, n: int) -> bytes:
        pos = self._need(n + -n % 4)
        return self.buffer[pos : pos + n]

    def name(self) -> str:
        return self.padded(self.count()).decode("utf-8")

    def tagged[T](self, tag: int, item: Callable[[], T]) -> list[T]:
        found, n = self.uint32(), self.count()
        if found == 0 and n == 0:
            return []
        if found != tag:
            raise UnsupportedFormatError(
                f"{self.url}: corrupt NetCDF3 header (tag {found:#x} at byte {self.pos - 8}, "
                f"expected {tag:#x})"
            )
        return [item() for _ in range(n)]

    def dimension(self) -> tuple[str, int]:
        return self.name(), self.count()

    def attribute(self) -> tuple[str, Any]:
        name = self.name()
        nc_type = self.uint32()
        n = self.count()
        if nc_type not in NC_TYPES:
            raise UnsupportedFormatError(
                f"{self.url}: attribute {name!r} has an unknown NetCDF3 type {nc_type}"
            )
        t = TYPES[nc_type]
        raw = self.padded(n * t.disk.itemsize)
        if nc_type == NC_CHAR:
            return name, raw.decode("utf-8", errors="replace")
        values = np.frombuffer(raw, dtype=t.disk).astype(t.dtype)
        return name, values[0] if n == 1 else values

    def variable(
        self, offset: Callable[[], int]
    ) -> tuple[str, list[int], dict[str, Any], int, int]:
        name = self.name()
        dimids = [self.count() for _ in range(self.count())]
        attrs = dict(self.tagged(NC_ATTRIBUTE, self.attribute))
        nc_type = self.uint32()
        self.count()  # vsize: recomputed, as it is capped for large variables
        return name, dimids, attrs, nc_type, offset()


def _array(v: _Variable, header: _Header, url: str, chunk_bytes: int | None) -> ManifestArray:
    rows, stride = _layout(v, header, chunk_bytes)
    if v.shape:
        chunks = (rows, *v.shape[1:])
        n = -(-v.shape[0] // rows)
        grid = (n,) + (1,) * (len(v.shape) - 1)
        offsets = (v.begin + np.arange(n, dtype=np.uint64) * np.uint64(stride)).reshape(grid)
    else:
        chunks = grid = ()
        offsets = np.full(grid, v.begin, dtype=np.uint64)
    manifest = ChunkManifest(
        paths=(url,),
        path_ids=np.zeros(grid, dtype=np.int32),
        offsets=offsets,
        lengths=np.full(grid, rows * v.row_bytes, dtype=np.uint64),
    )
    t = v.type
    fill = v.attributes.get("_FillValue")
    info = array_metadata(
        shape=v.shape,
        dtype=t.dtype,
        chunks=chunks,
        codecs=t.codecs,
        fill_value=t.default_fill if fill is None else _fill(fill, t.dtype),
        dimension_names=v.dims,
        attributes=encode_attributes(v.attributes, t.dtype),
    )
    return ManifestArray(info, manifest, name=v.name)


def _layout(v: _Variable, header: _Header, chunk_bytes: int | None) -> tuple[int, int]:
    """Rows (first-axis indices) per chunk, and the bytes from one chunk to the next."""
    if not v.shape:
        return 1, 0
    n, row = v.shape[0], v.row_bytes
    if v.is_record:
        # Only a lone record variable's records are back to back (recsize is then its row).
        if chunk_bytes is None or header.recsize != row or n == 0:
            return 1, header.recsize
    elif chunk_bytes is None:
        return n, n * row
    rows = _rows_per_chunk(n, row, chunk_bytes, header.file_size - v.begin)
    return rows, rows * row


def _rows_per_chunk(n: int, row_bytes: int, chunk_bytes: int, room: int) -> int:
    """The most rows (at least one) that fit in `chunk_bytes`, such that the rows divide `n` or a
    whole last chunk, read from the variable's start, ends within the `room` bytes left in the
    file."""
    most = max(1, chunk_bytes // row_bytes)
    if most >= n:
        return n
    if n % most == 0 or -(-n // most) * most * row_bytes <= room:
        return most
    # A last chunk with an overrun of k rows stays inside the file if k <= slack; any rows <=
    # slack + 1 guarantee that, and a divisor of n needs no overrun at all.
    slack = (room - n * row_bytes) // row_bytes
    small = np.arange(1, math.isqrt(n) + 1)
    small = small[n % small == 0]
    divisors = np.concatenate([small, n // small])
    divisor = int(divisors[divisors <= most].max())
    return max(divisor, min(most, slack + 1))
