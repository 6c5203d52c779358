"""Dimensions: dimension scales and their lengths, DIMENSION_LIST, netCDF-C's phony dimensions."""

from __future__ import annotations

import posixpath
from typing import Any

import h5py
import numpy as np
from h5py import h5a, h5d, h5i, h5o, h5r, h5s, h5t

from vcube.parsers.hdf5.attributes import read_attribute

__all__ = [
    "NON_COORD_PREFIX",
    "Identity",
    "PhonyDims",
    "Scales",
    "is_pure_dimension",
    "read_dimension_list",
]


# h5py's in-memory type of DIMENSION_LIST (per axis, a variable-length list of object references),
# built once: deriving it from each attribute's own type costs more than reading the attribute.
REFS_DTYPE = h5py.vlen_dtype(h5py.ref_dtype)
REFS_TYPE = h5t.py_create(REFS_DTYPE)
# A REFERENCE_LIST entry (a dataset attached to a dimension scale, and its axis) read with the
# reference as the raw address of the dataset's object header, which needs no dereferencing.
ATTACHED_DTYPE = np.dtype([("dataset", "<u8"), ("dimension", "<i8")])
ATTACHED_TYPE = h5t.create(h5t.COMPOUND, ATTACHED_DTYPE.itemsize)
ATTACHED_TYPE.insert(b"dataset", 0, h5t.STD_REF_OBJ)
ATTACHED_TYPE.insert(b"dimension", 8, h5t.STD_I64LE)
PURE_DIMENSION = "This is a netCDF dimension but not a netCDF variable"
NON_COORD_PREFIX = "_nc4_non_coord_"


def read_dimension_list(dsid: h5d.DatasetID, ndim: int) -> np.ndarray[Any, Any] | None:
    """A dataset's DIMENSION_LIST: per axis, object references to the axis' dimension scales;
    None when the attribute is not in the layout HDF5 writes."""
    refs = np.empty(ndim, dtype=REFS_DTYPE)
    try:  # (h5py refuses to read an attribute of another shape into `refs`)
        h5a.open(dsid, b"DIMENSION_LIST").read(refs, mtype=REFS_TYPE)
    except (OSError, TypeError):
        return None
    return refs


Identity = tuple[int, int]
"""An HDF5 object's file number and object header address."""


class Scales:
    """The dimension scales of one file: name and length of each, by identity.

    A dataset's DIMENSION_LIST names its scales by object references, which do not compare:
    each is dereferenced (the scale opened) and the scale known by its identity. Scales stay open
    while the file is walked, which makes the next dereference of each half as costly. An
    unlimited scale is as long as the longest dataset attached to it: its REFERENCE_LIST, read
    with raw addresses, names them, and the extents of those walked already need no dereference.
    """

    def __init__(self) -> None:
        self.found: dict[Identity, tuple[str, int]] = {}
        self.opened: list[h5d.DatasetID] = []
        self.extents: dict[Identity, tuple[int, ...]] = {}

    def walked(self, dsid: h5d.DatasetID, extent: tuple[int, ...]) -> None:
        info = h5o.get_info(dsid)
        self.extents[info.fileno, info.addr] = extent

    def describe(self, scale: h5d.DatasetID) -> tuple[str, int]:
        """Name and length of a dimension scale; an unlimited one is as long as the longest
        dataset attached to it."""
        if not isinstance(scale, h5d.DatasetID):
            raise TypeError(f"a dimension scale reference leads to {scale!r}, not a dataset")
        info = h5o.get_info(scale)
        identity = (info.fileno, info.addr)
        if identity not in self.found:
            path = (h5i.get_name(scale) or b"").decode()
            name = posixpath.basename(path).removeprefix(NON_COORD_PREFIX)
            self.found[identity] = (name, self.length(scale, identity))
            self.opened.append(scale)
        return self.found[identity]

    def length(self, scale: h5d.DatasetID, identity: Identity) -> int:
        space = scale.get_space()
        dims = space.get_simple_extent_dims()
        length = int(dims[0]) if dims else 0
        maxdims = space.get_simple_extent_dims(True)
        if not maxdims or maxdims[0] != h5s.UNLIMITED or not h5a.exists(scale, b"REFERENCE_LIST"):
            return length
        try:
            entries: list[tuple[Any, int]] = _reference_list(scale)
            extents = [self.extents.get((identity[0], address)) for address, _ in entries]
        except (OSError, TypeError):  # not the layout HDF5 writes
            extents = [None]
        if any(extent is None for extent in extents):
            # Some dataset attached is not walked yet: follow the references.
            entries = [(ref, int(axis)) for ref, axis in read_attribute(scale, b"REFERENCE_LIST")]
            extents = [h5r.dereference(ref, scale).shape for ref, _ in entries]
        for extent, (_, axis) in zip(extents, entries, strict=True):
            length = max(length, int(extent[axis]))  # type: ignore[index]
        return length


def _reference_list(scale: h5d.DatasetID) -> list[tuple[int, int]]:
    """A dimension scale's REFERENCE_LIST: the address and axis of each dataset attached."""
    attr = h5a.open(scale, b"REFERENCE_LIST")
    entries = np.zeros(attr.shape, dtype=ATTACHED_DTYPE)
    attr.read(entries, mtype=ATTACHED_TYPE)
    return list(zip(entries["dataset"].tolist(), entries["dimension"].tolist(), strict=True))


class PhonyDims:
    """netCDF-C's names for axes without a dimension scale: one `phony_dim_N` per distinct length
    in a group, a new one when a variable has two unnamed axes of the same length."""

    def __init__(self, counter: list[int]) -> None:
        self.counter = counter  # shared by every group of a file: the names are unique per file
        self.by_length: dict[int, list[str]] = {}

    def fill(self, names: list[str | None], shape: tuple[int, ...]) -> tuple[str, ...]:
        used: dict[int, int] = {}
        out = []
        for name, length in zip(names, shape, strict=True):
            if name is not None:
                out.append(name)
                continue
            nth = used.get(length, 0)
            pool = self.by_length.setdefault(length, [])
            if nth == len(pool):
                pool.append(f"phony_dim_{self.counter[0]}")
                self.counter[0] += 1
            used[length] = nth + 1
            out.append(pool[nth])
        return tuple(out)


def is_pure_dimension(raw_attrs: dict[str, Any]) -> bool:
    label = raw_attrs.get("NAME", b"")
    return isinstance(label, bytes) and label.startswith(PURE_DIMENSION.encode())
