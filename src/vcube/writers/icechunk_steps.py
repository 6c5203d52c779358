"""How each array of a dataset lands in a stored Icechunk group: the `Step` (its `zarr.json`,
where its chunks go, or the region its loaded values fill) for a new, appended, rewritten or
region-written array, and the `zarr.json` comparisons that decide whether it fits.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zarr.core.metadata.v3 import ArrayV3Metadata

from vcube.errors import IncompatibleArraysError
from vcube.manifests.attrs import decode_attributes, strict_json

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import xarray as xr

    from vcube.manifests.array import ManifestArray

__all__ = [
    "CF_KEYS",
    "LAYOUT_KEYS",
    "Json",
    "Step",
    "append_step",
    "chunk_key",
    "document",
    "first_difference",
    "group_document",
    "metadata_key",
    "region_step",
    "with_stored_encoding",
]

Json = dict[str, Any]
ZARR_JSON = "zarr.json"
# What xarray moves from attributes to encoding: an appended array must agree on all of them.
CF_KEYS = ("units", "calendar", "scale_factor", "add_offset", "_FillValue", "missing_value")
# What fixes how stored chunks decode; everything in zarr.json but the shape and attributes.
LAYOUT_KEYS = ("data_type", "chunk_grid", "chunk_key_encoding", "codecs", "fill_value")


@dataclass(frozen=True, slots=True)
class Step:
    """What happens to one array: its node path, the `zarr.json` to write (None keeps the stored
    one), whether the stored array is deleted first, and where its chunks go."""

    name: str
    key: str
    array: ManifestArray
    document: Json | None
    delete: bool = False
    chunk_offset: tuple[int, ...] | None = ()  # (): at the origin; None: no chunks written
    value_region: tuple[slice, ...] | None = None  # loaded values written through zarr
    clear_missing: bool = False  # a region write: missing chunks replace stored ones


# -- append ------------------------------------------------------------------------------------


def append_step(
    name: str, key: str, array: ManifestArray, doc: Json, dim: str, *, loaded: bool
) -> Step:
    """The resized document and the chunk offset (or value region) of an appended array."""
    new = document(array)
    dims = list(array.info.dimension_names or ())
    axis = dims.index(dim)
    stored_shape = [int(n) for n in doc["shape"]]
    # Loaded values are written through zarr into the stored chunking; references must match it.
    keys = ("data_type", "dimension_names") if loaded else (*LAYOUT_KEYS, "dimension_names")
    difference = first_difference(new, doc, keys=keys)
    if difference is None and len(stored_shape) == array.ndim:
        other = [
            (n, s)
            for i, (n, s) in enumerate(zip(array.shape, stored_shape, strict=True))
            if i != axis
        ]
        if any(n != s for n, s in other):
            difference = (
                f"shape except along {dim!r}: stored {stored_shape}, new {list(array.shape)}"
            )
    if difference is None:
        difference = first_difference(
            {"attributes": _cf(new["attributes"])},
            {"attributes": _cf(doc["attributes"])},
            keys=("attributes",),
        )
    if difference is not None:
        raise IncompatibleArraysError(
            f"cannot append variable {name!r} along {dim!r}: {difference}"
        )
    grown = list(stored_shape)
    grown[axis] += array.shape[axis]
    resized = {**doc, "shape": grown}
    if loaded:
        region = tuple(
            slice(stored_shape[axis], grown[axis]) if i == axis else slice(None)
            for i in range(array.ndim)
        )
        return Step(name, key, array, resized, value_region=region)
    chunk = int(array.chunks[axis])
    if stored_shape[axis] % chunk:
        raise IncompatibleArraysError(
            f"cannot append variable {name!r} along {dim!r}: the stored array ends in a partial "
            f"chunk (length {stored_shape[axis]}, chunks of {chunk}), so the new chunks would not "
            f"start on a chunk boundary; references cannot be re-chunked"
        )
    offset = tuple(stored_shape[axis] // chunk if i == axis else 0 for i in range(array.ndim))
    return Step(name, key, array, resized, chunk_offset=offset)


def region_step(
    name: str,
    key: str,
    array: ManifestArray,
    doc: Json | None,
    region: Mapping[str, slice],
    *,
    loaded: bool,
) -> Step:
    """Where one array's chunks (or loaded values) go in the stored array it rewrites part of."""
    dims = [str(d) for d in array.info.dimension_names or ()]
    if not set(region) & set(dims):
        raise IncompatibleArraysError(
            f"variable {name!r} has none of the region's dimensions {list(region)}: drop it "
            f"(ds.drop_vars) before writing a region"
        )
    if doc is None:
        raise IncompatibleArraysError(
            f"cannot write variable {name!r} into a region: the group has no such array"
        )
    keys = ("data_type", "dimension_names") if loaded else (*LAYOUT_KEYS, "dimension_names")
    difference = first_difference(document(array), doc, keys=keys)
    if difference is not None:
        raise IncompatibleArraysError(f"cannot write variable {name!r} into a region: {difference}")
    stored_shape = [int(n) for n in doc["shape"]]
    slices, offset = [], []
    for axis, (dim, n, size) in enumerate(zip(dims, array.shape, stored_shape, strict=True)):
        start, stop, step = region[dim].indices(size) if dim in region else (0, size, 1)
        if step != 1 or stop - start != n:
            where = f"region {dim}={start}:{stop}" if dim in region else f"dimension {dim!r}"
            raise IncompatibleArraysError(
                f"cannot write variable {name!r} into a region: {where} of the stored array "
                f"holds {stop - start} elements, the variable has {n}"
            )
        chunk = int(array.chunks[axis]) or 1
        if not loaded and (start % chunk or (stop % chunk and stop != size)):
            raise IncompatibleArraysError(
                f"cannot write variable {name!r} into region {dim}={start}:{stop}: references "
                f"cannot be re-chunked, so the region must start and end on chunk boundaries "
                f"(chunks of {chunk} along {dim!r}, or end at the array's end {size})"
            )
        slices.append(slice(start, stop))
        offset.append(start // chunk)
    if loaded:
        return Step(name, key, array, None, value_region=tuple(slices))
    return Step(name, key, array, None, chunk_offset=tuple(offset), clear_missing=True)


def with_stored_encoding(
    ds: xr.Dataset, stored: dict[str, Json | None], loaded: set[str], dims: set[str]
) -> xr.Dataset:
    """`ds` whose loaded variables along `dims` are encoded as the stored arrays were (the same
    time units, calendar, packing and dtype), as xarray's `to_zarr(append_dim=...)` does."""
    ds = ds.copy()
    for name in loaded:
        doc = stored.get(name)
        var = ds.variables[name]
        if doc is None or not dims & {str(d) for d in var.dims}:
            continue
        dtype = ArrayV3Metadata.from_dict(doc).data_type.to_native_dtype()
        attrs = decode_attributes(doc.get("attributes", {}), dtype)
        encoding = {k: attrs[k] for k in CF_KEYS if k in attrs and k not in var.attrs}
        if dtype.kind not in "OTU":
            encoding["dtype"] = dtype
        var.encoding = {**var.encoding, **encoding}
    return ds


# -- documents ---------------------------------------------------------------------------------


def document(array: ManifestArray) -> Json:
    """The array's `zarr.json` as strict JSON (NaN and infinities spelled as strings)."""
    doc: Json = json.loads(json.dumps(strict_json(array.metadata.to_dict()), allow_nan=False))
    return doc


def group_document(attributes: Mapping[str, Any]) -> Json:
    return {"zarr_format": 3, "node_type": "group", "attributes": strict_json(dict(attributes))}


def first_difference(new: Json, stored: Json, *, keys: Sequence[str]) -> str | None:
    """A description of the first of `keys` in which two `zarr.json` documents differ."""
    for key in keys:
        a, b = new.get(key), stored.get(key)
        if _normal(a) != _normal(b):
            return f"{key.replace('_', ' ')}: stored {b!r}, new {a!r}"
    return None


def _normal(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items() if v is not None}
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def _cf(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: attributes[k] for k in CF_KEYS if k in attributes}


def metadata_key(path: str) -> str:
    return f"{path}/{ZARR_JSON}" if path else ZARR_JSON


def chunk_key(path: str, index: Sequence[int]) -> str:
    suffix = "/".join(["c", *map(str, index)])
    return f"{path}/{suffix}" if path else suffix
