"""`KerchunkJSONParser` and `KerchunkParquetParser`: Kerchunk references as virtual Zarr arrays.

Kerchunk references map Zarr keys to values: metadata documents (Zarr v2 `.zgroup`, `.zattrs`,
`.zarray`, or Zarr v3 `zarr.json`), chunk references `[url, offset, length]` or `[url]` (a whole
file), and inline chunk bytes (text, or base64 after a `base64:` prefix). JSON holds them in one
document: spec version 0 is the mapping itself; version 1 has it under `refs`, with `templates`
substituted into URLs and `gen` entries expanded. Parquet uses the layout of fsspec's
`LazyReferenceMapper`: the metadata in `.zmetadata`, the chunk references of array `a` in
`a/refs.<i>.parq`, row `j` of record `i` being chunk `i * record_size + j` of the chunk grid in C
order.

Zarr v2 metadata becomes Zarr v3: the filters and compressor become v3 codecs, and a v2
`fill_value` also becomes the `_FillValue` attribute, since xarray reads it so from Zarr v2.

Manifests are built column-wise: JSON keys are grouped by array in one pass over the mapping, then
each array's chunk keys are parsed by Arrow and its columns filled by numpy. Parquet records are
read column-wise with pyarrow, only those of the arrays asked for. Relative URLs are resolved
against `fs_root`, by default the folder that holds the references.
"""

from __future__ import annotations

import ast
import base64
import json
import math
import operator
import posixpath
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import obstore
import pandas as pd
from numpy.dtypes import StringDType
from obstore.exceptions import NotFoundError
from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    Crc32cCodec,
    GzipCodec,
    TransposeCodec,
    VLenUTF8Codec,
    ZstdCodec,
)
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
from zarr.core.dtype import get_data_type_from_json
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.registry import get_codec_class

from vcube.errors import (
    SourceNotFoundError,
    TransientIOError,
    UnsupportedFeatureError,
    UnsupportedFormatError,
    VcubeError,
)
from vcube.manifests import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore
from vcube.manifests.array_api import grid_shape
from vcube.manifests.attrs import FILL_VALUE, encode_attributes
from vcube.manifests.manifest import INLINE, MISSING
from vcube.manifests.metadata import ArrayInfo, array_metadata
from vcube.readers import ReadStats, translate_io_error
from vcube.registry import ObjectStoreRegistry, local_path, normalize_url

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

    import pyarrow as pa
    from numpy.typing import NDArray
    from zarr.abc.codec import Codec
    from zarr.core.common import JSON

__all__ = ["KerchunkJSONParser", "KerchunkParquetParser"]

METADATA_KEYS: Final = frozenset({".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"})
OBJECT_CODECS: Final = frozenset(
    {"vlen-utf8", "vlen-bytes", "vlen-array", "json2", "pickle", "msgpack2"}
)
STRING: Final = StringDType()
_EXPRESSION: Final = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_OPERATORS: Final[dict[type[ast.operator], Callable[[Any, Any], Any]]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_BLOSC_SHUFFLE: Final = ("noshuffle", "shuffle", "bitshuffle")
_PARQUET_COLUMNS: Final = ("path", "offset", "size", "raw")


@dataclass(frozen=True)
class _KerchunkParser:
    """The options and the last steps shared by the JSON and Parquet parsers."""

    group: str | None = None
    fs_root: str | None = None
    drop_variables: Collection[str] = ()
    root_array_name: str = "data"
    stats: ReadStats = field(default_factory=ReadStats, compare=False)
    """Requests and bytes of every parse made with this parser (in this process)."""

    def _finish(
        self,
        layout: _Layout,
        grids: list[_Grid],
        paths: _PathTable,
        registry: ObjectStoreRegistry,
        stats: ReadStats,
    ) -> ManifestStore:
        table = tuple(paths.urls)
        sizes = _whole_file_sizes(table, grids, registry, stats, layout.source)
        arrays = {g.array.name: g.manifest_array(table, sizes) for g in grids}
        self.stats.merge(stats)
        return ManifestStore(layout.tree(arrays), registry=registry, read_stats=stats)

    def _base(self, parent: str) -> str:
        """Where relative URLs are resolved: `fs_root`, else the folder of the references."""
        return normalize_url(self.fs_root) if self.fs_root else parent


@dataclass(frozen=True)
class KerchunkJSONParser(_KerchunkParser):
    """Parse a Kerchunk JSON reference file (spec version 0 or 1) into a `ManifestStore`.

    Parameters
    ----------
    group
        Path of the group to open (default: the root group); its subgroups are kept.
    fs_root
        Base URL (or local folder) of relative chunk URLs; by default the folder holding the
        reference file. Absolute paths and URLs with a scheme are used as they are.
    drop_variables
        Arrays to leave out, by name or by path below the opened group.
    root_array_name
        Variable name of an array stored at the root of the references (as `kerchunk.tiff`
        writes a single image), since a dataset is a group of named arrays.
    """

    def __call__(self, url: str, registry: ObjectStoreRegistry | None = None) -> ManifestStore:
        url = normalize_url(url)
        registry = registry or ObjectStoreRegistry()
        stats = ReadStats()
        refs, templates, gens = _spec(_read_json(url, registry, stats), url)
        docs, buckets = _bucket(refs)
        layout = _Layout(docs, url, self)
        paths = _PathTable(self._base(url.rsplit("/", 1)[0]), templates)
        grids = {path: _Grid(array, url) for path, array in layout.selected.items()}
        for prefix, bucket in buckets.items():
            owner = layout.array_of(prefix, bucket.first_name())
            if owner in grids:
                grids[owner].add_bucket(bucket, prefix, paths)
        for gen in gens:
            for prefix, generated in _expand(gen, templates, url):
                owner = layout.array_of(prefix, str(generated.names[0]))
                if owner in grids:
                    grids[owner].add_files(generated, prefix, paths)
        return self._finish(layout, list(grids.values()), paths, registry, stats)


@dataclass(frozen=True)
class KerchunkParquetParser(_KerchunkParser):
    """Parse Kerchunk Parquet references (fsspec's `LazyReferenceMapper` layout) into a
    `ManifestStore`, reading the records of the arrays asked for only.

    Parameters
    ----------
    group, fs_root, drop_variables, root_array_name
        As for `KerchunkJSONParser`; by default relative URLs are resolved against the folder
        that holds the Parquet directory. The records of dropped arrays are never read.
    max_concurrency
        Parquet records fetched at a time.
    """

    max_concurrency: int = 8

    def __call__(self, url: str, registry: ObjectStoreRegistry | None = None) -> ManifestStore:
        url = normalize_url(url).rstrip("/")
        registry = registry or ObjectStoreRegistry()
        stats = ReadStats()
        docs, record_size = _read_zmetadata(url, registry, stats)
        layout = _Layout(docs, url, self)
        paths = _PathTable(self._base(url.rsplit("/", 1)[0]), {})
        grids = [_Grid(array, url) for array in layout.selected.values()]
        window = max(1, self.max_concurrency)
        with ThreadPoolExecutor(window) as pool:
            for grid in grids:
                base = f"{url}/{grid.array.path}".rstrip("/")
                urls = [f"{base}/refs.{i}.parq" for i in range(-(-grid.size // record_size))]
                for i, table in _records(urls, registry, stats, pool, window):
                    grid.add_record(table, i * record_size, record_size, paths)
        return self._finish(layout, grids, paths, registry, stats)


# -- reading the references --------------------------------------------------------------------


def _get(url: str, registry: ObjectStoreRegistry) -> Any:
    store, path = registry.resolve(url)
    try:
        return obstore.get(store, path).bytes()
    except Exception as err:
        raise translate_io_error(err, url) from err


def _read_json(url: str, registry: ObjectStoreRegistry, stats: ReadStats) -> Any:
    data = _get(url, registry)
    stats.add(url, len(data))
    try:
        text = str(memoryview(data), "utf-8")  # decoded from obstore's buffer: no bytes copy
        del data
        return json.loads(text)
    except (UnicodeDecodeError, ValueError) as err:
        raise UnsupportedFormatError(
            f"{url}: not JSON, so not Kerchunk references ({err})"
        ) from err


def _spec(doc: Any, url: str) -> tuple[dict[str, Any], dict[str, str], list[Any]]:
    """The references, templates and generators of a version 0 or 1 document."""
    if not isinstance(doc, dict):
        raise UnsupportedFormatError(
            f"{url}: not Kerchunk references: the JSON is a {type(doc).__name__}, not an object"
        )
    if "record_size" in doc and "metadata" in doc:
        raise UnsupportedFormatError(
            f"{url}: this is the .zmetadata of Kerchunk Parquet references; open the directory "
            f"that holds it with KerchunkParquetParser"
        )
    if "zarr_format" in doc:
        raise UnsupportedFormatError(
            f"{url}: this is a Zarr metadata document, not Kerchunk references; open the Zarr "
            f"store (its directory) instead"
        )
    version = doc.get("version")
    refs: Any = doc  # version 0: the document is the mapping
    templates: Any = {}
    gens: Any = []
    if version == 1 or (version is None and isinstance(doc.get("refs"), dict)):
        refs, templates, gens = doc.get("refs", {}), doc.get("templates", {}), doc.get("gen", [])
    elif version is not None:
        raise UnsupportedFormatError(
            f"{url}: unknown Kerchunk reference spec version {version!r} (vcube reads 0 and 1)"
        )
    if not isinstance(refs, dict) or not isinstance(gens, list) or not isinstance(templates, dict):
        raise UnsupportedFormatError(
            f"{url}: malformed Kerchunk references: 'refs' and 'templates' must be objects and "
            f"'gen' a list"
        )
    for name, value in templates.items():
        if not isinstance(value, str) or "{{" in value:
            raise UnsupportedFeatureError(
                f"{url}: template {name!r} = {value!r} is not a plain string; vcube substitutes "
                f"plain templates only. Expand the references with fsspec's ReferenceFileSystem "
                f"and write them again."
            )
    return refs, templates, gens


def _read_zmetadata(
    url: str, registry: ObjectStoreRegistry, stats: ReadStats
) -> tuple[dict[str, Any], int]:
    zurl = f"{url}/.zmetadata"
    try:
        meta = _read_json(zurl, registry, stats)
    except VcubeError as err:  # under a local file: "not a directory", not "not found"
        if isinstance(err, TransientIOError):
            raise
        raise _not_parquet(url, registry, err) from err
    record_size = meta.get("record_size") if isinstance(meta, dict) else None
    metadata = meta.get("metadata") if isinstance(meta, dict) else None
    if not isinstance(metadata, dict) or not isinstance(record_size, int) or record_size < 1:
        raise UnsupportedFormatError(
            f"{zurl}: not Kerchunk Parquet references: expected an object with 'metadata' (an "
            f"object) and 'record_size' (a positive integer); consolidated Zarr metadata is "
            f"opened with the Zarr parser"
        )
    return metadata, record_size


def _not_parquet(url: str, registry: ObjectStoreRegistry, err: VcubeError) -> VcubeError:
    """The error for a URL without a readable `.zmetadata`: a file, or nothing at all."""
    store, path = registry.resolve(url)
    try:
        obstore.head(store, path)
    except (FileNotFoundError, NotFoundError):
        if isinstance(err, SourceNotFoundError):
            return SourceNotFoundError(f"{url}: no Kerchunk Parquet references here ({err})")
        return err
    return UnsupportedFormatError(
        f"{url}: a file, not a Kerchunk Parquet directory (with a .zmetadata); for JSON "
        f"references use KerchunkJSONParser"
    )


def _records(
    urls: list[str],
    registry: ObjectStoreRegistry,
    stats: ReadStats,
    pool: ThreadPoolExecutor,
    window: int,
) -> Iterator[tuple[int, pa.Table]]:
    """The Parquet records that exist, by index, fetched `window` at a time: memory stays
    bounded whatever the size of the array."""
    for first in range(0, len(urls), window):
        batch = urls[first : first + window]
        read = pool.map(lambda u: _read_record(u, registry), batch)
        for i, (table, nbytes) in enumerate(read, first):
            stats.add(urls[i], nbytes)  # in this thread: ReadStats is not thread-safe
            if table is not None:
                yield i, table


def _read_record(url: str, registry: ObjectStoreRegistry) -> tuple[pa.Table | None, int]:
    """One Parquet record and its size; None when it was never written (all chunks missing)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    store, path = registry.resolve(url)
    try:
        data = obstore.get(store, path).bytes()
    except (FileNotFoundError, NotFoundError):
        return None, 0
    except Exception as err:
        raise translate_io_error(err, url) from err
    try:
        file = pq.ParquetFile(pa.BufferReader(pa.py_buffer(data)), read_dictionary=["path"])
        columns = [c for c in _PARQUET_COLUMNS if c in file.schema_arrow.names]
        return file.read(columns=columns), len(data)
    except pa.ArrowException as err:
        raise UnsupportedFormatError(f"{url}: not a Kerchunk Parquet record ({err})") from err


# -- metadata: groups and arrays ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Array:
    """An array to build: where its keys are, its name in the result and its Zarr v3 metadata."""

    path: str  # key prefix in the references
    name: str  # path below the opened group
    info: ArrayInfo
    chunk_prefix: str  # "c" for Zarr v3's default chunk key encoding, else ""
    separator: str


class _Layout:
    """The groups and arrays the metadata documents describe, and those selected by the parser's
    `group` and `drop_variables`."""

    def __init__(self, docs: Mapping[str, Any], source: str, parser: _KerchunkParser) -> None:
        self.source = source
        self.root = (parser.group or "").strip("/")
        self.drop = frozenset(parser.drop_variables)
        self.root_array_name = parser.root_array_name
        arrays: dict[str, tuple[int, dict[str, Any]]] = {}
        self.groups: dict[str, dict[str, JSON]] = {}
        attrs: dict[str, dict[str, Any]] = {}
        for key, value in docs.items():
            path, _, name = key.rpartition("/")
            if name not in METADATA_KEYS or name == ".zmetadata":
                continue
            doc = _document(value, key, source)
            if name == ".zarray":
                arrays[path] = (2, doc)
            elif name == ".zgroup":
                self.groups.setdefault(path, {})
            elif name == ".zattrs":
                attrs[path] = doc
            elif doc.get("node_type") == "array":
                arrays[path] = (3, doc)
            else:
                self.groups[path] = doc.get("attributes") or {}
        if not arrays and not self.groups:
            raise UnsupportedFormatError(
                f"{source}: not Kerchunk references: no Zarr metadata (.zgroup, .zarray or "
                f"zarr.json) among its {len(docs)} metadata keys"
            )
        for path, doc in attrs.items():
            if path in arrays:
                continue
            if "_ARRAY_DIMENSIONS" in doc and self._wanted(path):
                raise UnsupportedFormatError(
                    f"{source}: {path}/.zattrs describes an array, but there is no "
                    f"{path}/.zarray; add it, or drop the array with "
                    f"drop_variables=[{path.rpartition('/')[2]!r}]"
                )
            self.groups.setdefault(path, {}).update(doc)
        implied = {a for p in arrays for a in _ancestors(p)}
        if self.root and self.root not in self.groups and self.root not in implied:
            found = sorted(g for g in self.groups if g) or "none"
            raise VcubeError(f"{source}: no group {self.root!r} (groups: {found})")
        self.array_paths = frozenset(arrays)
        self.selected = {
            path: self._array(path, version, doc, attrs.get(path, {}))
            for path, (version, doc) in arrays.items()
            if self._wanted(path)
        }

    def _relative(self, path: str) -> str | None:
        """`path` below the opened group, or None when it is outside it."""
        if not self.root:
            return path
        return path[len(self.root) + 1 :] if path.startswith(self.root + "/") else None

    def _name(self, path: str) -> str | None:
        """The variable name of the array at `path`, or None when it is outside the group."""
        return self.root_array_name if path == "" else self._relative(path)

    def _wanted(self, path: str) -> bool:
        name = self._name(path)
        return name is not None and not (self.drop & {name, name.rpartition("/")[2]})

    def _array(
        self, path: str, version: int, doc: dict[str, Any], zattrs: dict[str, Any]
    ) -> _Array:
        name = self._name(path) or self.root_array_name
        where = f"{self.source}: array {path or '/'!r}"
        if version == 2:
            info, separator = _v2_info(doc, zattrs, where)
            return _Array(path, name, info, "", separator)
        try:
            metadata = ArrayV3Metadata.from_dict(doc)
            info = ArrayInfo.from_zarr(metadata)
        except Exception as err:
            raise UnsupportedFormatError(f"{where}: invalid Zarr v3 metadata ({err})") from err
        encoding = metadata.chunk_key_encoding
        prefix = "c" if isinstance(encoding, DefaultChunkKeyEncoding) else ""
        return _Array(path, name, info, prefix, str(getattr(encoding, "separator", "/")))

    def array_of(self, prefix: str, example: str) -> str | None:
        """The array whose chunk keys are under `prefix` (chunk keys may hold `/` themselves);
        raises when an array's chunks have no metadata."""
        path = prefix
        while True:
            if path in self.array_paths:
                return path
            if not path:
                break
            path = path.rpartition("/")[0]
        first = prefix.split("/", 1)[0]
        if prefix and self._wanted(prefix) and first not in self.drop:
            raise UnsupportedFormatError(
                f"{self.source}: chunk references under {prefix!r} (e.g. {prefix}/{example}) "
                f"but no {prefix}/.zarray (or zarr.json) describes that array; add its "
                f"metadata, or drop it with drop_variables=[{prefix.rpartition('/')[2]!r}]"
            )
        return None

    def tree(self, arrays: dict[str, ManifestArray]) -> ManifestGroup:
        """The opened group with its subgroups and the built arrays (by name below it)."""
        groups = {n for g in self.groups if (n := self._relative(g)) is not None}
        groups.update(a for name in arrays for a in _ancestors(name))

        def build(group: str) -> ManifestGroup:
            here = {n.rpartition("/")[2]: a for n, a in arrays.items() if _parent(n) == group}
            subgroups = {
                g.rpartition("/")[2]: build(g) for g in groups if g and _parent(g) == group
            }
            full = f"{self.root}/{group}".strip("/")
            return ManifestGroup(here, subgroups, dict(self.groups.get(full, {})))

        return build("")


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _ancestors(path: str) -> list[str]:
    """The groups above `path` (`a/b/c` -> `a`, `a/b`)."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _document(value: Any, key: str, source: str) -> dict[str, Any]:
    """A metadata document, given as JSON text (possibly base64) or as an object."""
    try:
        if isinstance(value, str) and value.startswith("base64:"):
            value = base64.b64decode(value[7:])
        doc = json.loads(value) if isinstance(value, str | bytes) else value
    except (ValueError, TypeError) as err:
        raise UnsupportedFormatError(f"{source}: {key} is not valid JSON ({err})") from err
    if not isinstance(doc, dict):
        raise UnsupportedFormatError(f"{source}: {key} is not a JSON object: {value!r:.80}")
    return doc


def _v2_info(zarray: dict[str, Any], zattrs: dict[str, Any], where: str) -> tuple[ArrayInfo, str]:
    """Zarr v3 metadata equivalent to a Zarr v2 `.zarray` and `.zattrs`, and the v2 separator."""
    try:
        shape = tuple(int(n) for n in zarray["shape"])
        chunks = tuple(int(c) or 1 for c in zarray["chunks"])  # a 0-length axis may say 0
        filters = list(zarray.get("filters") or [])
        compressor = zarray.get("compressor")
        configs = [*filters, compressor] if compressor else filters
        object_codec = next(
            (c["id"] for c in filters if isinstance(c, dict) and c.get("id") in OBJECT_CODECS),
            None,
        )
        if zarray["dtype"] == "|O" and object_codec != "vlen-utf8":
            raise UnsupportedFeatureError(
                f"{where}: Zarr v2 object dtype with codec {object_codec!r} has no Zarr v3 "
                f"dtype in vcube (only vlen-utf8 strings); drop it with drop_variables"
            )
        zdtype = get_data_type_from_json(
            {"name": zarray["dtype"], "object_codec_id": object_codec}, zarr_format=2
        )
        fill = zarray.get("fill_value")
        fill_value = None if fill is None else zdtype.from_json_scalar(fill, zarr_format=2)
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, VcubeError):
            raise
        raise UnsupportedFormatError(
            f"{where}: invalid Zarr v2 metadata .zarray ({err!r})"
        ) from err
    dtype = zdtype.to_native_dtype()
    endian: Any = None
    if dtype.itemsize > 1 and dtype.kind in "biufcmMU":
        endian = {">": "big", "<": "little"}.get(dtype.byteorder, sys.byteorder)
        dtype = dtype.newbyteorder("=")
    codecs = _v3_codecs(configs, dtype.itemsize, BytesCodec(endian=endian), where)
    if zarray.get("order", "C") == "F" and len(shape) > 1:
        codecs.insert(0, TransposeCodec(order=tuple(reversed(range(len(shape))))))
    dims = zattrs.get("_ARRAY_DIMENSIONS")
    if dims is not None and (not isinstance(dims, list) or len(dims) != len(shape)):
        raise UnsupportedFormatError(
            f"{where}: _ARRAY_DIMENSIONS {dims!r} does not name the {len(shape)} axes"
        )
    attrs = {k: v for k, v in zattrs.items() if k != "_ARRAY_DIMENSIONS"}
    # xarray takes a Zarr v2 fill_value for the _FillValue attribute; from Zarr v3 it reads the
    # attribute alone, in its own encoding, and decodes it for numbers and booleans only.
    if dtype.kind in "biufc" and fill_value is not None:
        attrs[FILL_VALUE] = encode_attributes({FILL_VALUE: fill_value}, dtype)[FILL_VALUE]
    elif dtype.kind in "biufc" and FILL_VALUE in attrs and not _encoded(attrs[FILL_VALUE], dtype):
        attrs[FILL_VALUE] = encode_attributes(attrs, dtype)[FILL_VALUE]
    info = array_metadata(
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        codecs=codecs,
        fill_value=fill_value,
        dimension_names=dims,
        attributes=attrs,
    )
    return info, str(zarray.get("dimension_separator") or ".")


def _encoded(value: Any, dtype: np.dtype[Any]) -> bool:
    """True when a `_FillValue` attribute is already in xarray's Zarr v3 encoding (floats as
    base64 text, complex numbers as a pair of those)."""
    if dtype.kind == "f":
        return isinstance(value, str)
    return dtype.kind != "c" or isinstance(value, list)


def _v3_codecs(
    configs: Sequence[Any], itemsize: int, serializer: BytesCodec, where: str
) -> list[Codec]:
    """Zarr v3 codecs for numcodecs configurations in the order they encode: array->array ones
    first, then the serializer (the `bytes` codec unless an object codec is named), then
    bytes->bytes ones."""
    before: list[Codec] = []
    after: list[Codec] = []
    chosen: Codec | None = None
    for config in configs:
        codec = _v3_codec(config, itemsize, where)
        if isinstance(codec, ArrayArrayCodec | ArrayBytesCodec) and (after or chosen):
            raise UnsupportedFeatureError(
                f"{where}: the codec {config['id']!r} comes after a compressor or serializer, "
                f"which Zarr v3 cannot express; drop the array with drop_variables"
            )
        if isinstance(codec, ArrayArrayCodec):
            before.append(codec)
        elif isinstance(codec, ArrayBytesCodec):
            chosen = codec
        else:
            after.append(codec)
    return [*before, chosen or serializer, *after]


def _v3_codec(config: Any, itemsize: int, where: str) -> Codec:
    """The Zarr v3 codec for one numcodecs configuration (`{"id": ..., **options}`)."""
    if not isinstance(config, dict) or not isinstance(config.get("id"), str):
        raise UnsupportedFormatError(f"{where}: malformed codec configuration {config!r}")
    codec_id: str = config["id"]
    options = {k: v for k, v in config.items() if k != "id"}
    try:
        match codec_id:
            case "vlen-utf8":
                return VLenUTF8Codec()
            case "zstd":
                level, checksum = options.get("level", 0), bool(options.get("checksum", False))
                return ZstdCodec(level=level, checksum=checksum)
            case "gzip":
                return GzipCodec(level=options.get("level", 5))
            case "crc32c" if options.get("location", "end") == "end":
                return Crc32cCodec()
            case "blosc":
                shuffle = int(options.get("shuffle", 1))
                if shuffle == -1:  # numcodecs' AUTOSHUFFLE
                    shuffle = 2 if itemsize == 1 else 1
                return BloscCodec(
                    cname=options.get("cname", "lz4"),
                    clevel=options.get("clevel", 5),
                    shuffle=_BLOSC_SHUFFLE[shuffle],
                    typesize=itemsize,
                    blocksize=options.get("blocksize", 0),
                )
        return _codec_class(codec_id, where)(**options)
    except (TypeError, ValueError, IndexError) as err:
        if isinstance(err, VcubeError):
            raise
        raise UnsupportedFormatError(
            f"{where}: invalid codec configuration {config!r} ({err})"
        ) from err


def _codec_class(codec_id: str, where: str) -> type[Codec]:
    """The Zarr v3 codec wrapping numcodecs' `codec_id` (imagecodecs' ids are their own)."""
    name = codec_id if codec_id.startswith("imagecodecs_") else f"numcodecs.{codec_id}"
    try:
        return get_codec_class(name)
    except (KeyError, ValueError) as err:
        raise UnsupportedFeatureError(
            f"{where}: codec {codec_id!r} has no Zarr v3 codec here (neither in "
            f"zarr.codecs.numcodecs nor registered by an installed package), so the array "
            f"cannot be read; drop it with drop_variables"
        ) from err


# -- chunk references --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FileRefs:
    """File references under one key prefix: chunk key, URL as written, offset and length (-1:
    the whole file)."""

    names: Any  # list[str] or a numpy string array
    urls: Any  # a sequence or a numpy string array
    offsets: NDArray[np.int64]
    lengths: NDArray[np.int64]


@dataclass(slots=True)
class _Bucket:
    """The references found under one key prefix: file references and inline values."""

    names: list[str] = field(default_factory=list)
    refs: list[Any] = field(default_factory=list)
    inline_names: list[str] = field(default_factory=list)
    inline: list[Any] = field(default_factory=list)

    def first_name(self) -> str:
        return (self.names or self.inline_names)[0]


def _bucket(refs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, _Bucket]]:
    """The metadata documents, and the chunk references grouped by key prefix: one pass over the
    keys."""
    docs: dict[str, Any] = {}
    buckets: dict[str, _Bucket] = {}
    for key, value in refs.items():
        prefix, _, name = key.rpartition("/")
        if name in METADATA_KEYS:
            docs[key] = value
            continue
        bucket = buckets.get(prefix)
        if bucket is None:
            bucket = buckets[prefix] = _Bucket()
        if type(value) is list:
            bucket.names.append(name)
            bucket.refs.append(value)
        else:
            bucket.inline_names.append(name)
            bucket.inline.append(value)
    return docs, buckets


class _PathTable:
    """The absolute URL of every chunk file of one parse (shared by all its manifests): templates
    substituted, relative paths resolved; done once per distinct URL."""

    def __init__(self, base: str, templates: dict[str, str]) -> None:
        self.base = base
        self.templates = templates
        self._ids: dict[str, int] = {}
        self._written: dict[str, int] = {}  # URL as written -> id

    @property
    def urls(self) -> list[str]:
        return list(self._ids)

    def ids(self, written: Sequence[Any], where: str) -> NDArray[np.int32]:
        out = np.empty(len(written), dtype=np.int32)
        for i, url in enumerate(written):
            if not isinstance(url, str) or not url:
                raise UnsupportedFormatError(f"{where}: malformed chunk URL {url!r}")
            found = self._written.get(url)
            if found is None:
                text = _render(url, self.templates, where) if "{{" in url else url
                found = self._ids.setdefault(_absolute(str(text), self.base), len(self._ids))
                self._written[url] = found
            out[i] = found
        return out


def _absolute(url: str, base: str) -> str:
    if "://" in url:
        return url
    if url.startswith("/"):
        return normalize_url(url)
    local = local_path(base)
    if local is not None:
        return normalize_url(f"{local}/{url}")
    scheme, _, path = base.partition("://")
    return f"{scheme}://{posixpath.normpath(f'{path}/{url}')}"


class _Grid:
    """One array's references being assembled: numpy columns over its flattened chunk grid."""

    def __init__(self, array: _Array, source: str) -> None:
        self.array = array
        self.where = f"{source}: array {array.path or '/'!r}"
        self.shape = grid_shape(array.info.shape, array.info.chunks)
        self.size = math.prod(self.shape)
        self.ids = np.full(self.size, MISSING, dtype=np.int32)
        self.offsets = np.zeros(self.size, dtype=np.uint64)
        self.lengths = np.zeros(self.size, dtype=np.uint64)
        self.whole = np.zeros(self.size, dtype=bool)  # references to a whole file
        self.inline: list[bytes] = []

    def add_bucket(self, bucket: _Bucket, prefix: str, paths: _PathTable) -> None:
        if bucket.refs:
            self.add_files(_file_refs(bucket, self.where), prefix, paths)
        if bucket.inline:
            names = bucket.inline_names
            data = [_inline(v, n, self.where) for n, v in zip(names, bucket.inline, strict=True)]
            self.add_inline(self.rows(names, prefix), data)

    def add_files(self, refs: _FileRefs, prefix: str, paths: _PathTable) -> None:
        """File references whose keys are under `prefix`; each distinct URL resolved once."""
        codes, uniques = pd.factorize(np.asarray(refs.urls, dtype=object), use_na_sentinel=True)
        if np.any(codes < 0):
            raise UnsupportedFormatError(f"{self.where}: a chunk reference has a null URL")
        ids = paths.ids(list(uniques), self.where)[codes]
        self._set(self.rows(refs.names, prefix), ids, refs.offsets, refs.lengths)

    def add_inline(self, rows: NDArray[np.intp], data: list[bytes]) -> None:
        self.ids[rows] = INLINE
        self.offsets[rows] = np.arange(len(self.inline), len(self.inline) + len(data))
        self.lengths[rows] = np.fromiter(map(len, data), dtype=np.uint64, count=len(data))
        self.whole[rows] = False
        self.inline.extend(data)

    def add_record(self, table: pa.Table, start: int, record_size: int, paths: _PathTable) -> None:
        """Rows of one Parquet record, from chunk `start` on (rows past the grid are padding)."""
        import pyarrow.compute as pc

        table = table.slice(0, max(0, min(record_size, self.size - start)))
        n = table.num_rows
        raw = table.column("raw") if "raw" in table.column_names else None
        inline = np.asarray(pc.is_valid(raw)) if raw is not None else np.zeros(n, dtype=bool)
        ids = self._record_path_ids(table, paths)
        ids[inline] = MISSING
        offsets, lengths = (
            np.asarray(pc.fill_null(table.column(c), 0), dtype=np.int64)
            if c in table.column_names
            else np.zeros(n, dtype=np.int64)
            for c in ("offset", "size")
        )
        # fsspec reads a path with offset and size 0 as a reference to the whole file.
        lengths = np.where((ids >= 0) & (offsets == 0) & (lengths == 0), -1, lengths)
        self._set(slice(start, start + n), ids, offsets, lengths)
        if raw is not None and inline.any():
            rows = start + np.flatnonzero(inline)
            self.add_inline(rows, raw.filter(pc.is_valid(raw)).to_pylist())

    def _record_path_ids(self, table: pa.Table, paths: _PathTable) -> NDArray[np.int32]:
        """Path ids of a record's rows (MISSING for a null path), one dictionary at a time."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if "path" not in table.column_names or pa.types.is_null(table.column("path").type):
            return np.full(table.num_rows, MISSING, dtype=np.int32)
        column = table.column("path")
        if not pa.types.is_dictionary(column.type):
            column = pc.dictionary_encode(column)
        parts = [np.zeros(0, dtype=np.int32)]
        for chunk in column.chunks:
            table_ids = np.append(paths.ids(chunk.dictionary.to_pylist(), self.where), MISSING)
            codes = np.asarray(pc.fill_null(chunk.indices, -1), dtype=np.intp)
            parts.append(table_ids[codes])
        return np.concatenate(parts).astype(np.int32)

    def _set(
        self,
        rows: NDArray[np.intp] | slice,
        ids: NDArray[np.int32],
        offsets: NDArray[np.int64],
        lengths: NDArray[np.int64],
    ) -> None:
        whole = lengths < 0
        self.ids[rows] = ids
        self.offsets[rows] = offsets
        self.lengths[rows] = np.where(whole, 0, lengths)
        self.whole[rows] = whole & (ids >= 0)

    def rows(self, names: Any, prefix: str) -> NDArray[np.intp]:
        """Flat grid positions of the chunk keys `names` found under `prefix` (`0.1`; `0/1` and
        `c/0/1`, whose first parts are in `prefix`), parsed by Arrow in bulk."""
        import pyarrow as pa
        import pyarrow.compute as pc

        rest = prefix.removeprefix(self.array.path).removeprefix("/")
        if rest:  # keys with `/` in them were grouped under a deeper prefix
            names = np.strings.add(
                np.asarray(f"{rest}/", dtype=STRING), np.asarray(names, dtype=STRING)
            )
        keys = pa.array(names, type=pa.string())
        ndim, sep = len(self.shape), self.array.separator
        head = self.array.chunk_prefix + (sep if ndim and self.array.chunk_prefix else "")
        if head:
            self._check(keys, pc.starts_with(keys, head), f"chunk keys start with {head!r}")
            keys = pc.utf8_slice_codeunits(keys, len(head))
        if ndim == 0:
            expected = "" if head else "0"
            self._check(keys, pc.equal(keys, expected), f"the one chunk is {head or '0'!r}")
            return np.zeros(len(keys), dtype=np.intp)
        parts = pc.split_pattern(keys, sep)
        self._check(keys, pc.equal(pc.list_value_length(parts), ndim), f"{ndim} indices")
        try:
            flat = pc.cast(pc.list_flatten(parts), pa.int64())
        except pa.ArrowInvalid as err:
            raise UnsupportedFormatError(
                f"{self.where}: a chunk key is not made of integers ({err})"
            ) from err
        index = np.asarray(flat).reshape(-1, ndim)
        outside = np.any((index < 0) | (index >= np.array(self.shape)), axis=1)
        if outside.any():
            key = keys[int(np.flatnonzero(outside)[0])].as_py()
            raise UnsupportedFormatError(
                f"{self.where}: chunk key {key!r} is outside its chunk grid {self.shape} (shape "
                f"{self.array.info.shape}, chunks {self.array.info.chunks})"
            )
        return np.asarray(np.ravel_multi_index(tuple(index.T), self.shape), dtype=np.intp)

    def _check(self, keys: pa.Array, ok: pa.Array, expected: str) -> None:
        good = np.asarray(ok.fill_null(False), dtype=bool)
        if not good.all():
            key = keys[int(np.flatnonzero(~good)[0])].as_py()
            raise UnsupportedFormatError(
                f"{self.where}: {key!r} is not a chunk key of this array (expected {expected}, "
                f"separator {self.array.separator!r})"
            )

    def manifest_array(self, paths: tuple[str, ...], sizes: NDArray[np.uint64]) -> ManifestArray:
        if self.whole.any():
            self.lengths[self.whole] = sizes[self.ids[self.whole]]
        manifest = ChunkManifest(
            paths=paths,
            path_ids=self.ids.reshape(self.shape),
            offsets=self.offsets.reshape(self.shape),
            lengths=self.lengths.reshape(self.shape),
            inline=tuple(self.inline),
        )
        return ManifestArray(self.array.info, manifest, name=self.array.name)


def _file_refs(bucket: _Bucket, where: str) -> _FileRefs:
    """The columns of `[url, offset, length]` and `[url]` references."""
    refs, names, n = bucket.refs, bucket.names, len(bucket.refs)
    sizes = np.fromiter(map(len, refs), dtype=np.intp, count=n)
    full = sizes == 3
    bad = ~(full | (sizes == 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        _malformed(where, names[i], refs[i])
    offsets = np.zeros(n, dtype=np.int64)
    lengths = np.full(n, -1, dtype=np.int64)
    rows = np.flatnonzero(full)
    picked = refs if rows.size == n else [refs[i] for i in rows.tolist()]
    urls = [r[0] for r in refs]  # comprehensions: several times faster than zip(*refs)
    for k, out in ((1, offsets), (2, lengths)) if rows.size else ():
        column = [r[k] for r in picked]
        values = np.array(column)
        if values.dtype.kind not in "iu" or values.ndim != 1 or (values < 0).any():
            i = next((i for i, v in enumerate(column) if type(v) is not int or v < 0), 0)
            _malformed(where, names[int(rows[i])], picked[i])
        out[rows] = values
    return _FileRefs(names, urls, offsets, lengths)


def _malformed(where: str, name: str, value: Any) -> None:
    raise UnsupportedFormatError(
        f"{where}: malformed reference at chunk {name!r}: {value!r:.120} (expected "
        f"[url, offset, length] with non-negative integers, [url], or inline text)"
    )


def _inline(value: Any, name: str, where: str) -> bytes:
    """Inline chunk bytes: base64 after a `base64:` prefix, else the text's UTF-8 bytes."""
    if not isinstance(value, str):
        _malformed(where, name, value)
    if value.startswith("base64:"):
        try:
            return base64.b64decode(value[7:], validate=True)
        except ValueError as err:
            raise UnsupportedFormatError(
                f"{where}: inline chunk {name!r} is not valid base64 ({err})"
            ) from err
    text: str = value
    return text.encode()


def _whole_file_sizes(
    urls: tuple[str, ...],
    grids: list[_Grid],
    registry: ObjectStoreRegistry,
    stats: ReadStats,
    source: str,
) -> NDArray[np.uint64]:
    """The size of each file referenced as a whole (`[url]`), by a HEAD request per file."""
    sizes = np.zeros(len(urls), dtype=np.uint64)
    needed = set().union(*(np.unique(g.ids[g.whole]).tolist() for g in grids))
    for i in sorted(needed):
        store, path = registry.resolve(urls[i])
        try:
            sizes[i] = obstore.head(store, path)["size"]
        except Exception as err:
            where = f"{urls[i]} (referenced as a whole file by {source})"
            raise translate_io_error(err, where) from err
        stats.add(urls[i], 0)
    return sizes


# -- templates and generated references (spec version 1) -------------------------------------


def _expand(gen: Any, templates: dict[str, str], source: str) -> Iterator[tuple[str, _FileRefs]]:
    """The references of one `gen` entry, evaluated with numpy over the cartesian product of its
    dimensions, by key prefix."""
    where = f"{source}: gen entry {gen!r:.100}"
    if (
        not isinstance(gen, dict)
        or not isinstance(gen.get("key"), str)
        or not isinstance(gen.get("url"), str)
        or not isinstance(gen.get("dimensions"), dict)
        or (("offset" in gen) != ("length" in gen))
    ):
        raise UnsupportedFormatError(
            f"{where}: malformed (needs 'key', 'url' and 'dimensions'; 'offset' and 'length' "
            f"together or neither)"
        )
    axes = [_dimension(spec, name, where) for name, spec in gen["dimensions"].items()]
    grids = np.meshgrid(*axes, indexing="ij") if axes else []
    env: dict[str, Any] = dict(templates)
    env.update(zip(gen["dimensions"], (g.ravel() for g in grids), strict=True))
    n = math.prod(a.size for a in axes)
    keys, urls = (
        np.broadcast_to(np.asarray(_render(gen[f], env, where), dtype=STRING), (n,)).copy()
        for f in ("key", "url")
    )
    if "offset" in gen:
        offsets = _integers(gen["offset"], env, n, where)
        lengths = _integers(gen["length"], env, n, where)
    else:
        offsets, lengths = np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    prefixes, _, names = np.strings.rpartition(keys, np.asarray("/", dtype=STRING))
    unique, inverse = np.unique(prefixes, return_inverse=True)
    for k, prefix in enumerate(unique.tolist()):
        pick = inverse == k if unique.size > 1 else slice(None)
        yield prefix, _FileRefs(names[pick], urls[pick], offsets[pick], lengths[pick])


def _dimension(spec: Any, name: str, where: str) -> NDArray[np.int64]:
    try:
        if isinstance(spec, dict):
            return np.arange(
                spec.get("start", 0), spec["stop"], spec.get("step", 1), dtype=np.int64
            )
        values = np.asarray(spec)
        if values.ndim == 1 and values.dtype.kind in "iu":
            return values.astype(np.int64)
    except (KeyError, TypeError, ValueError):
        pass
    raise UnsupportedFormatError(
        f"{where}: dimension {name!r} is neither {{'start', 'stop', 'step'}} nor a list of integers"
    )


def _integers(template: Any, env: Mapping[str, Any], n: int, where: str) -> NDArray[np.int64]:
    """An `offset` or `length` of a `gen` entry, evaluated for every generated reference."""
    text = str(template)
    single = _EXPRESSION.fullmatch(text.strip())
    try:
        if single is not None:
            value = np.asarray(_evaluate(single.group(1), env, where))
            if value.dtype.kind not in "iu":
                value = value.astype(STRING).astype(np.int64)
        else:
            value = np.asarray(_render(text, env, where), dtype=STRING).astype(np.int64)
    except (ValueError, TypeError) as err:
        raise UnsupportedFormatError(f"{where}: {text!r} is not an integer ({err})") from err
    return np.broadcast_to(value.astype(np.int64), (n,))


def _render(template: str, env: Mapping[str, Any], where: str) -> Any:
    """`template` with each `{{ expression }}` replaced by its value: a str, or a numpy string
    array when the expressions use array-valued names."""
    parts = _EXPRESSION.split(template)  # literal, expression, literal, ...
    pieces = [p if i % 2 == 0 else _text(_evaluate(p, env, where)) for i, p in enumerate(parts)]
    if not any(isinstance(p, np.ndarray) for p in pieces):
        return "".join(pieces)
    out = np.asarray(pieces[0], dtype=STRING)
    for piece in pieces[1:]:
        out = np.strings.add(out, np.asarray(piece, dtype=STRING))
    return out


def _text(value: Any) -> Any:
    return value.astype(STRING) if isinstance(value, np.ndarray) else str(value)


def _evaluate(expression: str, env: Mapping[str, Any], where: str) -> Any:
    """A Jinja expression of names, numbers, strings and arithmetic, over numpy arrays."""

    def value(node: ast.AST) -> Any:
        match node:
            case ast.Constant(value=int() | float() | str() as constant):
                return constant
            case ast.Name(id=name) if name in env:
                return env[name]
            case ast.BinOp(left=left, op=op, right=right) if type(op) in _OPERATORS:
                return _OPERATORS[type(op)](value(left), value(right))
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return -value(operand)
        raise UnsupportedFeatureError(
            f"{where}: the template expression {{{{{expression}}}}} is not supported: vcube "
            f"evaluates names, numbers and + - * / // % **. Expand the references with fsspec's "
            f"ReferenceFileSystem(..., simple_templates=False) and write them again."
        )

    try:
        return value(ast.parse(expression.strip(), mode="eval").body)
    except (SyntaxError, TypeError, ZeroDivisionError) as err:
        raise UnsupportedFeatureError(
            f"{where}: cannot evaluate the template expression {{{{{expression}}}}} ({err})"
        ) from err
