"""`ManifestStore`: a read-only Zarr v3 store over a `ManifestGroup`.

Metadata documents are served from memory; a chunk key is looked up in its array's manifest and
served from the inline bytes, or fetched from the archival file through the registry's obstore
store as one range request. Missing chunks are absent keys, so zarr fills them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from typing import TYPE_CHECKING, Any

import numpy as np
import obstore
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.codecs import BytesCodec
from zarr.core.buffer import default_buffer_prototype

from vcube.errors import ReadOnlyError, SourceChangedError
from vcube.manifests.array import ManifestArray
from vcube.manifests.group import ManifestGroup
from vcube.manifests.manifest import MISSING
from vcube.readers import ObjectReader, ReadStats, translate_io_error
from vcube.registry import ObjectStoreRegistry, local_path

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    import xarray as xr
    from zarr.abc.store import ByteRequest
    from zarr.core.buffer import Buffer, BufferPrototype

__all__ = ["ManifestStore", "absolute_range"]

ZARR_JSON = "zarr.json"
_CHUNK_INDEX = re.compile(r"0|[1-9][0-9]*")


def absolute_range(offset: int, length: int, request: ByteRequest | None) -> tuple[int, int]:
    """Absolute `[start, end)` in a file of `request` applied to the chunk at `offset, length`."""
    match request:
        case None:
            start, end = 0, length
        case RangeByteRequest(start=s, end=e):
            start, end = s, min(e, length)
        case OffsetByteRequest(offset=s):
            start, end = s, length
        case SuffixByteRequest(suffix=n):
            start, end = max(length - n, 0), length
        case _:
            raise TypeError(f"unexpected byte request {request!r}")
    return offset + start, offset + max(end, start)


class ManifestStore(Store):
    """A read-only `zarr.abc.store.Store` serving a `ManifestGroup`.

    Parameters
    ----------
    group
        The virtual hierarchy to serve.
    registry
        Where chunk bytes are fetched; local `file://` paths need none.
    """

    _group: ManifestGroup
    _registry: ObjectStoreRegistry

    def __init__(
        self,
        group: ManifestGroup,
        *,
        registry: ObjectStoreRegistry | None = None,
        read_stats: ReadStats | None = None,
        prefetched: ObjectReader | None = None,
    ):
        super().__init__(read_only=True)
        # The parser's reader: chunks whose bytes it already fetched are served without a request.
        self._prefetched = prefetched
        self.read_stats = read_stats  # what the parse that made this store fetched
        self._group = group
        self._registry = registry or ObjectStoreRegistry()
        self._arrays = {p: n for p, n in group.walk() if isinstance(n, ManifestArray)}
        self._nodes = {_metadata_key(p): n for p, n in group.walk()}
        self._documents: dict[str, bytes] = {}  # built on first read: parsing needs none

    @classmethod
    def from_virtual_dataset(
        cls, ds: xr.Dataset, *, registry: ObjectStoreRegistry | None = None
    ) -> ManifestStore:
        """A store serving a virtual dataset as one Zarr group (loaded variables inline)."""
        return cls(ManifestGroup.from_virtual_dataset(ds), registry=registry)

    @property
    def group(self) -> ManifestGroup:
        return self._group

    @property
    def registry(self) -> ObjectStoreRegistry:
        return self._registry

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ManifestStore) and other._group is self._group

    def __repr__(self) -> str:
        return f"ManifestStore(arrays={list(self._arrays)})"

    # -- reads ---------------------------------------------------------------------------------

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        if key in self._nodes:
            doc = self._document(key)
            start, end = absolute_range(0, len(doc), byte_range)
            return prototype.buffer.from_bytes(doc[start:end])
        located = self._locate(key)
        if located is None:
            return None
        array, index = located
        ref = array.manifest[index]
        if ref is None:
            return None
        start, end = absolute_range(ref.offset, ref.length, byte_range)
        if ref.data is not None:
            return prototype.buffer.from_bytes(ref.data[start:end])
        assert ref.path is not None
        data = await self._fetch(ref.path, start, end)
        return prototype.buffer.from_bytes(data)

    async def _fetch(self, url: str, start: int, end: int) -> Any:
        if end <= start:
            return b""
        held = self._held(url, start, end)
        if held is not None:
            return held
        try:
            store, path = self._registry.resolve(url)
            data = await obstore.get_range_async(store, path, start=start, end=end)
        except Exception as err:
            raise translate_io_error(err, url) from err
        return _checked(data, url, start, end)

    def _held(self, url: str, start: int, end: int) -> bytes | None:
        """Bytes `[start, end)` of `url` if the parser already fetched them, else None."""
        if self._prefetched is not None and url == self._prefetched.url:
            return self._prefetched.cached(start, end)
        return None

    def _fetch_now(self, url: str, start: int, end: int) -> Any:
        """Bytes `[start, end)` of `url` when they need no request: already fetched by the
        parser, or in a local file (a plain read, cheaper than a trip through the event loop for
        the few small chunks of a coordinate); else None."""
        if end <= start:
            return b""
        held = self._held(url, start, end)
        if held is not None:
            return held
        path = local_path(url)
        if path is None or self._registry.resolve_with_prefix(url)[2] is not None:
            return None
        try:
            with open(path, "rb") as file:
                return _checked(os.pread(file.fileno(), end - start, start), url, start, end)
        except OSError as err:
            raise translate_io_error(err, url) from err

    async def read_plain(self, path: str, max_chunks: int = 64) -> np.ndarray[Any, Any] | None:
        """The values of the array at `path` when its chunks are stored plain (the `bytes` codec
        alone, few chunks), read without zarr's codec pipeline; None otherwise. Loading small
        coordinates this way costs a fraction of a zarr read."""
        array = self._plain_array(path, max_chunks)
        if array is None:
            return None
        refs = _chunk_refs(array)
        raws = [
            ref.data
            if ref.data is not None
            else await self._fetch(ref.path or "", ref.offset, ref.offset + ref.length)
            for _, ref in refs
        ]
        return _assemble(array, [index for index, _ in refs], raws)

    def read_plain_now(self, path: str, max_chunks: int = 64) -> np.ndarray[Any, Any] | None:
        """`read_plain` without the event loop, when no chunk needs a request; else None."""
        array = self._plain_array(path, max_chunks)
        if array is None:
            return None
        refs = _chunk_refs(array)
        raws = [
            ref.data
            if ref.data is not None
            else self._fetch_now(ref.path or "", ref.offset, ref.offset + ref.length)
            for _, ref in refs
        ]
        if any(raw is None for raw in raws):
            return None
        return _assemble(array, [index for index, _ in refs], raws)

    def _plain_array(self, path: str, max_chunks: int) -> ManifestArray | None:
        array = self._arrays.get(path)
        if (
            array is None
            or len(array.codecs) != 1
            or not isinstance(array.codecs[0], BytesCodec)
            or array.dtype.kind not in "biufcSV"
            or array.manifest.path_ids.size > max_chunks
        ):
            return None
        return array

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    def _document(self, key: str) -> bytes:
        if key not in self._documents:
            self._documents[key] = _document(self._nodes[key])
        return self._documents[key]

    async def exists(self, key: str) -> bool:
        if key in self._nodes:
            return True
        located = self._locate(key)
        return located is not None and located[0].manifest[located[1]] is not None

    def _locate(self, key: str) -> tuple[ManifestArray, tuple[int, ...]] | None:
        """The array and grid index of a chunk key, or None when `key` is not a chunk key."""
        if key.endswith("/c") and key[:-2] in self._arrays:
            array, parts = self._arrays[key[:-2]], []
        else:
            path, sep, rest = key.rpartition("/c/")
            if not sep:
                if not key.startswith("c/"):
                    return None
                path, rest = "", key.removeprefix("c/")
            array_or_none = self._arrays.get(path)
            if array_or_none is None:
                return None
            array, parts = array_or_none, rest.split("/")
        if len(parts) != array.ndim or not all(_CHUNK_INDEX.fullmatch(p) for p in parts):
            return None
        index = tuple(int(p) for p in parts)
        if not all(i < n for i, n in zip(index, array.manifest.grid_shape, strict=True)):
            return None
        return array, index

    # -- listing -------------------------------------------------------------------------------

    @property
    def supports_listing(self) -> bool:
        return True

    async def list(self) -> AsyncIterator[str]:
        for key in self._nodes:
            yield key
        for path, array in self._arrays.items():
            for key in _chunk_keys(path, array):
                yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        async for key in self.list():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/")
        try:
            node = self._group.get(prefix)
        except KeyError:
            node = None
        # Groups and arrays answer from the tree: listing every chunk key would cost O(chunks).
        if isinstance(node, ManifestGroup):
            yield ZARR_JSON
            for name in (*node.arrays, *node.groups):
                yield name
            return
        if isinstance(node, ManifestArray):
            yield ZARR_JSON
            if node.manifest.nrefs:
                yield "c"
            return
        base = f"{prefix}/" if prefix else ""
        seen: set[str] = set()
        async for key in self.list_prefix(base):
            child = key[len(base) :].split("/", 1)[0]
            if child not in seen:
                seen.add(child)
                yield child

    # -- writes are refused --------------------------------------------------------------------

    @property
    def supports_writes(self) -> bool:
        return False

    @property
    def supports_deletes(self) -> bool:
        return False

    async def set(self, key: str, value: Buffer) -> None:
        raise ReadOnlyError(f"ManifestStore is read-only: cannot write {key!r}")

    async def delete(self, key: str) -> None:
        raise ReadOnlyError(f"ManifestStore is read-only: cannot delete {key!r}")


def _checked(data: Any, url: str, start: int, end: int) -> Any:
    if len(data) != end - start:
        raise SourceChangedError(
            f"{url}: expected {end - start} bytes at offset {start}, got {len(data)}; did the "
            f"file change after it was virtualized? Virtualize it again."
        )
    return data


def _chunk_refs(array: ManifestArray) -> list[tuple[tuple[int, ...], Any]]:
    """The grid index and reference of every chunk that is not missing."""
    refs = ((index, array.manifest[index]) for index in np.ndindex(array.manifest.grid_shape))
    return [(index, ref) for index, ref in refs if ref is not None]


def _assemble(
    array: ManifestArray, indexes: list[tuple[int, ...]], raws: list[Any]
) -> np.ndarray[Any, Any]:
    """The array's values from the raw bytes of its plain chunks (missing ones read as fill)."""
    codec = array.codecs[0]
    assert isinstance(codec, BytesCodec)
    dtype = array.dtype.newbyteorder(">" if codec.endian == "big" else "<")
    out = np.full(array.shape, array.fill_value, dtype=array.dtype.newbyteorder("="))
    chunks = array.chunks
    for index, raw in zip(indexes, raws, strict=True):
        block = np.frombuffer(raw, dtype=dtype).reshape(chunks)
        target = tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(index, chunks, array.shape, strict=True)
        )
        out[target] = block[tuple(slice(0, s.stop - s.start) for s in target)]
    return out


def _metadata_key(path: str) -> str:
    return f"{path}/{ZARR_JSON}" if path else ZARR_JSON


def _document(node: ManifestGroup | ManifestArray) -> bytes:
    if isinstance(node, ManifestArray):
        doc: dict[str, Any] = node.metadata.to_dict()
    else:
        doc = {"zarr_format": 3, "node_type": "group", "attributes": node.attributes}
    return json.dumps(doc, allow_nan=True).encode()


def _chunk_keys(path: str, array: ManifestArray) -> list[str]:
    base = f"{path}/c" if path else "c"
    if array.ndim == 0:
        return [base] if array.manifest.path_ids.item() != MISSING else []
    present = np.argwhere(array.manifest.path_ids != MISSING)
    return [base + "/" + "/".join(map(str, row)) for row in present.tolist()]
