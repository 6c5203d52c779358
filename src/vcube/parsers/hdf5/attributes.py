"""Attributes of groups and datasets, read as h5py reads them but through attribute ids.

In-memory types of numbers and fixed-length strings are built once: building one costs about as
much as reading a small attribute.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
from h5py import h5, h5a, h5p, h5t

if TYPE_CHECKING:
    from collections.abc import Mapping

    from h5py import h5o

__all__ = ["HIDDEN_ATTRS", "UNREAD_ATTRS", "attribute_names", "decode", "read_attribute"]


# Attributes netCDF-C and the HDF5 dimension-scale API use for bookkeeping; netCDF4 hides them.
HIDDEN_ATTRS = frozenset(
    {
        "CLASS",
        "DIMENSION_LIST",
        "NAME",
        "REFERENCE_LIST",
        "_Netcdf4Dimid",
        "_Netcdf4Coordinates",
        "_NCProperties",
        "_nc3_strict",
        "_SuperblockVersion",
        "_IsNetcdf4",
    }
)
# Hidden attributes not read with the others: vcube needs CLASS and NAME, and DIMENSION_LIST is
# read on its own (`Walker.dimension_list`).
UNREAD_ATTRS = HIDDEN_ATTRS - {"CLASS", "NAME"}


def attribute_names(oid: h5o.ObjectID, plist: h5p.PropOCID) -> dict[str, bytes]:
    """The names of an object's attributes (decoded, and as stored), in creation order where the
    file tracks it (as h5py and netCDF4 list them)."""
    names: list[bytes] = []
    tracked = plist.get_attr_creation_order() & h5p.CRT_ORDER_TRACKED
    order = h5.INDEX_CRT_ORDER if tracked else h5.INDEX_NAME
    h5a.iterate(oid, lambda raw, *_: names.append(raw), index_type=order)
    return {decode(raw): raw for raw in names}


def decode(raw: bytes) -> str:
    """A link or attribute name as h5py gives it (UTF-8; undecodable names stay bytes)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw  # type: ignore[return-value]  # as h5py: a str key operation then fails


def read_attribute(oid: h5o.ObjectID, raw: bytes) -> Any:
    """An attribute's value as h5py's `attrs[name]` reads it, but an empty one (null dataspace)
    as an empty string or array rather than `h5py.Empty`."""
    attr = h5a.open(oid, raw)
    shape = attr.shape
    dtype = attr.dtype
    if shape is None:
        return "" if dtype.kind == "S" else np.empty(0, dtype)
    mtype = _memory_type(dtype)
    if dtype.subdtype is not None:  # an HDF5 array type: numpy holds its shape in the array's
        dtype, inner = dtype.subdtype
        shape = (*shape, *inner)
    values = np.zeros(shape, dtype=dtype)
    attr.read(values, mtype=mtype)
    string_info = h5py.check_string_dtype(dtype)
    if string_info is not None and string_info.length is None:
        text = [b.decode("utf-8", "surrogateescape") for b in values.flat]
        values = np.array(text, dtype=dtype).reshape(values.shape)
    return values[()] if values.ndim == 0 else values


def _memory_type(dtype: np.dtype[Any]) -> h5t.TypeID:
    """h5py's in-memory HDF5 type for `dtype`; those of numbers and fixed-length strings are
    cached, as building one costs about as much as reading a small attribute."""
    metadata: Mapping[str, Any] = dtype.metadata or {}
    if dtype.kind in "biufcS" and set(metadata) <= {"h5py_encoding"}:
        return _plain_memory_type(dtype.str, metadata.get("h5py_encoding"))
    return h5t.py_create(dtype)


@functools.cache
def _plain_memory_type(code: str, encoding: str | None) -> h5t.TypeID:
    dtype = (
        np.dtype(code) if encoding is None else np.dtype(code, metadata={"h5py_encoding": encoding})
    )
    return h5t.py_create(dtype)
