"""`NetCDF3Parser`: NetCDF classic files (CDF-1, CDF-2 64-bit offset, CDF-5 64-bit data) as
virtual Zarr arrays.

vcube reads the classic header itself (big-endian; dimensions, global attributes, variables), in
as few range requests as the header needs: the first 64 KiB, then more only when the header is
longer. Fixed-size variables become one contiguous chunk each; record variables one chunk per
record, at ``begin + i * recsize`` (records of all record variables are interleaved).
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from zarr.codecs import BytesCodec

from vcube.errors import UnsupportedFormatError, VcubeError
from vcube.manifests import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore
from vcube.manifests.array_api import grid_shape
from vcube.manifests.attrs import encode_attributes, json_value
from vcube.manifests.metadata import array_metadata
from vcube.readers import ObjectReader, ReadOptions, ReadStats
from vcube.registry import ObjectStoreRegistry, normalize_url

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

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
    """

    drop_variables: Collection[str] = ()
    read_options: ReadOptions = field(default_factory=ReadOptions)
    stats: ReadStats = field(default_factory=ReadStats, compare=False)
    """Requests and bytes of every parse made with this parser (in this process)."""

    def __call__(self, url: str, registry: ObjectStoreRegistry | None = None) -> ManifestStore:
        url = normalize_url(url)
        registry = registry or ObjectStoreRegistry()
        stats = ReadStats()
        store, path = registry.resolve(url)
        options = self.read_options
        if options.strategy == "blocks":
            options = dataclasses.replace(options, strategy="ranges")
        reader = ObjectReader(store, path, url=url, options=options, stats=stats)
        header = _Header.read(reader, url)
        arrays = {
            v.name: _array(v, header, url)
            for v in header.variables
            if v.name not in self.drop_variables
        }
        group = ManifestGroup(arrays=arrays, groups={}, attributes=json_value(header.attributes))
        self.stats.merge(stats)
        return ManifestStore(group, registry=registry, read_stats=stats)


@dataclass(frozen=True, slots=True)
class _Variable:
    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]  # the record axis at its length in the file
    nc_type: int
    attributes: dict[str, Any]
    begin: int
    is_record: bool

    @property
    def slice_bytes(self) -> int:
        """Bytes of the whole variable (fixed) or of one record of it (record)."""
        dtype = np.dtype(NC_TYPES[self.nc_type][0])
        rest = self.shape[1:] if self.is_record else self.shape
        return int(np.prod(rest, dtype=np.int64)) * dtype.itemsize


@dataclass(frozen=True, slots=True)
class _Header:
    version: int
    numrecs: int
    recsize: int
    attributes: dict[str, Any]
    variables: tuple[_Variable, ...]

    @classmethod
    def read(cls, reader: ObjectReader, url: str) -> _Header:
        cursor = _Cursor(reader, url)
        try:
            return cls._parse(cursor, reader.size)
        except (struct.error, UnicodeDecodeError, ValueError, KeyError, IndexError) as err:
            if isinstance(err, VcubeError):
                raise
            raise UnsupportedFormatError(f"{url}: corrupt NetCDF3 header ({err})") from err

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
        record_dims = [i for i, (_, n) in enumerate(dims) if n == 0]
        record_dim = record_dims[0] if record_dims else None
        variables: list[_Variable] = []
        for name, dimids, attrs, nc_type, begin in raw_vars:
            if nc_type not in NC_TYPES or (nc_type in CDF5_ONLY and version != 5):
                raise UnsupportedFormatError(
                    f"{c.url}: variable {name!r} has an unknown NetCDF3 type {nc_type}"
                )
            if any(d >= len(dims) for d in dimids):
                raise UnsupportedFormatError(
                    f"{c.url}: variable {name!r} refers to dimension ids {dimids}, but the header "
                    f"defines {len(dims)} dimensions (corrupt header)"
                )
            is_record = bool(dimids) and dimids[0] == record_dim
            names = tuple(dims[d][0] for d in dimids)
            shape = tuple(dims[d][1] for d in dimids)
            variables.append(_Variable(name, names, shape, nc_type, attrs, begin, is_record))
        records = [v for v in variables if v.is_record]
        padded = [-(-v.slice_bytes // 4) * 4 for v in records]
        # netCDF-C packs a lone record variable's records without padding.
        recsize = records[0].slice_bytes if len(records) == 1 else sum(padded)
        if numrecs == (STREAMING_64 if c.wide else STREAMING):
            first = min((v.begin for v in records), default=file_size)
            numrecs = (file_size - first) // recsize if recsize else 0
        variables = [
            dataclasses.replace(v, shape=(numrecs, *v.shape[1:])) if v.is_record else v
            for v in variables
        ]
        return cls(version, numrecs, recsize, attributes, tuple(variables))


class _Cursor:
    """Reads the header forward from a buffer that grows (by doubling) as the header needs."""

    def __init__(self, reader: ObjectReader, url: str) -> None:
        self.reader = reader
        self.url = url
        self.buffer = reader.read_range(0, HEADER_READ)
        self.pos = 0
        self.wide = False  # CDF-5: counts and lengths are 64-bit

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buffer):
            more = max(end - len(self.buffer), len(self.buffer))
            self.buffer += self.reader.read_range(len(self.buffer), more)
            if end > len(self.buffer):
                raise UnsupportedFormatError(
                    f"{self.url}: truncated NetCDF3 header (needs at least {end} bytes, the file "
                    f"has {len(self.buffer)})"
                )
        out = self.buffer[self.pos : end]
        self.pos = end
        return out

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def uint64(self) -> int:
        value: int = struct.unpack(">Q", self.take(8))[0]
        return value

    def count(self) -> int:
        """A NON_NEG: 32-bit, or 64-bit in CDF-5."""
        return self.uint64() if self.wide else self.uint32()

    def padded(self, n: int) -> bytes:
        data = self.take(n)
        self.take(-n % 4)
        return data

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
        dtype = np.dtype(NC_TYPES[nc_type][0])
        raw = self.padded(n * dtype.itemsize)
        if nc_type == NC_CHAR:
            return name, raw.decode("utf-8", errors="replace")
        values = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
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


def _array(v: _Variable, header: _Header, url: str) -> ManifestArray:
    big, default_fill = NC_TYPES[v.nc_type]
    dtype = np.dtype(big).newbyteorder("=") if big[0] == ">" else np.dtype(big)
    if v.is_record:
        chunks = (1, *v.shape[1:])
        offsets = v.begin + np.arange(v.shape[0], dtype=np.uint64) * np.uint64(header.recsize)
    else:
        chunks = v.shape
        offsets = np.full(1, v.begin, dtype=np.uint64)
    grid = grid_shape(v.shape, chunks)
    manifest = ChunkManifest.from_file(
        url, offsets=offsets.reshape(grid), lengths=np.full(grid, v.slice_bytes, dtype=np.uint64)
    )
    fill = v.attributes.get("_FillValue", default_fill)
    fill_value = np.asarray(fill).astype(dtype).reshape(-1)[0].item()
    codecs = [BytesCodec(endian="big")] if dtype.itemsize > 1 else []
    info = array_metadata(
        shape=v.shape,
        dtype=dtype,
        chunks=chunks,
        codecs=codecs,
        fill_value=fill_value,
        dimension_names=v.dims,
        attributes=encode_attributes(v.attributes, dtype),
    )
    return ManifestArray(info, manifest, name=v.name)
