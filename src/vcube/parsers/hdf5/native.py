"""The native walk: a file's groups and datasets into a `ManifestGroup` from HDF5 structures
decoded in Python and numpy, without h5py.

It makes the same variables as the h5py `Walker` (same names, dimensions, attributes, fill
values, codecs and chunk references) for what it decodes: the layouts, types, messages and
chunk indexes NetCDF4 and common HDF5 files are made of, checksums verified. It never raises
errors of its own: anything else (shared messages, soft and external links, compound and enum
variables, variable-length string variables, chunks stored with filters skipped, damaged
metadata...) raises `NativeUnsupported`, and `HDFParser` walks the file with h5py instead, which
reads or refuses it as before.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vcube.errors import SourceChangedError, SourceNotFoundError, TransientIOError, VcubeError
from vcube.manifests import ChunkManifest, ManifestArray, ManifestGroup
from vcube.manifests.array_api import grid_shape
from vcube.manifests.attrs import encode_attributes, json_value
from vcube.manifests.metadata import array_metadata
from vcube.parsers.hdf5 import messages as msg
from vcube.parsers.hdf5.attributes import HIDDEN_ATTRS, UNREAD_ATTRS, decode
from vcube.parsers.hdf5.binary import UNDEFINED, Cursor, Image, NativeUnsupported
from vcube.parsers.hdf5.chunk_index import ChunkIndex, read_chunk_index
from vcube.parsers.hdf5.chunks import index_manifest
from vcube.parsers.hdf5.dense import FractalHeap, btree_records
from vcube.parsers.hdf5.dimensions import NON_COORD_PREFIX, PhonyDims, is_pure_dimension
from vcube.parsers.hdf5.layout import pipeline_codecs
from vcube.parsers.hdf5.objects import (
    GlobalHeap,
    ObjectHeader,
    read_object_header,
    read_superblock,
    symbol_table_links,
)

if TYPE_CHECKING:
    from vcube.parsers.hdf5.parser import HDFParser

__all__ = ["dataset_chunk_index", "native_group", "superblock_image"]

SIGNATURE = b"\x89HDF\r\n\x1a\n"
SIGNATURE_OFFSETS = (0, 512, 1024, 2048, 4096)
CLASS_SCALE = b"DIMENSION_SCALE"


def native_group(parser: HDFParser, url: str, image: Image, path: str | None) -> ManifestGroup:
    """The group at `path` (the root if None) of the file in `image`, with its subgroups.

    Raises
    ------
    NativeUnsupported
        When the file holds something only the h5py walker reads (or refuses with its error).
    """
    try:
        walk = _Walk(parser, url, image)
        header = walk.header(read_superblock(image, _superblock_offset(image)))
        for part in (path or "").split("/"):
            if part:
                header = walk.subgroup(header, part)
        return walk.group(header)
    except (NativeUnsupported, SourceNotFoundError, SourceChangedError, TransientIOError):
        raise  # the I/O errors: reading through h5py would fail alike
    except (VcubeError, ValueError, TypeError, IndexError, KeyError, struct.error) as err:
        raise NativeUnsupported(f"{type(err).__name__}: {err}") from err


def dataset_chunk_index(image: Image, address: int, stored: tuple[int, ...]) -> ChunkIndex:
    """The chunks of the chunked dataset whose object header is at `address` and whose extent
    is `stored` (for the h5py walker, which otherwise relies on HDF5's `chunk_iter`); `image`
    must have read the superblock (`superblock_image`)."""
    header = read_object_header(image, address)
    layout = msg.layout(_message(header, msg.LAYOUT).body, image)
    if layout.kind != "chunked":
        raise NativeUnsupported("not a chunked dataset")
    _, maxshape = msg.cached_dataspace(_message(header, msg.DATASPACE).body, image)
    return read_chunk_index(image, layout, stored, maxshape)


def superblock_image(image: Image) -> Image | None:
    """`image` with its base address and integer sizes read from the superblock, or None."""
    try:
        read_superblock(image, _superblock_offset(image))
    except (NativeUnsupported, ValueError, IndexError, struct.error):
        return None
    return image


def _superblock_offset(image: Image) -> int:
    for offset in SIGNATURE_OFFSETS:
        if offset + 8 <= image.size and image.read_absolute(offset, 8) == SIGNATURE:
            return offset
    raise NativeUnsupported("no HDF5 signature")


def _is_group(header: ObjectHeader) -> bool:
    kinds = {m.type for m in header.messages}
    return bool(kinds & {msg.SYMBOL_TABLE, msg.LINK_INFO, msg.LINK}) and msg.LAYOUT not in kinds


def _is_dataset(header: ObjectHeader) -> bool:
    return any(m.type == msg.LAYOUT for m in header.messages)


@dataclass(frozen=True, slots=True)
class _Dataset:
    """A dataset of the group being walked, with what its variable needs."""

    header: ObjectHeader
    name: str
    stored: tuple[int, ...]
    maxshape: tuple[int | None, ...]
    attrs: dict[str, Any]  # with CLASS and NAME, but not DIMENSION_LIST
    dimension_list: msg.Attribute | None


class _Walk:
    """The state of one file's walk (the same two passes per group as the h5py `Walker`)."""

    def __init__(self, parser: HDFParser, url: str, image: Image) -> None:
        self.parser = parser
        self.url = url
        self.image = image
        self.global_heap = GlobalHeap(image)
        self.headers: dict[int, ObjectHeader] = {}
        self.names: dict[int, bytes] = {}  # link name of every object listed so far
        self.extents: dict[int, tuple[int, ...]] = {}
        self.scales: dict[int, tuple[str, int]] = {}
        self.phony_count = [0]

    def header(self, address: int) -> ObjectHeader:
        if address not in self.headers:
            self.headers[address] = read_object_header(self.image, address)
        return self.headers[address]

    # -- groups --------------------------------------------------------------------------------

    def group(self, header: ObjectHeader) -> ManifestGroup:
        children = []
        for raw, address in self.links(header):
            if self.names.setdefault(address, raw) != raw:
                raise NativeUnsupported("an object with two names")  # which one h5py names varies
            children.append((decode(raw), self.header(address)))
        datasets = [
            found
            for key, child in children
            if _is_dataset(child) and (found := self.dataset(key, child)) is not None
        ]
        groups = {key: self.group(child) for key, child in children if _is_group(child)}
        phony = PhonyDims(self.phony_count)
        arrays = {found.name: self.variable(found, phony) for found in datasets}
        attrs = {k: v for k, v in self.attributes(header).items() if k not in HIDDEN_ATTRS}
        return ManifestGroup(arrays=arrays, groups=groups, attributes=json_value(attrs))

    def subgroup(self, header: ObjectHeader, name: str) -> ObjectHeader:
        """The group `name` of the group at `header`, on the way to the one `group=` opens; the
        names met on the way name the dimension scales of the groups above it."""
        links = dict(self.links(header))
        for raw, address in links.items():
            self.names.setdefault(address, raw)
        if name.encode() not in links:
            raise NativeUnsupported(f"no group {name!r}")
        child = self.header(links[name.encode()])
        if not _is_group(child):
            raise NativeUnsupported(f"{name!r} is not a group")
        return child

    def links(self, header: ObjectHeader) -> list[tuple[bytes, int]]:
        """(name, object header address) of a group's hard links, in name order (as h5py lists
        them)."""
        table = header.find(msg.SYMBOL_TABLE)
        if table is not None:
            body = Cursor(table.body, self.image)
            found = symbol_table_links(self.image, body.address(), body.address())
            return sorted(found)
        message = header.find(msg.LINK_INFO)
        info = msg.dense_info(message.body, self.image, 8) if message is not None else None
        if info is not None and info.heap != UNDEFINED:
            heap = FractalHeap(self.image, info.heap)
            bodies = [heap.get(record[4:]) for record in btree_records(self.image, info.names)]
        else:
            bodies = [m.body for m in header.all(msg.LINK)]
        links = [msg.link(body, self.image) for body in bodies]
        if any(link.kind != 0 for link in links):
            raise NativeUnsupported("a soft or external link")
        if info is not None and info.order_tracked:
            links.sort(key=lambda link: link.order)
        else:
            links.sort(key=lambda link: link.name)
        return [(link.name, link.address) for link in links]

    # -- attributes ----------------------------------------------------------------------------

    def raw_attributes(self, header: ObjectHeader) -> dict[bytes, bytes]:
        """An object's attribute messages by name, in creation order where the file tracks it,
        else by name; each is decoded only when its value is needed."""
        message = header.find(msg.ATTRIBUTE_INFO)
        info = msg.dense_info(message.body, self.image, 2) if message is not None else None
        if info is not None and info.heap != UNDEFINED:
            heap = FractalHeap(self.image, info.heap)
            ordered = []
            for record in btree_records(self.image, info.names):
                if record[8] & 0x02:
                    raise NativeUnsupported("a shared attribute")
                order = int.from_bytes(record[9:13], "little")
                ordered.append((order, heap.get(record[:8])))
        else:
            ordered = [(m.order, m.body) for m in header.all(msg.ATTRIBUTE)]
        named = [(order, msg.attribute_name(body), body) for order, body in ordered]
        named.sort(key=lambda entry: entry[0] if header.attr_order_tracked else entry[1])
        return {name: body for _, name, body in named}

    def attributes(self, header: ObjectHeader) -> dict[str, Any]:
        return self.values(self.raw_attributes(header))

    def values(self, found: dict[bytes, bytes]) -> dict[str, Any]:
        """The attributes' values, but those of the bookkeeping ones vcube does not need."""
        return {
            key: self.value(msg.attribute(body, self.image))
            for raw, body in found.items()
            if (key := decode(raw)) not in UNREAD_ATTRS
        }

    def value(self, attr: msg.Attribute) -> Any:
        """An attribute's value as h5py reads it (see `attributes.read_attribute`)."""
        kind, dtype, shape = attr.type.kind, attr.type.dtype, attr.shape
        if shape is None:
            return "" if kind == "S" else np.empty(0, dtype)
        count = math.prod(shape)
        if kind == "number":
            values = np.frombuffer(attr.data, dtype=dtype, count=count).reshape(shape)
        elif kind == "S":
            values = attr.type.strings(attr.data, count).reshape(shape)
        elif kind == "vlen-str":
            texts = [
                item.decode("utf-8", "surrogateescape") for item in self.vlen_items(attr, count)
            ]
            values = np.array(texts, dtype=object).reshape(shape)
        else:
            raise NativeUnsupported(f"an attribute of kind {kind}")
        return values[()] if values.ndim == 0 else values

    def vlen_items(self, attr: msg.Attribute, count: int) -> list[bytes]:
        """The elements of a variable-length attribute, from the global heap."""
        c = Cursor(attr.data, self.image)
        items = []
        for _ in range(count):
            length = c.u32()
            collection, index = c.address(), c.u32()
            if length == 0 or collection in (0, UNDEFINED):
                items.append(b"")
                continue
            size = length * (attr.type.base.dtype.itemsize if attr.type.base else 1)
            items.append(self.global_heap.get(collection, index)[:size])
        return items

    # -- datasets ------------------------------------------------------------------------------

    def dataset(self, key: str, header: ObjectHeader) -> _Dataset | None:
        name = key.removeprefix(NON_COORD_PREFIX)
        if name in self.parser.drop_variables:
            return None
        stored, maxshape = self.extent(header)
        found = self.raw_attributes(header)
        attrs = self.values(found)
        if is_pure_dimension(attrs):
            return None
        listed = found.get(b"DIMENSION_LIST")
        dimension_list = msg.attribute(listed, self.image) if listed is not None else None
        return _Dataset(header, name, stored, maxshape, attrs, dimension_list)

    def extent(self, header: ObjectHeader) -> tuple[tuple[int, ...], tuple[int | None, ...]]:
        space = header.find(msg.DATASPACE)
        if space is None:
            raise NativeUnsupported("a dataset without a dataspace")
        shape, maxshape = msg.cached_dataspace(space.body, self.image)
        if shape is None:
            raise NativeUnsupported("a dataset with a null dataspace")
        self.extents[header.address] = shape
        return shape, maxshape

    def variable(self, found: _Dataset, phony: PhonyDims) -> ManifestArray:
        dims, lengths = self.dimensions(found, phony)
        shape = tuple(max(n, length) for n, length in zip(found.stored, lengths, strict=True))
        attrs = {k: v for k, v in found.attrs.items() if k not in HIDDEN_ATTRS}
        header = found.header
        kind = _message(header, msg.DATATYPE)
        dtype = msg.cached_datatype(kind.body, self.image)
        if dtype.kind not in ("number", "S") or dtype.padding == msg.SPACEPAD:
            raise NativeUnsupported(f"a variable of kind {dtype.kind}, padding {dtype.padding}")
        if header.find(msg.EXTERNAL_FILES) is not None:
            raise NativeUnsupported("external storage")
        layout = msg.layout(_message(header, msg.LAYOUT).body, self.image)
        manifest, chunks, codecs = self.storage(found, layout, shape, dtype)
        info = array_metadata(
            shape=shape,
            dtype=dtype.dtype,
            chunks=chunks,
            codecs=codecs,
            fill_value=self.fill_value(header, dtype),
            dimension_names=dims,
            attributes=encode_attributes(attrs, dtype.dtype),
        )
        return ManifestArray(info, manifest, name=found.name)

    def storage(
        self, found: _Dataset, layout: msg.Layout, shape: tuple[int, ...], kind: msg.DataType
    ) -> tuple[ChunkManifest, tuple[int, ...], list[Any]]:
        """The manifest, chunk shape and codecs of a dataset's stored bytes."""
        stored, dtype = found.stored, kind.dtype
        if layout.element_size and layout.element_size != dtype.itemsize:
            raise NativeUnsupported("chunks of elements of another size than the datatype's")
        if layout.kind == "chunked":
            pipeline = found.header.find(msg.FILTERS)
            filters = msg.cached_filters(pipeline.body) if pipeline is not None else ()
            codecs = pipeline_codecs(filters, dtype.itemsize)
            if codecs is None:
                raise NativeUnsupported("a filter without a codec")
            chunks = layout.chunks
            if len(chunks) != len(shape):
                raise NativeUnsupported("a chunk shape of another rank")
            if not math.prod(stored):
                return ChunkManifest.empty(grid_shape(shape, chunks)), chunks, list(codecs)
            index = read_chunk_index(self.image, layout, stored, found.maxshape)
            manifest, skipped = index_manifest(self.url, shape, stored, chunks, index)
            if skipped:
                raise NativeUnsupported("chunks stored with filters skipped")
            return manifest, chunks, list(codecs)
        chunks = tuple(max(int(n), 1) for n in stored)
        manifest = ChunkManifest.empty(grid_shape(shape, chunks))
        first = (0,) * len(shape)
        if not math.prod(stored):
            return manifest, chunks, []
        if layout.kind == "compact":
            count = math.prod(stored)
            if len(layout.data) < count * dtype.itemsize:
                raise NativeUnsupported("compact data shorter than its dataset")
            data = layout.data[: count * dtype.itemsize]
            if kind.kind == "S":  # held as h5py reads the strings
                data = kind.strings(data, count).tobytes()
            return manifest.with_inline([first], [data]), chunks, []
        if layout.address == UNDEFINED:
            return manifest, chunks, []
        path_ids, offsets, lengths = manifest.path_ids, manifest.offsets, manifest.lengths
        path_ids[first] = 0
        offsets[first] = layout.address + self.image.base
        lengths[first] = layout.size
        refs = ChunkManifest(paths=(self.url,), path_ids=path_ids, offsets=offsets, lengths=lengths)
        return refs, chunks, []

    def fill_value(self, header: ObjectHeader, kind: msg.DataType) -> Any:
        """The fill value as `layout._fill_value` reads it through h5py."""
        dtype = kind.dtype
        message = header.find(msg.FILL_VALUE)
        if message is None and header.find(msg.OLD_FILL_VALUE) is not None:
            raise NativeUnsupported("an old-style fill value message")
        raw = msg.fill_value(message.body, self.image) if message is not None else None
        if raw is None:
            raw = bytes(dtype.itemsize)
        if len(raw) != dtype.itemsize:
            raise NativeUnsupported("a fill value of another size")
        if dtype.kind == "S":
            return kind.strings(raw, 1)[0]
        value = np.frombuffer(raw, dtype=dtype)[0]
        return value.item() if dtype.kind != "c" else complex(value)

    # -- dimensions ----------------------------------------------------------------------------

    def dimensions(
        self, found: _Dataset, phony: PhonyDims
    ) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Dimension names and lengths (0 where the dataset's own length decides)."""
        ndim = len(found.stored)
        if ndim == 0:
            return (), ()
        if found.attrs.get("CLASS") == CLASS_SCALE and ndim == 1:
            return (found.name,), (self.scale(found.header.address)[1],)
        names: list[str | None] = [None] * ndim
        lengths = [0] * ndim
        if found.dimension_list is not None:
            refs = found.dimension_list
            if refs.shape != (ndim,) or refs.type.kind != "vlen" or refs.type.base is None:
                raise NativeUnsupported("a DIMENSION_LIST of another layout")
            if refs.type.base.kind != "ref":
                raise NativeUnsupported("a DIMENSION_LIST of another type")
            for axis, item in enumerate(self.vlen_items(refs, ndim)):
                if item:
                    address = int.from_bytes(item[: self.image.offset_size], "little")
                    names[axis], lengths[axis] = self.scale(address)
        return phony.fill(names, found.stored), tuple(lengths)

    def scale(self, address: int) -> tuple[str, int]:
        """Name and length of a dimension scale (see `dimensions.Scales.describe`)."""
        if address not in self.scales:
            raw = self.names.get(address)
            if raw is None:
                raise NativeUnsupported("a dimension scale in a group not walked yet")
            name = decode(raw).removeprefix(NON_COORD_PREFIX)
            self.scales[address] = (name, self.scale_length(address))
        return self.scales[address]

    def scale_length(self, address: int) -> int:
        header = self.header(address)
        stored, maxshape = self.extent(header)
        length = stored[0] if stored else 0
        if not maxshape or maxshape[0] is not None:
            return length
        attached = self.raw_attributes(header).get(b"REFERENCE_LIST")
        if attached is None:
            return length
        entries = _reference_list(msg.attribute(attached, self.image), self.image.offset_size)
        for dataset, axis in entries:
            extent = self.extents.get(dataset)
            if extent is None:
                extent, _ = self.extent(self.header(dataset))
            length = max(length, int(extent[axis]))
        return length


def _message(header: ObjectHeader, kind: int) -> Any:
    found = header.find(kind)
    if found is None:
        raise NativeUnsupported(f"no message of type {kind}")
    return found


def _reference_list(attr: msg.Attribute, offset_size: int) -> list[tuple[int, int]]:
    """A REFERENCE_LIST's entries: the address of each dataset attached and its axis."""
    fields = attr.type.fields
    if (
        attr.shape is None
        or len(attr.shape) != 1
        or [f[0] for f in fields]
        != [
            b"dataset",
            b"dimension",
        ]
    ):
        raise NativeUnsupported("a REFERENCE_LIST of another layout")
    (_, ref_offset, ref_type), (_, axis_offset, axis_type) = fields
    if ref_type.kind != "ref" or axis_type.kind != "number":
        raise NativeUnsupported("a REFERENCE_LIST of another type")
    size = attr.type.dtype.itemsize
    entries = []
    for i in range(attr.shape[0]):
        row = attr.data[i * size : (i + 1) * size]
        dataset = int.from_bytes(row[ref_offset : ref_offset + offset_size], "little")
        axis = np.frombuffer(row, dtype=axis_type.dtype, count=1, offset=axis_offset)[0]
        entries.append((dataset, int(axis)))
    return entries
