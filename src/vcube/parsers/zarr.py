"""`ZarrParser`: an existing Zarr v2 or v3 store as virtual Zarr v3 arrays whose chunks are the
store's own chunk objects (offset 0, length the object's size).

One listing of the store's prefix gives every object and its size, so parsing costs the listing
(paginated: about one request per thousand objects) plus the metadata documents: one when the
store has consolidated metadata (v2 `.zmetadata`, or `consolidated_metadata` in the root
`zarr.json`), else one per group and array, fetched concurrently. Chunk keys are parsed into grid
indices with numpy string kernels over each array's keys at once.

Zarr v2 arrays become Zarr v3 arrays: the v2 filters become array->array codecs (numcodecs ones
as zarr's `numcodecs.*` codecs), then the `bytes` codec with the dtype's byte order (or
`vlen-utf8`), then the compressor; order "F" becomes a `transpose` codec. As xarray reads it,
the v2 `fill_value` is the `_FillValue` attribute and `_ARRAY_DIMENSIONS` the dimension names.
Sharded v3 arrays keep the sharding codec: each shard object is one chunk of the shard grid.
"""

from __future__ import annotations

import asyncio
import copy
import json
import posixpath
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import quote, unquote

import numpy as np
import obstore
from numpy.dtypes import StringDType
from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    GzipCodec,
    TransposeCodec,
    VLenBytesCodec,
    VLenUTF8Codec,
    ZstdCodec,
)
from zarr.core.metadata.v2 import ArrayV2Metadata
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync
from zarr.errors import UnknownCodecError
from zarr.registry import get_codec_class

from vcube.errors import SourceNotFoundError, UnsupportedFeatureError, UnsupportedFormatError
from vcube.manifests import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore
from vcube.manifests.array_api import grid_shape
from vcube.manifests.attrs import FILL_VALUE, encode_attributes
from vcube.manifests.manifest import MISSING
from vcube.manifests.metadata import ArrayInfo, array_metadata
from vcube.readers import ReadStats, translate_io_error
from vcube.registry import ObjectStoreRegistry, normalize_url

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from numpy.typing import NDArray
    from obstore.store import ObjectStore
    from zarr.abc.codec import Codec

__all__ = ["ZarrParser"]

ZARR_JSON: Final = "zarr.json"
ZMETADATA: Final = ".zmetadata"
V2_DOCUMENTS: Final = frozenset({".zgroup", ".zarray", ".zattrs"})
DOCUMENTS: Final = V2_DOCUMENTS | {ZARR_JSON, ZMETADATA}
ARRAY_DIMENSIONS: Final = "_ARRAY_DIMENSIONS"
BLOSC_SHUFFLES: Final = ("noshuffle", "shuffle", "bitshuffle")
STRINGS: Final = StringDType()
NUMERIC_KINDS: Final = "biufc"
MAX_CONCURRENT_GETS: Final = 64  # metadata documents fetched at once
MAX_INDEX_DIGITS: Final = 18  # a chunk index that fits an int64

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
        children: dict[str, list[str]] = defaultdict(list)
        for path in nodes:
            if path:
                children[posixpath.dirname(path)].append(path)

        def build(path: str) -> ManifestGroup:
            arrays, groups = {}, {}
            for child in sorted(children[path]):
                name, node = posixpath.basename(child), nodes[child]
                if node.kind == "group":
                    groups[name] = build(child)
                elif name not in self.drop:
                    arrays[name] = self.array(child, node)
            node = nodes[path]
            attrs = node.attributes if node.zarr_format == 2 else node.document.get("attributes")
            return ManifestGroup(arrays=arrays, groups=groups, attributes=dict(attrs or {}))

        return build("")

    def array(self, path: str, node: _Node) -> ManifestArray:
        where = f"{self.url}: array {path!r}" if path else self.url
        if node.zarr_format == 3:
            info, encoding = _v3_info(node.document, where)
        else:
            info, encoding = _v2_info(node.document, node.attributes, where)
        try:
            info.to_zarr()  # zarr's own validation, so a bad array fails here and not on read
        except (ValueError, TypeError) as err:
            raise UnsupportedFeatureError(
                f"{where}: cannot be described as a Zarr v3 array ({err}); drop it with "
                f"drop_variables=[{posixpath.basename(path)!r}]"
            ) from err
        keys, sizes = self.listing.under(path)
        base = f"{self.url}/{quote(path)}/" if path else f"{self.url}/"
        manifest = _manifest(keys, sizes, encoding, grid_shape(info.shape, info.chunks), base)
        return ManifestArray(info, manifest, name=path or None)


# -- chunk keys --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _KeyEncoding:
    """How chunk grid indices are spelled: `c/0/1` (v3 default) or `0.1` (v2)."""

    prefix: Literal["c", ""]
    separator: str

    @classmethod
    def from_json(cls, doc: object, where: str) -> _KeyEncoding:
        name = doc.get("name") if isinstance(doc, dict) else doc
        config = (doc.get("configuration") if isinstance(doc, dict) else None) or {}
        separator = config.get("separator", "/" if name == "default" else ".")
        if name not in ("default", "v2") or separator not in ("/", "."):
            raise UnsupportedFeatureError(
                f"{where}: unsupported chunk key encoding {doc!r} (vcube reads 'default' and "
                f"'v2' with separator '/' or '.')"
            )
        return cls("c" if name == "default" else "", separator)


def _manifest(
    keys: NDArray[Any],
    sizes: NDArray[np.uint64],
    encoding: _KeyEncoding,
    grid: tuple[int, ...],
    base: str,
) -> ChunkManifest:
    """The references of the chunk objects among `keys` (relative to the array), every one from
    offset 0 for its whole size; chunks that were never written stay missing."""
    indices, ok = _grid_indices(keys, encoding, grid)
    path_ids = np.full(grid, MISSING, dtype=np.int32)
    lengths = np.zeros(grid, dtype=np.uint64)
    # Zarr ignores objects outside the grid (left behind when an array shrinks); so do we.
    ok &= np.all(indices < np.array(grid, dtype=np.int64), axis=1)
    present = indices[ok]
    flat = np.ravel_multi_index(tuple(present.T), grid) if grid else np.zeros(len(present), np.intp)
    path_ids.reshape(-1)[flat] = np.arange(len(flat), dtype=np.int32)
    lengths.reshape(-1)[flat] = sizes[ok]
    urls = np.strings.add(np.asarray(base, dtype=STRINGS), keys[ok])
    return ChunkManifest(
        paths=tuple(urls.tolist()),
        path_ids=path_ids,
        offsets=np.zeros(grid, dtype=np.uint64),
        lengths=lengths,
    )


def _grid_indices(
    keys: NDArray[Any], encoding: _KeyEncoding, grid: tuple[int, ...]
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Grid indices parsed from chunk keys, one row per key, and which keys are chunk keys."""
    ndim = len(grid)
    indices = np.zeros((keys.size, ndim), dtype=np.int64)
    if ndim == 0:  # a scalar's one chunk is "c" (v3 default) or "0" (v2)
        return indices, keys == (encoding.prefix or "0")
    sep = np.asarray(encoding.separator, dtype=STRINGS)
    ok = np.ones(keys.size, dtype=bool)
    rest = keys
    if encoding.prefix:
        head, found, rest = np.strings.partition(rest, sep)
        ok &= (head == encoding.prefix) & (found == sep)
    zero = np.asarray("0", dtype=STRINGS)
    for axis in range(ndim):
        head, found, rest = np.strings.partition(rest, sep)
        # Canonical decimal numbers only, as zarr writes them: no sign, no leading zeros.
        number = (
            np.strings.isdecimal(head)
            & (np.strings.str_len(head) <= MAX_INDEX_DIGITS)
            & ((head == zero) | ~np.strings.startswith(head, zero))
        )
        last = axis == ndim - 1
        ok &= number & ((found == "") if last else (found == sep))
        indices[:, axis] = np.where(number, head, zero).astype(np.int64)
    return indices, ok


# -- array metadata ----------------------------------------------------------------------------


def _v3_info(doc: JSONDict, where: str) -> tuple[ArrayInfo, _KeyEncoding]:
    grid = doc.get("chunk_grid")
    grid_name = grid.get("name") if isinstance(grid, dict) else grid
    if isinstance(grid_name, str) and grid_name != "regular":
        raise UnsupportedFeatureError(
            f"{where}: chunk grid {grid_name!r} is not supported (only 'regular' chunk grids "
            f"map to a chunk manifest)"
        )
    if doc.get("storage_transformers"):
        raise UnsupportedFeatureError(
            f"{where}: storage transformers {doc['storage_transformers']!r} are not supported"
        )
    if "chunk_key_encoding" in doc:  # zarr refuses encodings it does not know: say why first
        _KeyEncoding.from_json(doc["chunk_key_encoding"], where)
    try:
        meta = ArrayV3Metadata.from_dict(copy.deepcopy(doc))
    except UnknownCodecError as err:
        raise _unknown_codec(where, err) from err
    except (ValueError, TypeError, KeyError) as err:
        raise UnsupportedFormatError(f"{where}: invalid Zarr v3 array metadata ({err})") from err
    encoding = _KeyEncoding.from_json(meta.chunk_key_encoding.to_dict(), where)
    # Each shard object is one chunk of the manifest: `from_zarr` takes the shard grid.
    return ArrayInfo.from_zarr(meta), encoding


def _v2_info(doc: JSONDict, attrs: JSONDict, where: str) -> tuple[ArrayInfo, _KeyEncoding]:
    try:
        meta = ArrayV2Metadata.from_dict({**doc, "attributes": {}})
    except UnknownCodecError as err:
        raise _unknown_codec(where, err) from err
    except (ValueError, TypeError, KeyError) as err:
        raise UnsupportedFormatError(f"{where}: invalid Zarr v2 array metadata ({err})") from err
    stored = meta.dtype.to_native_dtype()
    dtype = stored.newbyteorder("=") if stored.byteorder in "<>" else stored
    codecs: list[Codec] = []
    if meta.order == "F" and len(meta.shape) > 1:
        # A Fortran-ordered chunk is the C-ordered chunk of the transposed array.
        codecs.append(TransposeCodec(order=tuple(reversed(range(len(meta.shape))))))
    codecs += _v2_pipeline(meta, stored, where)
    attributes = {k: v for k, v in attrs.items() if k != ARRAY_DIMENSIONS}
    # xarray reads a v2 fill_value as _FillValue; in Zarr v3 it decodes that attribute for
    # numbers and booleans only.
    if meta.fill_value is not None and dtype.kind in NUMERIC_KINDS:
        attributes[FILL_VALUE] = meta.fill_value
    dims = attrs.get(ARRAY_DIMENSIONS)
    info = array_metadata(
        shape=meta.shape,
        dtype=dtype,
        chunks=meta.chunks,
        codecs=codecs,
        fill_value=meta.fill_value,
        dimension_names=[str(d) for d in dims] if isinstance(dims, list) else None,
        attributes=encode_attributes(attributes, dtype),
    )
    encoding = _KeyEncoding("", meta.dimension_separator)
    return info, encoding


def _v2_pipeline(meta: ArrayV2Metadata, stored: np.dtype[Any], where: str) -> list[Codec]:
    """v2 filters and compressor as v3 codecs: array->array filters, one array->bytes codec
    (`bytes`, or the `vlen-*` filter of an object array), then bytes->bytes codecs."""
    to_array: list[Codec] = []
    serializer: Codec | None = None
    to_bytes: list[Codec] = []
    steps = [*(meta.filters or ()), *([meta.compressor] if meta.compressor else [])]
    for i, step in enumerate(steps):
        config = dict(step.get_config())
        is_compressor = meta.compressor is not None and i == len(steps) - 1
        codec = _v2_codec(config, stored, where, compressor=is_compressor)
        if isinstance(codec, ArrayArrayCodec) and serializer is None and not to_bytes:
            to_array.append(codec)
        elif isinstance(codec, ArrayBytesCodec) and serializer is None and not to_bytes:
            serializer = codec
        elif isinstance(codec, BytesBytesCodec):
            to_bytes.append(codec)
        else:
            raise UnsupportedFeatureError(
                f"{where}: the Zarr v2 filter {config.get('id')!r} follows a filter that "
                f"produces bytes, which Zarr v3 codecs cannot express"
            )
    if serializer is None:
        serializer = BytesCodec(endian=_endian(stored))
    return [*to_array, serializer, *to_bytes]


def _v2_codec(config: JSONDict, stored: np.dtype[Any], where: str, *, compressor: bool) -> Codec:
    """The Zarr v3 codec decoding what the numcodecs codec `config` encoded."""
    codec_id = str(config.get("id"))
    match codec_id:
        case "blosc" if compressor:
            shuffle = int(config.get("shuffle", 1))
            if shuffle < 0:  # numcodecs' AUTOSHUFFLE: bit-shuffle for 1-byte items
                shuffle = 2 if stored.itemsize == 1 else 1
            return BloscCodec(
                typesize=max(stored.itemsize, 1),
                cname=config.get("cname", "lz4"),
                clevel=int(config.get("clevel", 5)),
                shuffle=BLOSC_SHUFFLES[shuffle],
                blocksize=int(config.get("blocksize", 0)),
            )
        case "zstd" if compressor:
            level, checksum = int(config.get("level", 0)), bool(config.get("checksum", False))
            return ZstdCodec(level=level, checksum=checksum)
        case "gzip" if compressor:
            return GzipCodec(level=int(config.get("level", 1)))
        case "vlen-utf8":
            return VLenUTF8Codec()
        case "vlen-bytes":
            return VLenBytesCodec()
    try:
        wrapper: Callable[..., Codec] = get_codec_class(f"numcodecs.{codec_id}")
    except (KeyError, UnknownCodecError) as err:
        raise _unknown_codec(where, err, codec_id) from err
    return wrapper(**config)


def _unknown_codec(where: str, err: Exception, name: str | None = None) -> UnsupportedFeatureError:
    what = f"the codec {name!r}" if name else f"a codec ({err})"
    return UnsupportedFeatureError(
        f"{where}: uses {what}, which no installed Zarr v3 codec decodes; install the package "
        f"that provides it, or drop the array with drop_variables=[...]"
    )


def _endian(dtype: np.dtype[Any]) -> Literal["little", "big"] | None:
    if dtype.itemsize <= 1 or dtype.byteorder == "|":
        return None
    if dtype.byteorder == "=":
        return "little" if np.little_endian else "big"
    return "big" if dtype.byteorder == ">" else "little"
