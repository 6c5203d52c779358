"""The walk of one open file's groups and datasets into a `ManifestGroup` tree."""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h5py
from h5py import h5d, h5g, h5i, h5l, h5o, h5p, h5r

from vcube.errors import (
    NotVirtualizableError,
    UnsupportedFeatureError,
    UnsupportedFormatError,
    VcubeError,
)
from vcube.manifests import ManifestArray, ManifestGroup
from vcube.manifests.attrs import json_value
from vcube.parsers.hdf5.attributes import (
    HIDDEN_ATTRS,
    UNREAD_ATTRS,
    attribute_names,
    decode,
    read_attribute,
)
from vcube.parsers.hdf5.binary import NativeUnsupported
from vcube.parsers.hdf5.dimensions import (
    NON_COORD_PREFIX,
    PhonyDims,
    Scales,
    is_pure_dimension,
    read_dimension_list,
)
from vcube.parsers.hdf5.layout import Layout, loaded_array, virtual_array
from vcube.parsers.hdf5.native import dataset_chunk_index
from vcube.registry import local_path, normalize_url

if TYPE_CHECKING:
    from vcube.parsers.hdf5.binary import Image
    from vcube.parsers.hdf5.chunk_index import ChunkIndex
    from vcube.parsers.hdf5.parser import HDFParser

__all__ = ["Walker"]


@dataclass(frozen=True, slots=True)
class _Dataset:
    """A dataset of the group being walked, with what its variable needs from the file."""

    dsid: h5d.DatasetID
    dcpl: h5p.PropDCID  # read once: storage layout, chunk shape, filters, fill value
    stored: tuple[int, ...]  # the dataset's extent
    name: str
    attrs: dict[str, Any]  # with CLASS and NAME, but not DIMENSION_LIST
    has_dimension_list: bool


class Walker:
    """Builds the `ManifestGroup` tree of one open file.

    A group is walked in two passes: first its datasets' attributes and extents, then its
    subgroups and its variables. The length of an unlimited dimension, the longest of the
    datasets attached to its scale, then mostly comes from extents already read (see `Scales`).
    """

    def __init__(
        self, parser: HDFParser, url: str, file: h5py.File, image: Image | None = None
    ) -> None:
        self.parser = parser
        self.url = url
        self.image = image  # the file's bytes, for vcube's reader of chunk indexes
        self.fileno = file.id.fileno
        self.scales = Scales()
        self.phony_count = [0]

    def group(self, gid: h5g.GroupID) -> ManifestGroup:
        links = [(decode(raw), _open(gid, raw)) for raw in gid]
        # A dangling soft or external link gives None: skipped, as h5py cannot open it.
        datasets = [
            found
            for key, node in links
            if isinstance(node, h5d.DatasetID) and (found := self.dataset(key, node)) is not None
        ]
        # Subgroups first, then this group's variables: the order in which netCDF-C numbers
        # phony dimensions.
        groups = {key: self.group(node) for key, node in links if isinstance(node, h5g.GroupID)}
        phony = PhonyDims(self.phony_count)
        arrays = {found.name: self.variable(found, phony) for found in datasets}
        raw_attrs = self.attributes(gid, attribute_names(gid, gid.get_create_plist()))
        attrs = {k: v for k, v in raw_attrs.items() if k not in HIDDEN_ATTRS}
        return ManifestGroup(arrays=arrays, groups=groups, attributes=json_value(attrs))

    def dataset(self, key: str, dsid: h5d.DatasetID) -> _Dataset | None:
        """A dataset's creation properties and attributes, or None if it makes no variable."""
        name = key.removeprefix(NON_COORD_PREFIX)
        if name in self.parser.drop_variables:
            return None  # not even its attributes are read: they may be what fails
        dcpl = dsid.get_create_plist()
        stored = dsid.shape
        names = attribute_names(dsid, dcpl)
        raw_attrs = self.attributes(dsid, names)
        self.scales.walked(dsid, stored)
        if is_pure_dimension(raw_attrs):
            return None
        has_list = "DIMENSION_LIST" in names
        return _Dataset(dsid, dcpl, stored, name, raw_attrs, has_list)

    def variable(self, found: _Dataset, phony: PhonyDims) -> ManifestArray:
        try:
            layout = self.layout(found, phony)
            try:
                return virtual_array(layout, self.parser)
            except NotVirtualizableError as err:
                if not self.parser.loads(found.name):
                    raise
                return loaded_array(layout, self.parser, err)
        except VcubeError:
            raise
        except (OSError, RuntimeError, ValueError, TypeError, IndexError, KeyError) as err:
            raise UnsupportedFormatError(
                f"{self.url}: cannot read the layout of variable {found.name!r}: {err}"
            ) from err

    def layout(self, found: _Dataset, phony: PhonyDims) -> Layout:
        dims, lengths = self.dimensions(found, phony)
        # netCDF-C stops a record variable at the records written; netCDF4 shows it at the
        # length of its unlimited dimension, the rest reading as fill.
        shape = tuple(max(n, length) for n, length in zip(found.stored, lengths, strict=True))
        attrs = {k: v for k, v in found.attrs.items() if k not in HIDDEN_ATTRS}
        url = self.source_url(found.dsid, found.name)
        layout = Layout(found.dsid, found.dcpl, found.stored, found.name, shape, dims, attrs, url)
        return dataclasses.replace(layout, chunk_index=lambda: self.chunk_index(found))

    def chunk_index(self, found: _Dataset) -> ChunkIndex | None:
        """A chunked dataset's chunks as vcube's reader lists them, None where it cannot."""
        if self.image is None or found.dsid.fileno != self.fileno:
            return None
        try:
            address = h5o.get_info(found.dsid).addr
            return dataset_chunk_index(self.image, address, found.stored)
        except (NativeUnsupported, ValueError, IndexError, KeyError, TypeError, struct.error):
            return None

    def attributes(self, oid: h5o.ObjectID, names: dict[str, bytes]) -> dict[str, Any]:
        """The attributes of a group or dataset, but the bookkeeping ones vcube does not need."""
        return {
            key: self.attribute(oid, raw) for key, raw in names.items() if key not in UNREAD_ATTRS
        }

    def attribute(self, oid: h5o.ObjectID, raw: bytes) -> Any:
        try:
            return read_attribute(oid, raw)
        except (OSError, TypeError) as err:
            key, path = decode(raw), decode(h5i.get_name(oid) or b"")
            raise UnsupportedFeatureError(
                f"{self.url}: attribute {key!r} of {path!r} has a type vcube cannot read ({err})"
            ) from err

    def dimension_list(self, dsid: h5d.DatasetID, ndim: int) -> Any:
        """DIMENSION_LIST: per axis, object references to the axis' dimension scales."""
        refs = read_dimension_list(dsid, ndim)
        if refs is None:  # not the layout HDF5 writes: read as h5py reads it
            return self.attribute(dsid, b"DIMENSION_LIST")
        return refs

    def source_url(self, dsid: h5d.DatasetID, name: str) -> str:
        """The URL of the file holding a dataset's bytes: another file behind an external link."""
        if dsid.fileno == self.fileno:
            return self.url
        filename = h5py.Dataset(dsid).file.filename
        if local_path(self.url) is None:
            raise NotVirtualizableError(
                f"{self.url}: variable {name!r} is an external link into {filename!r}, "
                f"which vcube can follow only for local files; virtualize that file itself"
            )
        return normalize_url(filename)

    def dimensions(
        self, found: _Dataset, phony: PhonyDims
    ) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Dimension names and lengths (0 where the dataset's own length decides)."""
        stored = found.stored
        ndim = len(stored)
        if ndim == 0:
            return (), ()
        if found.attrs.get("CLASS") == b"DIMENSION_SCALE" and ndim == 1:
            return (found.name,), (self.scales.describe(found.dsid)[1],)
        names: list[str | None] = [None] * ndim
        lengths = [0] * ndim
        if found.has_dimension_list:
            for axis, refs in enumerate(self.dimension_list(found.dsid, ndim)):
                if len(refs):
                    scale = h5r.dereference(refs[0], found.dsid)
                    names[axis], lengths[axis] = self.scales.describe(scale)
        return phony.fill(names, stored), tuple(lengths)


def _open(gid: h5g.GroupID, raw: bytes) -> h5o.ObjectID | None:
    """The object a link names, or None for a dangling soft or external link (as h5py's
    `Group.get`); a hard link always leads to an object, so one that cannot be opened is damage,
    reported (h5py raises KeyError for both)."""
    try:
        return h5o.open(gid, raw)
    except KeyError:
        if gid.links.get_info(raw).type == h5l.TYPE_HARD:
            raise
        return None
