"""Kerchunk references (spec version 1, Zarr v2 metadata) of a virtual dataset.

Three outputs: a dict, a JSON file, and a Parquet reference store in the layout fsspec's
`LazyReferenceMapper` reads. Every variable goes through `ManifestGroup.from_virtual_dataset`, so
loaded variables are CF-encoded and written as inline chunks exactly as a `ManifestStore` serves
them.

References are built column-wise with pyarrow (the `kerchunk` extra): chunk keys and JSON text
by Arrow's string kernels over whole batches of references, Parquet columns from the manifest's
numpy columns. Python loops run per array, per unique path and per inline chunk; per file
reference only where the output itself is a dict of Python objects.

Codecs become the v2 dtype, `order` and `filters` (compressor null) as `vcube.writers.v2codecs`
describes: numcodecs filters, imagecodecs' ones included (TIFF predictors, JPEG and other image
codecs); a Zarr v2 reader finds those only after `imagecodecs.numcodecs.register_codecs()`.
Sharded arrays and codecs without a numcodecs form raise `UnsupportedFeatureError`.

Zarr v2 has one `fill_value` where Zarr v3 with CF has two (the value of missing chunks, and the
`_FillValue` mask), and xarray reads the v2 `fill_value` as `_FillValue`. So the v2 `fill_value`
is the variable's CF `_FillValue` when it has one, else the value of missing chunks when a chunk
is missing (xarray then masks it, as netCDF4-python masks default fill values), else null. The
`_FillValue` attribute also stays in `.zattrs` in xarray's encoded form, which xarray's
`ZarrStore` reads with `use_zarr_fill_value_as_mask=False`.

In Parquet, a missing chunk is a row with a null path and a null raw. fsspec's
`LazyReferenceMapper` takes a null read as NaN (pandas >= 3 strings, categoricals) for a path and
fails on it; so a record whose chunks are all missing is not written (fsspec then reads them as
missing), and paths stay plain strings in a record with a missing chunk (null reads as None with
pandas < 3).
"""

from __future__ import annotations

import base64
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict, cast, get_args, overload

import numpy as np
import obstore
import pandas as pd
from numpy.dtypes import StringDType
from zarr.dtype import parse_dtype

from vcube.errors import UnsupportedFeatureError, UnsupportedFormatError, VcubeWarning
from vcube.manifests.array import ManifestArray
from vcube.manifests.attrs import FILL_VALUE, decode_attributes, json_value
from vcube.manifests.group import ManifestGroup
from vcube.manifests.manifest import INLINE, MISSING
from vcube.readers import translate_io_error
from vcube.registry import ObjectStoreRegistry, local_path, normalize_url
from vcube.writers.v2codecs import v2_codecs

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import pyarrow as pa
    import xarray as xr
    from numpy.typing import NDArray
    from zarr.core.common import JSON

    from vcube.manifests.manifest import ChunkManifest


__all__ = [
    "FORMATS",
    "KerchunkFillValueWarning",
    "KerchunkFormat",
    "KerchunkRef",
    "KerchunkRefs",
    "NoVirtualVariablesWarning",
    "to_kerchunk",
]

KerchunkFormat = Literal["dict", "json", "parquet"]
FORMATS: Final[tuple[str, ...]] = get_args(KerchunkFormat)

KerchunkRef = str | list[str | int]
"""A reference: a JSON document or inline bytes (`base64:...`), or `[url, offset, length]`."""

_BATCH: Final = 500_000  # file references turned into text at a time (bounds memory)
_ZGROUP: Final[dict[str, JSON]] = {"zarr_format": 2}


class KerchunkRefs(TypedDict):
    """Kerchunk references, spec version 1: metadata documents as JSON text, chunks as refs."""

    version: int
    refs: dict[str, KerchunkRef]


class NoVirtualVariablesWarning(VcubeWarning):
    """The dataset written has no virtual variable: every chunk is written inline."""


class KerchunkFillValueWarning(VcubeWarning):
    """Zarr v2 cannot tell a variable's `_FillValue` from the value of its missing chunks."""


@dataclass(frozen=True, slots=True)
class _V2Array:
    """One array as Kerchunk writes it: Zarr v2 metadata, references, kerchunk URLs."""

    name: str
    zarray: dict[str, JSON]
    zattrs: dict[str, JSON]
    manifest: ChunkManifest
    urls: tuple[str, ...]  # by path id

    @property
    def grid(self) -> tuple[int, ...]:
        return self.manifest.grid_shape


@overload
def to_kerchunk(
    ds: xr.Dataset,
    filepath: None = None,
    *,
    format: Literal["dict"] = "dict",
    record_size: int = ...,
    categorical_threshold: int = ...,
    registry: ObjectStoreRegistry | None = ...,
) -> KerchunkRefs: ...


@overload
def to_kerchunk(
    ds: xr.Dataset,
    filepath: str | Path,
    *,
    format: Literal["json", "parquet"],
    record_size: int = ...,
    categorical_threshold: int = ...,
    registry: ObjectStoreRegistry | None = ...,
) -> None: ...


def to_kerchunk(
    ds: xr.Dataset,
    filepath: str | Path | None = None,
    *,
    format: KerchunkFormat = "dict",
    record_size: int = 100_000,
    categorical_threshold: int = 10,
    registry: ObjectStoreRegistry | None = None,
) -> KerchunkRefs | None:
    """Write the references of a virtual dataset as Kerchunk references.

    Parameters
    ----------
    ds
        A virtual dataset (one group); loaded variables are written as inline chunks.
    filepath
        Where `format="json"` or `"parquet"` writes: a local path or an object-store URL
        (the Parquet store is a directory). Not used by `format="dict"`.
    format
        `"dict"` returns the references; `"json"` writes one JSON file; `"parquet"` writes
        the Parquet layout of fsspec's `LazyReferenceMapper`.
    record_size
        Parquet only: chunk references per Parquet file.
    categorical_threshold
        Parquet only: paths are dictionary-encoded (read back as a pandas categorical) in a
        Parquet file whose references per unique path reach this ratio.
    registry
        Object stores by URL prefix, for writing to an object store; local paths need none.

    Returns
    -------
    KerchunkRefs or None
        The references for `format="dict"`, else None.

    Raises
    ------
    UnsupportedFeatureError
        For a sharded array, or codecs Zarr v2 cannot express (see `vcube.writers.v2codecs`).

    Notes
    -----
    imagecodecs' filters (`imagecodecs_*` ids: TIFF predictors, LZW, JPEG, ...) are not numcodecs
    entry points: call `imagecodecs.numcodecs.register_codecs()` before reading the references.
    """
    if format not in FORMATS:
        allowed = ", ".join(repr(f) for f in FORMATS)
        raise UnsupportedFormatError(f"unknown Kerchunk format {format!r}: use one of {allowed}")
    if format != "dict" and filepath is None:
        raise UnsupportedFormatError(
            f"format={format!r} writes a file: give filepath (a local path or a URL)"
        )
    if record_size < 1:
        raise UnsupportedFormatError(f"record_size must be a positive integer, not {record_size}")
    if not any(isinstance(v.data, ManifestArray) for v in ds.variables.values()):
        warnings.warn(
            "the dataset has no virtual variables: every variable is written inline, as "
            "loaded values. Open the files with vcube.open_virtual_dataset to reference them.",
            NoVirtualVariablesWarning,
            stacklevel=2,
        )
    group = ManifestGroup.from_virtual_dataset(ds)
    arrays = [_v2_array(name, array) for name, array in group.arrays.items()]
    metadata = _metadata(group, arrays)
    if format == "dict":
        return _refs_dict(metadata, arrays)
    assert filepath is not None
    url = normalize_url(filepath).rstrip("/")
    registry = registry or ObjectStoreRegistry()
    if format == "json":
        _put(url, _json_text(metadata, arrays), registry)
    else:
        _write_parquet(url, metadata, arrays, record_size, categorical_threshold, registry)
    return None


# -- Zarr v2 metadata --------------------------------------------------------------------------


def _metadata(group: ManifestGroup, arrays: list[_V2Array]) -> dict[str, dict[str, JSON]]:
    """Every metadata document by key: the group's, then each array's."""
    out: dict[str, dict[str, JSON]] = {".zgroup": _ZGROUP, ".zattrs": dict(group.attributes)}
    for a in arrays:
        out[f"{a.name}/.zarray"] = a.zarray
        out[f"{a.name}/.zattrs"] = a.zattrs
    return out


def _v2_array(name: str, array: ManifestArray) -> _V2Array:
    info = array.info
    codecs = v2_codecs(name, info)
    dims = info.dimension_names or tuple(f"dim_{i}" for i in range(len(info.shape)))
    zarray: dict[str, JSON] = {
        "shape": list(info.shape),
        "chunks": list(info.chunks),
        "dtype": codecs.dtype,
        "fill_value": _v2_fill_value(name, array, codecs.dtype),
        "order": codecs.order,
        "filters": cast("JSON", codecs.filters or None),
        "compressor": None,
        "zarr_format": 2,
        "dimension_separator": ".",
    }
    zattrs: dict[str, JSON] = {**info.attributes, "_ARRAY_DIMENSIONS": list(dims)}
    urls = tuple(_kerchunk_url(p) for p in array.manifest.paths)
    return _V2Array(name, zarray, zattrs, array.manifest, urls)


def _v2_fill_value(name: str, array: ManifestArray, dtype: str) -> JSON:
    info = array.info
    missing = bool(np.any(array.manifest.path_ids == MISSING))
    cf_fill = decode_attributes(info.attributes, info.dtype).get(FILL_VALUE)
    if cf_fill is not None:
        if missing and not _same_value(cf_fill, info.fill_value):
            chunk_fill, mask = json_value(info.fill_value), json_value(cf_fill)
            warnings.warn(
                f"variable {name!r}: its missing chunks hold {chunk_fill!r} but its "
                f"_FillValue is {mask!r}; Zarr v2 keeps one, so missing chunks read as "
                f"{mask!r} through these references",
                KerchunkFillValueWarning,
                stacklevel=4,
            )
        value = cf_fill
    elif missing:
        value = info.fill_value
    else:
        return None
    zdtype = parse_dtype(StringDType() if dtype == "|O" else np.dtype(dtype), zarr_format=2)
    try:
        return cast("JSON", json_value(zdtype.to_json_scalar(value, zarr_format=2)))
    except (TypeError, ValueError) as err:
        raise UnsupportedFeatureError(
            f"variable {name!r}: fill value {value!r} is not a {dtype} value: {err}"
        ) from err


def _same_value(a: object, b: object) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    except TypeError:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def _kerchunk_url(url: str) -> str:
    """The URL as fsspec opens it: `file://` URLs become local paths."""
    path = local_path(url) if url.startswith("file:") else None
    return path if path is not None else url


# -- chunk references, vectorized ----------------------------------------------------------------


def _file_refs(
    manifest: ChunkManifest,
) -> Iterator[tuple[NDArray[np.intp], NDArray[np.int32], NDArray[np.uint64], NDArray[np.uint64]]]:
    """Batches of file references in C order of the grid: flat index, path id, offset, length."""
    ids = manifest.path_ids.reshape(-1)
    flat = np.flatnonzero(ids >= 0)
    offsets, lengths = manifest.offsets.reshape(-1), manifest.lengths.reshape(-1)
    for start in range(0, flat.size, _BATCH):
        f = flat[start : start + _BATCH]
        yield f, ids[f], offsets[f], lengths[f]


def _inline_refs(a: _V2Array, prefix: str) -> tuple[list[str], list[bytes]]:
    """Keys (with `prefix`) and bytes of the inline chunks."""
    ids = a.manifest.path_ids.reshape(-1)
    flat = np.flatnonzero(ids == INLINE)
    if not flat.size:
        return [], []
    keys: list[str] = _joined(prefix, *_key_parts(a.grid, flat)).to_pylist()
    inline = a.manifest.inline
    return keys, [inline[i] for i in a.manifest.offsets.reshape(-1)[flat].tolist()]


def _key_parts(grid: tuple[int, ...], flat: NDArray[np.intp]) -> list[pa.Array]:
    """The parts of the Zarr v2 chunk key (`i.` `j.` `k`; `0` for a 0-d array) of each flat
    index of the grid, as Arrow string arrays."""
    import pyarrow as pa

    if not grid:
        return [pa.array(["0"] * flat.size, type=pa.string())]
    coords = np.unravel_index(flat, grid)
    last = len(grid) - 1
    return [
        _labels(n, dot=axis < last).take(c)
        for axis, (n, c) in enumerate(zip(grid, coords, strict=True))
    ]


def _labels(n: int, *, dot: bool) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    labels = pc.cast(pa.array(np.arange(n)), pa.string())
    return pc.binary_join_element_wise(labels, ".", "") if dot else labels


def _joined(*parts: object) -> pa.StringArray:
    """The element-wise concatenation of Arrow string arrays and strings, in one pass."""
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(*parts, "")


def _utf8(text: pa.StringArray) -> memoryview:
    """The concatenated UTF-8 bytes of an Arrow string array, without a copy."""
    _, offsets, data = text.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32)[text.offset : text.offset + len(text) + 1]
    return memoryview(data).cast("B")[int(bounds[0]) : int(bounds[-1])]


def _inline_text(data: bytes) -> str:
    return "base64:" + base64.b64encode(data).decode("ascii")


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=True)


# -- dict and JSON -----------------------------------------------------------------------------


def _refs_dict(metadata: dict[str, dict[str, JSON]], arrays: list[_V2Array]) -> KerchunkRefs:
    refs: dict[str, KerchunkRef] = {key: _dumps(doc) for key, doc in metadata.items()}
    for a in arrays:
        prefix = a.name + "/"
        urls = np.array([*a.urls, ""], dtype=object)  # taking from it shares the str objects
        for flat, ids, offsets, lengths in _file_refs(a.manifest):
            keys: list[str] = _joined(prefix, *_key_parts(a.grid, flat)).to_pylist()
            values = zip(urls[ids].tolist(), offsets.tolist(), lengths.tolist(), strict=True)
            refs.update(zip(keys, ([u, o, n] for u, o, n in values), strict=True))
        keys, data = _inline_refs(a, prefix)
        refs.update(zip(keys, map(_inline_text, data), strict=True))
    return {"version": 1, "refs": refs}


def _json_text(
    metadata: dict[str, dict[str, JSON]], arrays: list[_V2Array]
) -> Iterator[bytes | memoryview]:
    """The JSON document in pieces: metadata first, then a batch of chunk references at a time,
    each batch rendered by Arrow in one pass and handed on without a copy."""
    import pyarrow as pa
    import pyarrow.compute as pc

    entries = ",".join(f"{_dumps(k)}:{_dumps(_dumps(doc))}" for k, doc in metadata.items())
    yield ('{"version":1,"refs":{' + entries).encode()  # .zgroup comes first: never empty
    for a in arrays:
        prefix = "," + _dumps(a.name + "/")[:-1]  # ,"name/   (the key's closing quote follows)
        heads = pa.array([f'":[{_dumps(u)},' for u in a.urls], type=pa.string())
        for flat, ids, offsets, lengths in _file_refs(a.manifest):
            yield _utf8(
                _joined(
                    prefix,
                    *_key_parts(a.grid, flat),
                    heads.take(ids),
                    pc.cast(pa.array(offsets), pa.string()),
                    ",",
                    pc.cast(pa.array(lengths), pa.string()),
                    "]",
                )
            )
        keys, data = _inline_refs(a, a.name + "/")
        if keys:
            yield "".join(
                f",{_dumps(k)}:{_dumps(_inline_text(d))}" for k, d in zip(keys, data, strict=True)
            ).encode()
    yield b"}}"


# -- Parquet -----------------------------------------------------------------------------------


def _write_parquet(
    url: str,
    metadata: dict[str, dict[str, JSON]],
    arrays: list[_V2Array],
    record_size: int,
    categorical_threshold: int,
    registry: ObjectStoreRegistry,
) -> None:
    """`<var>/refs.<i>.parq` for each record of each array, then `.zmetadata` (written last, so
    an interrupted write leaves no store that opens)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for a in arrays:
        for i, table in _records(a, record_size, categorical_threshold):
            sink = pa.BufferOutputStream()
            pq.write_table(
                table,
                sink,
                compression="zstd",
                write_statistics=False,
                use_dictionary=["path"] if pa.types.is_dictionary(table["path"].type) else False,
            )
            _put(f"{url}/{a.name}/refs.{i}.parq", sink.getvalue().to_pybytes(), registry)
    zmetadata = {"metadata": metadata, "record_size": record_size}
    _put(f"{url}/.zmetadata", _dumps(zmetadata).encode(), registry)


def _records(
    a: _V2Array, record_size: int, categorical_threshold: int
) -> Iterator[tuple[int, pa.Table]]:
    """Record `i` holds rows `[i * record_size, (i + 1) * record_size)` of the chunk grid in C
    order, a row per chunk (a missing one has a null path and raw). A record whose chunks are
    all missing is not written (as kerchunk does): fsspec reads its keys as missing."""
    ids = a.manifest.path_ids.reshape(-1)
    offsets, lengths = a.manifest.offsets.reshape(-1), a.manifest.lengths.reshape(-1)
    for i, start in enumerate(range(0, ids.size, record_size)):
        rows = slice(start, start + record_size)
        if np.any(ids[rows] != MISSING):
            yield i, _record(a, ids[rows], offsets[rows], lengths[rows], categorical_threshold)


def _record(
    a: _V2Array,
    ids: NDArray[np.int32],
    offsets: NDArray[np.uint64],
    lengths: NDArray[np.uint64],
    categorical_threshold: int,
) -> pa.Table:
    import pyarrow as pa

    is_file = ids >= 0
    codes, uniques = pd.factorize(ids[is_file])
    indices = np.zeros(ids.size, dtype=np.int32)
    indices[is_file] = codes
    dictionary = pa.array([a.urls[u] for u in uniques.tolist()], type=pa.string())
    path: pa.Array = pa.DictionaryArray.from_arrays(pa.array(indices, mask=~is_file), dictionary)
    # A null categorical reads back as NaN, which fsspec takes for a path: records with missing
    # chunks keep plain strings (read back as None with pandas < 3; see the module docstring).
    categorical = (
        codes.size > 0
        and codes.size / len(uniques) >= categorical_threshold
        and not np.any(ids == MISSING)
    )
    if not categorical:
        path = path.dictionary_decode()
    zero = np.uint64(0)
    columns = [
        path,
        pa.array(np.where(is_file, offsets, zero).astype(np.int64)),
        pa.array(np.where(is_file, lengths, zero).astype(np.int64)),
        _raw_column(a, ids, offsets),
    ]
    return pa.Table.from_arrays(columns, schema=_schema(categorical, len(uniques)))


def _raw_column(a: _V2Array, ids: NDArray[np.int32], offsets: NDArray[np.uint64]) -> pa.Array:
    """The inline chunks' bytes, null elsewhere; typed binary even when all null (fastparquet
    cannot read a column of Arrow's null type)."""
    import pyarrow as pa

    rows = np.flatnonzero(ids == INLINE)
    if not rows.size:
        return pa.nulls(ids.size, type=pa.binary())
    raw: list[bytes | None] = [None] * ids.size
    for row, index in zip(rows.tolist(), offsets[rows].tolist(), strict=True):
        raw[row] = a.manifest.inline[index]
    return pa.array(raw, type=pa.binary())


def _schema(categorical: bool, num_categories: int) -> pa.Schema:
    """The columns fsspec reads, with pandas metadata so that fastparquet (fsspec's default
    engine) reads integer columns as integers and categorical paths as categoricals."""
    import pyarrow as pa

    path_type = pa.dictionary(pa.int32(), pa.string()) if categorical else pa.string()
    path_meta: dict[str, Any] = (
        {
            "pandas_type": "categorical",
            "numpy_type": "int32",
            "metadata": {"num_categories": num_categories, "ordered": False},
        }
        if categorical
        else {"pandas_type": "unicode", "numpy_type": "object", "metadata": None}
    )
    columns = [
        {"name": "path", **path_meta},
        {"name": "offset", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
        {"name": "size", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
        {"name": "raw", "pandas_type": "bytes", "numpy_type": "object", "metadata": None},
    ]
    pandas_metadata = {
        "index_columns": [],
        "column_indexes": [],
        "columns": [{**c, "field_name": c["name"]} for c in columns],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": pd.__version__,
    }
    return pa.schema(
        [
            pa.field("path", path_type),
            pa.field("offset", pa.int64(), nullable=False),
            pa.field("size", pa.int64(), nullable=False),
            pa.field("raw", pa.binary()),
        ],
        metadata={b"pandas": _dumps(pandas_metadata).encode()},
    )


# -- output ------------------------------------------------------------------------------------


def _put(
    url: str, data: bytes | Iterable[bytes | memoryview], registry: ObjectStoreRegistry
) -> None:
    """Write one object: a local file, or an object through obstore (one request for bytes, a
    streamed multipart upload for an iterable of pieces)."""
    store, path, prefix = registry.resolve_with_prefix(url)
    local = local_path(url) if prefix is None else None
    if local is not None:
        target = Path(local)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                f.writelines(data)
        return
    try:
        obstore.put(store, path, data if isinstance(data, bytes) else iter(data))
    except Exception as err:
        raise translate_io_error(err, url) from err
