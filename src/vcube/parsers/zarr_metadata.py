"""Zarr metadata as vcube's Zarr v3 `ArrayInfo`, chunk keys as grid positions, and node paths as a
group tree: what `ZarrParser` and the Kerchunk parsers share.

A Zarr v2 array (`.zarray` and `.zattrs`) becomes a Zarr v3 array: order "F" becomes a leading
`transpose` codec (a Fortran-ordered chunk is the C-ordered chunk of the transposed array), the
v2 filters become array->array codecs (numcodecs ones as zarr's `numcodecs.*` codecs, imagecodecs'
under their own ids), then the `bytes` codec with the dtype's byte order (or `vlen-utf8`), then
the compressor (`vcube.codecs.numcodecs_to_codecs`). As xarray reads a v2 store, the `fill_value`
is also the `_FillValue` attribute and `_ARRAY_DIMENSIONS` gives the dimension names. A v3 `zarr.json` is read by zarr itself; a
sharded array keeps its sharding codec, each shard being one chunk of the manifest.

Chunk keys are parsed over all of an array's keys at once, as a table of their bytes.
"""

from __future__ import annotations

import copy
import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
from numpy.dtypes import StringDType
from zarr.codecs import BytesCodec, TransposeCodec
from zarr.core.dtype import get_data_type_from_json
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.errors import UnknownCodecError

from vcube.codecs import numcodecs_to_codecs
from vcube.errors import UnsupportedFeatureError, UnsupportedFormatError, VcubeError
from vcube.manifests import ManifestArray, ManifestGroup
from vcube.manifests.attrs import FILL_VALUE, encode_attributes
from vcube.manifests.metadata import ArrayInfo, array_metadata

if TYPE_CHECKING:
    from collections.abc import Mapping

    from numpy.typing import ArrayLike, NDArray
    from zarr.core.common import JSON
    from zarr.core.dtype import ZDType

__all__ = [
    "ARRAY_DIMENSIONS",
    "KeyEncoding",
    "ancestors",
    "array_info",
    "chunk_positions",
    "group_tree",
]

ARRAY_DIMENSIONS: Final = "_ARRAY_DIMENSIONS"
OBJECT_CODECS: Final = frozenset(
    {"vlen-utf8", "vlen-bytes", "vlen-array", "json2", "pickle", "msgpack2"}
)
NUMERIC_KINDS: Final = "biufc"  # xarray decodes a Zarr v3 _FillValue for these only
STRINGS: Final = StringDType()
MAX_INDEX_DIGITS: Final = 18  # a chunk index that fits an int64
KEY_BLOCK: Final = 2**18  # chunk keys parsed at a time: bounds the byte table's memory

type JSONDict = dict[str, Any]


# -- chunk keys --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyEncoding:
    """How chunk grid indices are spelled: `c/0/1` (v3 default) or `0.1` (v2)."""

    prefix: Literal["c", ""]
    separator: str

    @classmethod
    def from_json(cls, doc: object, where: str) -> KeyEncoding:
        """The encoding a v3 `chunk_key_encoding` (or a v2 `{"name": "v2", ...}`) names."""
        name = doc.get("name") if isinstance(doc, dict) else doc
        config = (doc.get("configuration") if isinstance(doc, dict) else None) or {}
        separator = config.get("separator", "/" if name == "default" else ".")
        if name not in ("default", "v2") or separator not in ("/", "."):
            raise UnsupportedFeatureError(
                f"{where}: unsupported chunk key encoding {doc!r} (vcube reads 'default' and "
                f"'v2' with separator '/' or '.')"
            )
        return cls("c" if name == "default" else "", separator)

    def example(self, ndim: int) -> str:
        """The key of the first chunk, to show what keys look like."""
        return self.separator.join([*([self.prefix] if self.prefix else []), *["0"] * ndim]) or "0"


def chunk_positions(
    keys: ArrayLike, encoding: KeyEncoding, grid: tuple[int, ...]
) -> tuple[NDArray[np.intp], NDArray[np.bool_], NDArray[np.bool_]]:
    """Flat (C order) positions in the chunk grid `grid` of the chunk keys `keys` (relative to
    their array), which keys are chunk keys in `encoding`, and which of those are inside the
    grid; a position is 0 where either is false.

    A chunk key is the encoding's prefix, then one canonical decimal number per axis (no sign,
    no leading zero, as zarr writes them); a scalar's one chunk is `c` (v3 default) or `0` (v2).
    """
    keys = np.asarray(keys, dtype=STRINGS)
    ndim = len(grid)
    if ndim == 0:
        is_key = keys == (encoding.prefix or "0")
        return np.zeros(keys.size, dtype=np.intp), is_key, is_key.copy()
    head = f"{encoding.prefix}{encoding.separator}" if encoding.prefix else ""
    lengths = np.strings.str_len(keys)
    longest = len(head) + ndim * (MAX_INDEX_DIGITS + 1) - 1
    if lengths.max(initial=0) > longest:  # not chunk keys, and they would widen the table
        keys = np.where(lengths > longest, "", keys)
    indices = np.zeros((ndim, keys.size), dtype=np.int64)  # one row per axis
    is_key = np.zeros(keys.size, dtype=bool)
    for start in range(0, keys.size, KEY_BLOCK):
        block = slice(start, start + KEY_BLOCK)
        indices[:, block], is_key[block] = _parse_keys(keys[block], head, encoding.separator, ndim)
    inside = is_key & np.all(indices < np.array(grid)[:, np.newaxis], axis=0)
    positions = np.zeros(keys.size, dtype=np.intp)
    if inside.all():
        positions[:] = np.ravel_multi_index(tuple(indices), grid)
    else:
        positions[inside] = np.ravel_multi_index(tuple(indices[:, inside]), grid)
    return positions, is_key, inside


def _parse_keys(
    keys: NDArray[Any], head: str, separator: str, ndim: int
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Grid indices (one row per axis) of keys `head` + `ndim` numbers joined by `separator`,
    and which keys are so spelled, computed over a table of the keys' bytes: row `j` holds
    byte `j` of every key."""
    # At least one NUL after each key, so a number's successor always exists.
    width = max(int(np.strings.str_len(keys).max(initial=0)), len(head)) + 1
    try:
        raw = keys.astype(f"S{width}")
    except UnicodeEncodeError:  # keys that are not ASCII, so not chunk keys: their UTF-8 says so
        raw = np.strings.encode(keys, "utf-8").astype(f"S{4 * width}")
    table = np.ascontiguousarray(raw.view(np.uint8).reshape(keys.size, -1).T)
    expected = np.frombuffer(head.encode(), dtype=np.uint8)[:, np.newaxis]
    ok = np.all(table[: len(head)] == expected, axis=0)
    table = table[len(head) :]
    in_key = np.arange(len(table))[:, np.newaxis] < np.strings.str_len(raw) - len(head)
    digit = table - np.uint8(ord("0"))  # wraps around for bytes below "0"
    is_digit = digit < 10
    is_separator = table == ord(separator)
    ok &= np.all(is_digit | is_separator | ~in_key, axis=0)
    axis_of = is_separator.astype(np.int16)  # the axis of each byte's number: 0, then 1...
    for row in range(1, len(axis_of)):  # row by row: np.cumsum over rows is far slower
        axis_of[row] += axis_of[row - 1]
    ok &= axis_of[-1] == ndim - 1
    # Every number starts with a digit (none is empty), and not with a 0 followed by a digit.
    starts = np.ones_like(is_separator)
    starts[1:] = is_separator[:-1]
    leading_zero = np.zeros_like(is_digit)
    leading_zero[:-1] = (digit[:-1] == 0) & is_digit[1:]
    ok &= ~np.any(starts & (~is_digit | leading_zero), axis=0)
    indices = np.zeros((ndim, keys.size), dtype=np.int64)
    for axis, value in enumerate(indices):
        here = is_digit & (axis_of == axis)
        ok &= np.count_nonzero(here, axis=0) <= MAX_INDEX_DIGITS
        for row, digits in zip(here, digit, strict=True):  # byte j of every key at once
            np.multiply(value, 10, out=value, where=row)
            np.add(value, digits, out=value, where=row)
    return indices, ok


# -- array metadata ----------------------------------------------------------------------------


def array_info(
    zarr_format: Literal[2, 3],
    document: JSONDict,
    attributes: JSONDict,
    *,
    where: str,
    name: str,
) -> tuple[ArrayInfo, KeyEncoding]:
    """The Zarr v3 array a `zarr.json`, or a `.zarray` with its `.zattrs` (`attributes`),
    describes, and how its chunk keys are spelled; `where` names the array in errors and `name`
    is what `drop_variables` would take to leave it out."""
    if zarr_format == 3:
        info, encoding = _v3_info(document, where)
    else:
        info, encoding = _v2_info(document, attributes, where)
    try:
        info.to_zarr()  # zarr's own validation, so a bad array fails here and not on read
    except (ValueError, TypeError) as err:
        raise UnsupportedFeatureError(
            f"{where}: cannot be described as a Zarr v3 array ({err}); drop it with "
            f"drop_variables=[{name!r}]"
        ) from err
    return info, encoding


def _v3_info(doc: JSONDict, where: str) -> tuple[ArrayInfo, KeyEncoding]:
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
        KeyEncoding.from_json(doc["chunk_key_encoding"], where)
    try:
        meta = ArrayV3Metadata.from_dict(copy.deepcopy(doc))  # zarr pops what it reads
    except UnknownCodecError as err:
        raise UnsupportedFeatureError(
            f"{where}: uses a codec that no installed Zarr v3 codec decodes ({err}); install the "
            f"package that provides one, or drop the array with drop_variables"
        ) from err
    except (ValueError, TypeError, KeyError) as err:
        raise UnsupportedFormatError(f"{where}: invalid Zarr v3 array metadata ({err})") from err
    encoding = KeyEncoding.from_json(meta.chunk_key_encoding.to_dict(), where)
    return ArrayInfo.from_zarr(meta), encoding


def _v2_info(zarray: JSONDict, zattrs: JSONDict, where: str) -> tuple[ArrayInfo, KeyEncoding]:
    try:
        shape = tuple(int(n) for n in zarray["shape"])
        chunks = tuple(int(c) or 1 for c in zarray["chunks"])  # a 0-length axis may say 0
        compressor = zarray.get("compressor")
        configs = [*(zarray.get("filters") or []), *([compressor] if compressor else [])]
        zdtype = _v2_dtype(zarray["dtype"], configs, where)
        fill = zarray.get("fill_value")
        fill_value = None if fill is None else zdtype.from_json_scalar(fill, zarr_format=2)
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, VcubeError):
            raise
        raise _invalid_v2(where, repr(err)) from err
    if len(chunks) != len(shape):
        raise _invalid_v2(where, f"shape {list(shape)} and chunks {list(chunks)} differ in length")
    dtype = zdtype.to_native_dtype()
    endian: Literal["little", "big"] | None = None
    if dtype.itemsize > 1 and dtype.kind in "biufcmMU":
        big = dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big")
        endian = "big" if big else "little"
        dtype = dtype.newbyteorder("=")
    codecs = numcodecs_to_codecs(
        configs, itemsize=dtype.itemsize, serializer=BytesCodec(endian=endian), where=where
    )
    if zarray.get("order", "C") == "F" and len(shape) > 1:
        codecs.insert(0, TransposeCodec(order=tuple(reversed(range(len(shape))))))
    dims = zattrs.get(ARRAY_DIMENSIONS)
    if dims is not None and (not isinstance(dims, list) or len(dims) != len(shape)):
        raise UnsupportedFormatError(
            f"{where}: {ARRAY_DIMENSIONS} {dims!r} does not name the {len(shape)} axes"
        )
    attrs = {k: v for k, v in zattrs.items() if k != ARRAY_DIMENSIONS}
    # xarray takes a Zarr v2 fill_value for the _FillValue attribute; from Zarr v3 it reads the
    # attribute alone, in its own encoding, and decodes it for numbers and booleans only.
    if dtype.kind in NUMERIC_KINDS and fill_value is not None:
        attrs[FILL_VALUE] = encode_attributes({FILL_VALUE: fill_value}, dtype)[FILL_VALUE]
    elif dtype.kind in NUMERIC_KINDS and FILL_VALUE in attrs and not _encoded(attrs, dtype):
        attrs[FILL_VALUE] = encode_attributes(attrs, dtype)[FILL_VALUE]
    info = array_metadata(
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        codecs=codecs,
        fill_value=fill_value,
        dimension_names=None if dims is None else [str(d) for d in dims],
        attributes=attrs,
    )
    separator = zarray.get("dimension_separator") or "."
    return info, KeyEncoding.from_json(
        {"name": "v2", "configuration": {"separator": separator}}, where
    )


def _v2_dtype(name: Any, configs: list[Any], where: str) -> ZDType[Any, Any]:
    """The zarr data type of a v2 `dtype`; an object dtype is read by its object codec."""
    object_codec = next(
        (c["id"] for c in configs if isinstance(c, dict) and c.get("id") in OBJECT_CODECS), None
    )
    if name == "|O" and object_codec != "vlen-utf8":
        raise UnsupportedFeatureError(
            f"{where}: cannot be described as a Zarr v3 array: the Zarr v2 object dtype with "
            f"codec {object_codec!r} has no Zarr v3 dtype in vcube (only vlen-utf8 strings); "
            f"drop it with drop_variables"
        )
    return get_data_type_from_json({"name": name, "object_codec_id": object_codec}, zarr_format=2)


def _invalid_v2(where: str, problem: str) -> UnsupportedFormatError:
    return UnsupportedFormatError(
        f"{where}: invalid Zarr v2 array metadata ({problem}). Fix the invalid Zarr v2 metadata "
        f"in its .zarray, or drop the array with drop_variables"
    )


def _encoded(attrs: JSONDict, dtype: np.dtype[Any]) -> bool:
    """True when the `_FillValue` attribute is already in xarray's Zarr v3 encoding (floats as
    base64 text, complex numbers as a pair of those)."""
    value = attrs[FILL_VALUE]
    if dtype.kind == "f":
        return isinstance(value, str)
    return dtype.kind != "c" or isinstance(value, list)


# -- the group tree ----------------------------------------------------------------------------


def group_tree(
    arrays: Mapping[str, ManifestArray], groups: Mapping[str, Mapping[str, JSON]]
) -> ManifestGroup:
    """The tree of the arrays and groups (with their attributes) at slash-separated paths below
    its root (`""`), in the order given; a group above a node that has no metadata of its own is
    made, empty."""
    paths = dict.fromkeys(groups)
    for path in [*groups, *arrays]:
        paths.update(dict.fromkeys(ancestors(path)))
    members: dict[str, dict[str, ManifestArray]] = defaultdict(dict)
    for path, array in arrays.items():
        parent, _, name = path.rpartition("/")
        members[parent][name] = array
    subgroups: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        if path:
            subgroups[path.rpartition("/")[0]].append(path)

    def build(path: str) -> ManifestGroup:
        children = {g.rpartition("/")[2]: build(g) for g in subgroups[path]}
        return ManifestGroup(members[path], children, dict(groups.get(path) or {}))

    return build("")


def ancestors(path: str) -> list[str]:
    """The groups above `path` (`a/b/c` -> `a`, `a/b`)."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]
