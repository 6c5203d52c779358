"""`ZarrParser`: an existing Zarr v2 or v3 store as virtual Zarr v3 arrays whose chunks are the
store's own chunk objects (offset 0, length the object's size).

One listing of the store's prefix gives every object and its size, so parsing costs the listing
(paginated: about one request per thousand objects) plus the metadata documents: one when the
store has consolidated metadata (v2 `.zmetadata`, or `consolidated_metadata` in the root
`zarr.json`), else one per group and array, fetched concurrently. Chunk keys are parsed into grid
positions over each array's keys at once.

Array metadata becomes Zarr v3 metadata as `vcube.parsers.zarr_metadata` says (shared with the
Kerchunk parsers): v2 filters and compressor as v3 codecs, order "F" as a `transpose` codec, the
v2 `fill_value` as the `_FillValue` attribute and `_ARRAY_DIMENSIONS` as the dimension names, as
xarray reads them. Sharded v3 arrays keep the sharding codec: each shard object is one chunk of
the shard grid.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import quote, unquote

import numpy as np
import obstore
from numpy.dtypes import StringDType
from zarr.core.sync import sync

from vcube.errors import SourceNotFoundError, UnsupportedFormatError
from vcube.manifests import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore
from vcube.manifests.array_api import grid_shape
from vcube.manifests.manifest import MISSING
from vcube.parsers.zarr_metadata import KeyEncoding, array_info, chunk_positions, group_tree
from vcube.readers import ReadStats, translate_io_error
from vcube.registry import ObjectStoreRegistry, normalize_url

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from numpy.typing import NDArray
    from obstore.store import ObjectStore

__all__ = ["ZarrParser"]

ZARR_JSON: Final = "zarr.json"
ZMETADATA: Final = ".zmetadata"
V2_DOCUMENTS: Final = frozenset({".zgroup", ".zarray", ".zattrs"})
DOCUMENTS: Final = V2_DOCUMENTS | {ZARR_JSON, ZMETADATA}
STRINGS: Final = StringDType()
MAX_CONCURRENT_GETS: Final = 64  # metadata documents fetched at once

type JSONDict = dict[str, Any]


@dataclass(frozen=True)
class ZarrParser:
    """Parse a Zarr v2 or v3 store (a directory, or a prefix in object storage) into a
    `ManifestStore` whose chunks are the store's chunk objects.

    Parameters
    ----------
    group
        Path of the group to open (default: the root group); its subgroups are kept.
    drop_variables
        Arrays to leave out (by name, in any group).
    """

    group: str | None = None
    drop_variables: Collection[str] = ()
    stats: ReadStats = field(default_factory=ReadStats, compare=False)
    """Requests and bytes of every parse made with this parser (in this process): one request
    per listing call and per metadata document."""

    def __call__(self, url: str, registry: ObjectStoreRegistry | None = None) -> ManifestStore:
        url = normalize_url(url).rstrip("/")
        registry = registry or ObjectStoreRegistry()
        stats = ReadStats()
        group = (self.group or "").strip("/")
        top = f"{url}/{quote(group)}" if group else url
        store, prefix = registry.resolve(top)
        listing = _Listing.read(store, prefix, top, stats)
        where = f"{url}: group {group!r}" if group else url
        nodes = _Documents(store, prefix, top, stats).nodes(listing, where)
        root = _Builder(top, listing, set(self.drop_variables)).tree(nodes)
        self.stats.merge(stats)
        return ManifestStore(root, registry=registry, read_stats=stats)


# -- listing -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Listing:
    """Every object under the store's prefix: keys relative to it (sorted), and sizes."""

    keys: NDArray[Any]  # StringDType
    sizes: NDArray[np.uint64]
    documents: frozenset[str]  # keys of metadata documents

    @classmethod
    def read(cls, store: ObjectStore, prefix: str, url: str, stats: ReadStats) -> _Listing:
        paths: list[str] = []
        sizes: list[int] = []
        try:
            for batch in obstore.list(store, prefix=prefix or None, chunk_size=10_000):
                paths.extend(meta["path"] for meta in batch)
                sizes.extend(meta["size"] for meta in batch)
        except Exception as err:
            raise translate_io_error(err, url) from err
        stats.add(url, 0)
        keys = np.array(paths, dtype=STRINGS)
        if prefix:
            keys = np.strings.slice(keys, len(prefix.rstrip("/")) + 1, None)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        names = np.strings.rpartition(keys, np.asarray("/", dtype=STRINGS))[2]
        is_doc = np.isin(names, np.array(sorted(DOCUMENTS), dtype=STRINGS))
        return cls(
            keys=keys,
            sizes=np.array(sizes, dtype=np.uint64)[order],
            documents=frozenset(keys[is_doc].tolist()),
        )

    def under(self, path: str) -> tuple[NDArray[Any], NDArray[np.uint64]]:
        """Keys below `path` (relative to it) and their sizes: a slice of the sorted listing."""
        if not path:
            return self.keys, self.sizes
        # Keys under "a/" sort from "a/" to just before "a0" ("0" follows "/").
        lo, hi = np.searchsorted(self.keys, np.array([f"{path}/", f"{path}0"], dtype=STRINGS))
        return np.strings.slice(self.keys[lo:hi], len(path) + 1, None), self.sizes[lo:hi]


# -- metadata documents ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    """A group or array as its metadata documents describe it."""

    kind: Literal["group", "array"]
    zarr_format: Literal[2, 3]
    document: JSONDict  # zarr.json, or .zarray / .zgroup
    attributes: JSONDict  # v2 .zattrs (v3 attributes are in the document)


class _Documents:
    """Reads metadata documents (consolidated when the store has them) into nodes by path."""

    def __init__(self, store: ObjectStore, prefix: str, url: str, stats: ReadStats) -> None:
        self.store = store
        self.prefix = prefix.rstrip("/")
        self.url = url
        self.stats = stats

    def nodes(self, listing: _Listing, where: str) -> dict[str, _Node]:
        docs = listing.documents
        if ZARR_JSON in docs:
            return self._v3(docs)
        if ZMETADATA in docs:
            meta = self.fetch([ZMETADATA])[0]
            if "record_size" in meta:
                raise UnsupportedFormatError(
                    f"{self.url}: a Kerchunk Parquet reference store, not a Zarr store; open it "
                    f"with KerchunkParquetParser"
                )
            consolidated = meta.get("metadata")
            if not isinstance(consolidated, dict):
                raise UnsupportedFormatError(f"{self.url}/{ZMETADATA}: no 'metadata' object")
            return _v2_nodes(consolidated, self.url)
        if ".zgroup" in docs or ".zarray" in docs:
            keys = sorted(k for k in docs if posixpath.basename(k) in V2_DOCUMENTS)
            return _v2_nodes(dict(zip(keys, self.fetch(keys), strict=True)), self.url)
        if not listing.keys.size:
            raise SourceNotFoundError(f"{where}: not found (no object has this prefix)")
        raise UnsupportedFormatError(
            f"{where}: no Zarr metadata (zarr.json, .zgroup, .zarray or .zmetadata) at the top of "
            f"this prefix ({listing.keys.size} objects below it). Give the URL of a Zarr store's "
            f"root, or group=... for a group inside one."
        )

    def _v3(self, docs: frozenset[str]) -> dict[str, _Node]:
        root = self.fetch([ZARR_JSON])[0]
        documents = {"": root}
        consolidated = _consolidated_v3(root)
        if consolidated is not None:
            documents.update(consolidated)
        else:
            keys = sorted(k for k in docs if k.endswith(f"/{ZARR_JSON}"))
            paths = [posixpath.dirname(k) for k in keys]
            documents.update(zip(paths, self.fetch(keys), strict=True))
        return {path: _v3_node(doc, self._url(path)) for path, doc in documents.items()}

    def fetch(self, keys: Sequence[str]) -> list[JSONDict]:
        """The JSON documents at `keys`, fetched concurrently."""
        raw = sync(self._fetch_all(keys))
        out = []
        for key, data in zip(keys, raw, strict=True):
            self.stats.add(self._url(key), len(data))
            try:
                doc = json.loads(data)
            except ValueError as err:
                raise UnsupportedFormatError(
                    f"{self._url(key)}: not a valid JSON document ({err}); the store's metadata "
                    f"is corrupt"
                ) from err
            if not isinstance(doc, dict):
                raise UnsupportedFormatError(f"{self._url(key)}: not a JSON object")
            out.append(doc)
        return out

    async def _fetch_all(self, keys: Sequence[str]) -> list[bytes]:
        limit = asyncio.Semaphore(MAX_CONCURRENT_GETS)

        async def get(key: str) -> bytes:
            path = f"{self.prefix}/{key}" if self.prefix else key
            try:
                async with limit:
                    result = await obstore.get_async(self.store, path)
                    return bytes(await result.bytes_async())
            except Exception as err:
                raise translate_io_error(err, self._url(key)) from err

        return list(await asyncio.gather(*(get(k) for k in keys)))

    def _url(self, key: str) -> str:
        return f"{self.url}/{key}" if key else self.url


def _consolidated_v3(root: JSONDict) -> dict[str, JSONDict] | None:
    """Documents by path from a v3 group's inline consolidated metadata (flat, as zarr writes
    it, or nested per group), or None when it has none."""
    meta = root.get("consolidated_metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("metadata"), dict):
        return None
    out: dict[str, JSONDict] = {}
    for path, doc in meta["metadata"].items():
        if isinstance(doc, dict):
            out[path] = doc
            nested = _consolidated_v3(doc)
            out.update({f"{path}/{k}": v for k, v in (nested or {}).items()})
    return out


def _v3_node(doc: JSONDict, url: str) -> _Node:
    kind = doc.get("node_type")
    if doc.get("zarr_format") != 3 or kind not in ("group", "array"):
        raise UnsupportedFormatError(
            f"{url}/{ZARR_JSON}: not Zarr v3 metadata (zarr_format {doc.get('zarr_format')!r}, "
            f"node_type {kind!r})"
        )
    return _Node(kind, 3, doc, {})


def _v2_nodes(documents: dict[str, Any], url: str) -> dict[str, _Node]:
    """Nodes from v2 documents by key (`a/.zarray`, `a/.zattrs`, `.zgroup`...)."""
    by_dir: dict[str, dict[str, Any]] = defaultdict(dict)
    for key, doc in documents.items():
        directory, _, name = key.rpartition("/")
        if name in V2_DOCUMENTS:
            by_dir[directory][name] = doc
    nodes = {}
    for path, docs in by_dir.items():
        attrs = docs.get(".zattrs") or {}
        if not isinstance(attrs, dict):
            raise UnsupportedFormatError(f"{url}/{path}/.zattrs: not a JSON object")
        if isinstance(docs.get(".zarray"), dict):
            nodes[path] = _Node("array", 2, docs[".zarray"], attrs)
        elif isinstance(docs.get(".zgroup"), dict):
            nodes[path] = _Node("group", 2, docs[".zgroup"], attrs)
    return nodes


# -- the tree ----------------------------------------------------------------------------------


class _Builder:
    """Builds the `ManifestGroup` tree from nodes and the listing."""

    def __init__(self, url: str, listing: _Listing, drop: set[str]) -> None:
        self.url = url
        self.listing = listing
        self.drop = drop

    def tree(self, nodes: dict[str, _Node]) -> ManifestGroup:
        root = nodes.get("")
        if root is None:
            raise UnsupportedFormatError(
                f"{self.url}: the consolidated metadata has no root group (.zgroup) or array"
            )
        if root.kind == "array":  # a store that is one array: a group holding it
            name = unquote(posixpath.basename(self.url)).removesuffix(".zarr") or "data"
            arrays = {} if name in self.drop else {name: self.array("", root)}
            return ManifestGroup(arrays=arrays)
        paths = sorted(nodes)
        groups = {p: _attributes(nodes[p]) for p in paths if nodes[p].kind == "group"}
        arrays = {
            path: self.array(path, nodes[path])
            for path in paths
            if nodes[path].kind == "array" and posixpath.basename(path) not in self.drop
        }
        return group_tree(arrays, groups)

    def array(self, path: str, node: _Node) -> ManifestArray:
        where = f"{self.url}: array {path!r}" if path else self.url
        name = posixpath.basename(path)
        info, encoding = array_info(
            node.zarr_format, node.document, node.attributes, where=where, name=name
        )
        keys, sizes = self.listing.under(path)
        base = f"{self.url}/{quote(path)}/" if path else f"{self.url}/"
        manifest = _manifest(keys, sizes, encoding, grid_shape(info.shape, info.chunks), base)
        return ManifestArray(info, manifest, name=path or None)


def _attributes(node: _Node) -> JSONDict:
    return node.attributes if node.zarr_format == 2 else node.document.get("attributes") or {}


def _manifest(
    keys: NDArray[Any],
    sizes: NDArray[np.uint64],
    encoding: KeyEncoding,
    grid: tuple[int, ...],
    base: str,
) -> ChunkManifest:
    """The references of the chunk objects among `keys` (relative to the array), every one from
    offset 0 for its whole size; chunks that were never written stay missing."""
    # Zarr ignores objects outside the grid (left behind when an array shrinks); so do we.
    positions, _, ok = chunk_positions(keys, encoding, grid)
    path_ids = np.full(grid, MISSING, dtype=np.int32)
    lengths = np.zeros(grid, dtype=np.uint64)
    flat = positions[ok]
    path_ids.reshape(-1)[flat] = np.arange(len(flat), dtype=np.int32)
    lengths.reshape(-1)[flat] = sizes[ok]
    urls = np.strings.add(np.asarray(base, dtype=STRINGS), keys[ok])
    return ChunkManifest(
        paths=tuple(urls.tolist()),
        path_ids=path_ids,
        offsets=np.zeros(grid, dtype=np.uint64),
        lengths=lengths,
    )
