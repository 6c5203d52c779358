"""`HDFParser`: NetCDF4 and plain HDF5 files as virtual Zarr arrays, with h5py for the metadata.

Chunk locations come from HDF5's own chunk index (`chunk_iter`); filter pipelines become Zarr v3
codecs; compact datasets and variable-length strings, whose bytes are not a plain byte range of the
file, are read at parse time into inline chunks.

The walk goes through h5py's low-level API (object ids, property lists, attribute ids): its
high-level objects rebuild a dataspace, a type or a property list on every property access, which
made the walk cost three times as much as enumerating the chunks. Each dataset's creation property
list is read once; attributes are read as h5py reads them, with in-memory types built once.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h5py
import hdf5plugin  # noqa: F401  (registers the blosc, zstd, lz4, bzip2 filters with HDF5)
import numpy as np
from h5py import h5, h5a, h5d, h5g, h5i, h5o, h5p, h5r, h5s, h5t

from vcube.codecs import HDF5Filter, hdf5_filters_to_codecs
from vcube.errors import (
    NotVirtualizableError,
    SourceNotFoundError,
    UnsupportedFeatureError,
    UnsupportedFormatError,
    VcubeError,
)
from vcube.manifests import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore
from vcube.manifests.array_api import grid_shape
from vcube.manifests.attrs import encode_attributes, json_value
from vcube.manifests.inline import encode_chunks, inline_array
from vcube.manifests.manifest import MISSING
from vcube.manifests.metadata import ArrayInfo, array_metadata
from vcube.readers import ObjectReader, ReadOptions, ReadStats
from vcube.registry import ObjectStoreRegistry, local_path, normalize_url

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Mapping

    from zarr.abc.codec import Codec

__all__ = ["HDFParser"]

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
# read on its own (`_Walker.dimension_list`).
UNREAD_ATTRS = HIDDEN_ATTRS - {"CLASS", "NAME"}
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
# Chunk grids up to this many chunks are checked for the common layout (complete, in C order)
# before any index arithmetic.
SMALL_GRID = 1024
PURE_DIMENSION = "This is a netCDF dimension but not a netCDF variable"
NON_COORD_PREFIX = "_nc4_non_coord_"


@dataclass(frozen=True)
class HDFParser:
    """Parse NetCDF4 / HDF5 files into a `ManifestStore`.

    Parameters
    ----------
    group
        Path of the group to open (default: the root group); its subgroups are kept.
    drop_variables
        Variables to leave out.
    load_unsupported
        Variables (or True for all) whose filters have no Zarr codec, to read at parse time into
        inline chunks instead of raising `UnsupportedFeatureError`.
    max_load_bytes
        Refuse to load a variable larger than this.
    read_options
        How remote files are read (range requests, read-ahead blocks or whole file).
    """

    group: str | None = None
    drop_variables: Collection[str] = ()
    load_unsupported: bool | Collection[str] = False
    max_load_bytes: int = 64 * 2**20
    read_options: ReadOptions = field(default_factory=ReadOptions)
    stats: ReadStats = field(default_factory=ReadStats, compare=False)
    """Requests and bytes of every parse made with this parser (in this process)."""

    def __call__(self, url: str, registry: ObjectStoreRegistry | None = None) -> ManifestStore:
        url = normalize_url(url)
        registry = registry or ObjectStoreRegistry()
        stats = ReadStats()
        with _open_hdf5(url, registry, self.read_options, stats) as file:
            root = self._root(file, url)
            group = _Walker(self, url, file).group(root.id)
        self.stats.merge(stats)
        return ManifestStore(group, registry=registry, read_stats=stats)

    def _root(self, file: h5py.File, url: str) -> h5py.Group:
        if not self.group:
            # The root group, not the File: the File's id has the file's creation properties,
            # which would list the root's attributes by name instead of in creation order.
            return file["/"]
        node = file.get(self.group)
        if not isinstance(node, h5py.Group):
            groups = sorted(k for k, v in file.items() if isinstance(v, h5py.Group))
            raise VcubeError(f"{url}: no group {self.group!r} (groups at the root: {groups})")
        return node

    def loads(self, name: str) -> bool:
        if isinstance(self.load_unsupported, bool):
            return self.load_unsupported
        return name in self.load_unsupported


@contextlib.contextmanager
def _open_hdf5(
    url: str, registry: ObjectStoreRegistry, options: ReadOptions, stats: ReadStats
) -> Iterator[h5py.File]:
    store, path, prefix = registry.resolve_with_prefix(url)
    local = local_path(url)
    try:
        if local is not None and prefix is None:
            file = h5py.File(local, "r")
        else:
            reader = ObjectReader(store, path, url=url, options=options, stats=stats)
            file = h5py.File(reader, "r")
    except VcubeError:
        raise
    except FileNotFoundError as err:
        raise SourceNotFoundError(f"{url}: file not found") from err
    except OSError as err:
        raise UnsupportedFormatError(f"{url}: not a readable HDF5/NetCDF4 file ({err})") from err
    with file:
        try:
            yield file
        except VcubeError:
            raise  # already names the file; transient ones must stay retryable
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            raise UnsupportedFormatError(f"{url}: corrupt or truncated HDF5 file ({err})") from err


class _Walker:
    """Builds the `ManifestGroup` tree of one open file.

    A group is walked in two passes: first its datasets' attributes and extents, then its
    subgroups and its variables. The length of an unlimited dimension, the longest of the
    datasets attached to its scale, then mostly comes from extents already read (see `_Scales`).
    """

    def __init__(self, parser: HDFParser, url: str, file: h5py.File) -> None:
        self.parser = parser
        self.url = url
        self.fileno = file.id.fileno
        self.scales = _Scales()
        self.phony_count = [0]

    def group(self, gid: h5g.GroupID) -> ManifestGroup:
        links = [(_decode(raw), _open(gid, raw)) for raw in gid]
        # A dangling soft or external link gives None: skipped, as h5py cannot open it.
        datasets = [
            found
            for key, node in links
            if isinstance(node, h5d.DatasetID) and (found := self.dataset(key, node)) is not None
        ]
        # Subgroups first, then this group's variables: the order in which netCDF-C numbers
        # phony dimensions.
        groups = {key: self.group(node) for key, node in links if isinstance(node, h5g.GroupID)}
        phony = _PhonyDims(self.phony_count)
        arrays = {found.name: self.variable(found, phony) for found in datasets}
        raw_attrs = self.attributes(gid, _attribute_names(gid, gid.get_create_plist()))
        attrs = {k: v for k, v in raw_attrs.items() if k not in HIDDEN_ATTRS}
        return ManifestGroup(arrays=arrays, groups=groups, attributes=json_value(attrs))

    def dataset(self, key: str, dsid: h5d.DatasetID) -> _Dataset | None:
        """A dataset's creation properties and attributes, or None if it makes no variable."""
        name = key.removeprefix(NON_COORD_PREFIX)
        if name in self.parser.drop_variables:
            return None  # not even its attributes are read: they may be what fails
        dcpl = dsid.get_create_plist()
        stored = dsid.shape
        names = _attribute_names(dsid, dcpl)
        raw_attrs = self.attributes(dsid, names)
        self.scales.walked(dsid, stored)
        if _is_pure_dimension(raw_attrs):
            return None
        has_list = "DIMENSION_LIST" in names
        return _Dataset(dsid, dcpl, stored, name, raw_attrs, has_list)

    def variable(self, found: _Dataset, phony: _PhonyDims) -> ManifestArray:
        try:
            layout = self.layout(found, phony)
            try:
                return _virtual_array(layout, self.parser)
            except NotVirtualizableError as err:
                if not self.parser.loads(found.name):
                    raise
                return _loaded_array(layout, self.parser, err)
        except VcubeError:
            raise
        except (OSError, RuntimeError, ValueError, TypeError, IndexError, KeyError) as err:
            raise UnsupportedFormatError(
                f"{self.url}: cannot read the layout of variable {found.name!r}: {err}"
            ) from err

    def layout(self, found: _Dataset, phony: _PhonyDims) -> _Layout:
        dims, lengths = self.dimensions(found, phony)
        # netCDF-C stops a record variable at the records written; netCDF4 shows it at the
        # length of its unlimited dimension, the rest reading as fill.
        shape = tuple(max(n, length) for n, length in zip(found.stored, lengths, strict=True))
        attrs = {k: v for k, v in found.attrs.items() if k not in HIDDEN_ATTRS}
        url = self.source_url(found.dsid, found.name)
        return _Layout(found.dsid, found.dcpl, found.stored, found.name, shape, dims, attrs, url)

    def attributes(self, oid: h5o.ObjectID, names: dict[str, bytes]) -> dict[str, Any]:
        """The attributes of a group or dataset, but the bookkeeping ones vcube does not need."""
        return {
            key: self.attribute(oid, raw) for key, raw in names.items() if key not in UNREAD_ATTRS
        }

    def attribute(self, oid: h5o.ObjectID, raw: bytes) -> Any:
        try:
            return _read_attribute(oid, raw)
        except (OSError, TypeError) as err:
            key, path = _decode(raw), _decode(h5i.get_name(oid) or b"")
            raise UnsupportedFeatureError(
                f"{self.url}: attribute {key!r} of {path!r} has a type vcube cannot read ({err})"
            ) from err

    def dimension_list(self, dsid: h5d.DatasetID, ndim: int) -> Any:
        """DIMENSION_LIST: per axis, object references to the axis' dimension scales."""
        refs = np.empty(ndim, dtype=REFS_DTYPE)
        try:  # (h5py refuses to read an attribute of another shape into `refs`)
            h5a.open(dsid, b"DIMENSION_LIST").read(refs, mtype=REFS_TYPE)
        except (OSError, TypeError):  # not the layout HDF5 writes: read as h5py reads it
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
        self, found: _Dataset, phony: _PhonyDims
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


Identity = tuple[int, int]
"""An HDF5 object's file number and object header address."""


class _Scales:
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
            entries = [(ref, int(axis)) for ref, axis in _read_attribute(scale, b"REFERENCE_LIST")]
            extents = [h5r.dereference(ref, scale).shape for ref, _ in entries]
        for extent, (_, axis) in zip(extents, entries, strict=True):
            length = max(length, int(extent[axis]))  # type: ignore[index]
        return length


@dataclass(frozen=True, slots=True)
class _Dataset:
    """A dataset of the group being walked, with what its variable needs from the file."""

    dsid: h5d.DatasetID
    dcpl: h5p.PropDCID  # read once: storage layout, chunk shape, filters, fill value
    stored: tuple[int, ...]  # the dataset's extent
    name: str
    attrs: dict[str, Any]  # with CLASS and NAME, but not DIMENSION_LIST
    has_dimension_list: bool


def _attribute_names(oid: h5o.ObjectID, plist: h5p.PropOCID) -> dict[str, bytes]:
    """The names of an object's attributes (decoded, and as stored), in creation order where the
    file tracks it (as h5py and netCDF4 list them)."""
    names: list[bytes] = []
    tracked = plist.get_attr_creation_order() & h5p.CRT_ORDER_TRACKED
    order = h5.INDEX_CRT_ORDER if tracked else h5.INDEX_NAME
    h5a.iterate(oid, lambda raw, *_: names.append(raw), index_type=order)
    return {_decode(raw): raw for raw in names}


def _reference_list(scale: h5d.DatasetID) -> list[tuple[int, int]]:
    """A dimension scale's REFERENCE_LIST: the address and axis of each dataset attached."""
    attr = h5a.open(scale, b"REFERENCE_LIST")
    entries = np.zeros(attr.shape, dtype=ATTACHED_DTYPE)
    attr.read(entries, mtype=ATTACHED_TYPE)
    return list(zip(entries["dataset"].tolist(), entries["dimension"].tolist(), strict=True))


def _open(gid: h5g.GroupID, raw: bytes) -> h5o.ObjectID | None:
    """The object a link names, or None for a dangling link (as h5py's `Group.get`)."""
    try:
        return h5o.open(gid, raw)
    except KeyError:
        return None


def _decode(raw: bytes) -> str:
    """A link or attribute name as h5py gives it (UTF-8; undecodable names stay bytes)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw  # type: ignore[return-value]  # as h5py: a str key operation then fails


def _read_attribute(oid: h5o.ObjectID, raw: bytes) -> Any:
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


@dataclass(frozen=True, slots=True)
class _Layout:
    """One dataset and what the variable made of it looks like."""

    dsid: h5d.DatasetID
    dcpl: h5p.PropDCID  # read once: storage layout, chunk shape, filters, fill value
    stored: tuple[int, ...]  # the dataset's extent, which `shape` may exceed
    name: str
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    attrs: dict[str, Any]
    url: str

    def dataset(self) -> h5py.Dataset:
        """h5py's dataset object, to read values (of variables held inline)."""
        return h5py.Dataset(self.dsid, readonly=True)


class _PhonyDims:
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


def _is_pure_dimension(raw_attrs: dict[str, Any]) -> bool:
    label = raw_attrs.get("NAME", b"")
    return isinstance(label, bytes) and label.startswith(PURE_DIMENSION.encode())


def _virtual_array(v: _Layout, parser: HDFParser) -> ManifestArray:
    dcpl, name, url = v.dcpl, v.name, v.url
    dtype = _check_dtype(v.dsid.dtype, name, url)
    if dtype.kind == "O":
        return _loaded_array(v, parser, None)
    layout = dcpl.get_layout()
    if dcpl.get_external_count():
        raise NotVirtualizableError(f"{url}: variable {name!r} is stored in external files")
    skipped: list[tuple[int, ...]] = []
    if layout == h5d.CHUNKED:
        chunks = tuple(int(c) for c in dcpl.get_chunk())
        codecs = _codecs(dcpl, dtype.itemsize, name, url)
        manifest, skipped = _chunked_manifest(v, chunks)
    elif layout in (h5d.CONTIGUOUS, h5d.COMPACT):
        # One chunk holding the whole stored array (compact data lives in the object header, so
        # its bytes are held inline).
        chunks = tuple(max(int(n), 1) for n in v.stored)
        codecs = []
        manifest = _single_chunk_manifest(v, chunks, dtype, layout)
    else:
        raise NotVirtualizableError(f"{url}: variable {name!r} is an HDF5 virtual dataset")
    info = array_metadata(
        shape=v.shape,
        dtype=dtype,
        chunks=chunks,
        codecs=codecs,
        fill_value=_fill_value(v, dtype),
        dimension_names=v.dims,
        attributes=encode_attributes(v.attrs, dtype),
    )
    if skipped:
        manifest = _reencode(v, info, manifest, skipped, parser)
    return ManifestArray(info, manifest, name=name)


def _loaded_array(v: _Layout, parser: HDFParser, reason: Exception | None) -> ManifestArray:
    ds = v.dataset()
    nbytes = int(np.prod(v.shape)) * max(ds.dtype.itemsize, 8)
    if nbytes > parser.max_load_bytes:
        why = f" ({reason})" if reason else ""
        raise NotVirtualizableError(
            f"{v.url}: variable {v.name!r} must be loaded to be read{why}, but at about {nbytes} "
            f"bytes it exceeds max_load_bytes={parser.max_load_bytes}"
        )
    string_info = h5py.check_string_dtype(ds.dtype)
    if string_info is not None and string_info.length is None:
        values = np.asarray(ds.asstr()[()], dtype=object)
        fill: Any = ""
    else:
        values = np.asarray(ds[()])
        fill = _fill_value(v, values.dtype)
    if values.shape != v.shape:
        padded = np.full(v.shape, fill, dtype=values.dtype)
        padded[tuple(slice(0, n) for n in values.shape)] = values
        values = padded
    return inline_array(
        values,
        name=v.name,
        fill_value=fill,
        dimension_names=v.dims,
        attributes=encode_attributes(v.attrs, values.dtype),
    )


def _check_dtype(dtype: np.dtype[Any], name: str, url: str) -> np.dtype[Any]:
    string_info = h5py.check_string_dtype(dtype)
    if string_info is not None:
        return np.dtype(object) if string_info.length is None else np.dtype(f"S{dtype.itemsize}")
    if dtype.names is not None:
        raise UnsupportedFeatureError(
            f"{url}: variable {name!r} has a compound data type {dtype}, which Zarr v3 cannot "
            f"describe; drop it with drop_variables=[{name!r}]"
        )
    if h5py.check_ref_dtype(dtype) is not None:
        raise UnsupportedFeatureError(
            f"{url}: variable {name!r} holds HDF5 object references, which have no Zarr "
            f"equivalent; drop it with drop_variables=[{name!r}]"
        )
    if h5py.check_vlen_dtype(dtype) is not None or dtype.kind in "OV":
        raise UnsupportedFeatureError(
            f"{url}: variable {name!r} has the data type {dtype} (variable-length or opaque), "
            f"which Zarr v3 cannot describe; drop it with drop_variables=[{name!r}]"
        )
    enum_base = h5py.check_enum_dtype(dtype)
    result: np.dtype[Any] = np.dtype(dtype.str) if enum_base is not None else np.dtype(dtype)
    return result


def _fill_value(v: _Layout, dtype: np.dtype[Any]) -> Any:
    if dtype.kind == "O":
        return ""
    # Read in the dataset's own type, as h5py's `Dataset.fillvalue`; HDF5's default is zeros.
    raw = np.zeros((1,), dtype=v.dsid.dtype)
    if v.dcpl.fill_value_defined() != h5d.FILL_VALUE_DEFAULT:
        v.dcpl.get_fill_value(raw)
    if dtype.kind == "S":
        return raw[0] if isinstance(raw[0], bytes) else b""
    value = np.asarray(raw[0], dtype=dtype).reshape(())
    return value.item() if dtype.kind != "c" else complex(value)


def _codecs(dcpl: h5p.PropDCID, itemsize: int, name: str, url: str) -> list[Codec]:
    """The Zarr codecs of a dataset's HDF5 filter pipeline."""
    pipeline = tuple(dcpl.get_filter(i) for i in range(dcpl.get_nfilters()))
    codecs = _pipeline_codecs(pipeline, itemsize)
    if codecs is not None:
        return list(codecs)
    try:  # (built again to say which filter of which variable has no codec)
        return hdf5_filters_to_codecs(_filters(pipeline), itemsize=itemsize, variable=name)
    except NotVirtualizableError as err:
        raise NotVirtualizableError(f"{url}: {err}") from err


@functools.lru_cache(maxsize=256)
def _pipeline_codecs(pipeline: tuple[Any, ...], itemsize: int) -> tuple[Codec, ...] | None:
    """The codecs of a filter pipeline as `dcpl.get_filter` lists it (None when some filter has
    no codec); built once per pipeline, as most variables of a file share one (codecs are
    immutable)."""
    try:
        return tuple(hdf5_filters_to_codecs(_filters(pipeline), itemsize=itemsize, variable=""))
    except NotVirtualizableError:
        return None


def _filters(pipeline: tuple[Any, ...]) -> list[HDF5Filter]:
    return [
        HDF5Filter(int(code), tuple(int(v) for v in cd_values), label.decode())
        for code, _flags, cd_values, label in pipeline
    ]


def _chunked_manifest(
    v: _Layout, chunks: tuple[int, ...]
) -> tuple[ChunkManifest, list[tuple[int, ...]]]:
    """The manifest from HDF5's chunk index, and the chunks stored with some filters skipped."""
    grid = grid_shape(v.shape, chunks)
    infos: list[Any] = []
    if math.prod(v.stored):
        v.dsid.chunk_iter(infos.append)
    if not infos:
        return ChunkManifest.empty(grid), []
    starts, masks, byte_offsets, sizes = zip(*infos, strict=True)
    offsets = np.array(byte_offsets, dtype=np.uint64)
    lengths = np.array(sizes, dtype=np.uint64)
    if _is_complete(starts, grid, grid_shape(v.stored, chunks), chunks):
        # Every chunk written and listed in C order: the columns are the lists as they come.
        path_ids = np.zeros(grid, dtype=np.int32)
        offsets, lengths = offsets.reshape(grid), lengths.reshape(grid)
        skipped = [
            tuple(i // c for i, c in zip(start, chunks, strict=True))
            for start, mask in zip(starts, masks, strict=True)
            if mask
        ]
    else:
        path_ids, offsets, lengths, skipped = _scattered(
            starts, masks, offsets, lengths, grid, v.stored, chunks
        )
    manifest = ChunkManifest(paths=(v.url,), path_ids=path_ids, offsets=offsets, lengths=lengths)
    return manifest, skipped


def _is_complete(
    starts: tuple[tuple[int, ...], ...],
    grid: tuple[int, ...],
    stored_grid: tuple[int, ...],
    chunks: tuple[int, ...],
) -> bool:
    """Whether the chunks at `starts` fill the whole grid in C order (the order in which HDF5
    lists a fully written dataset's chunks); only small grids are checked, where this costs far
    less than computing each chunk's position."""
    return (
        len(starts) == math.prod(grid) <= SMALL_GRID
        and grid == stored_grid
        and starts == _c_order_starts(grid, chunks)
    )


@functools.lru_cache(maxsize=32)
def _c_order_starts(grid: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """The offsets of every chunk of a grid, in C order."""
    axes = (range(0, n * c, c) for n, c in zip(grid, chunks, strict=True))
    return tuple(itertools.product(*axes))


def _scattered(
    starts: tuple[tuple[int, ...], ...],
    masks: tuple[int, ...],
    offsets: np.ndarray[Any, Any],
    lengths: np.ndarray[Any, Any],
    grid: tuple[int, ...],
    stored: tuple[int, ...],
    chunks: tuple[int, ...],
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], list[tuple[int, ...]]]:
    """Manifest columns with each chunk placed at its grid position (chunks in any order, some
    missing), and the chunks stored with some filters skipped."""
    # Flattened first: numpy converts a flat sequence of ints far faster than nested tuples.
    flat_starts = itertools.chain.from_iterable(starts)
    index = np.fromiter(flat_starts, dtype=np.int64, count=len(starts) * len(grid))
    index = index.reshape(len(starts), len(grid)) // np.array(chunks, dtype=np.int64)
    mask_column = np.array(masks, dtype=np.int64)
    # Chunks past the current extent (a dataset shrunk after writing) hold no visible data.
    inside = (index < np.array(grid_shape(stored, chunks))).all(axis=1)
    if not inside.all():
        index, offsets, lengths = index[inside], offsets[inside], lengths[inside]
        mask_column = mask_column[inside]
    flat = np.asarray(np.ravel_multi_index(tuple(index.T), grid))
    path_ids = np.full(math.prod(grid), MISSING, dtype=np.int32)
    path_ids[flat] = 0
    skipped = [tuple(int(i) for i in row) for row in index[mask_column != 0]]
    return (
        path_ids.reshape(grid),
        _scatter(grid, flat, offsets),
        _scatter(grid, flat, lengths),
        skipped,
    )


def _scatter(
    grid: tuple[int, ...], flat: np.ndarray[Any, Any], values: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    out = np.zeros(math.prod(grid), dtype=np.uint64)
    out[flat] = values
    return out.reshape(grid)


def _reencode(
    v: _Layout,
    info: ArrayInfo,
    manifest: ChunkManifest,
    skipped: list[tuple[int, ...]],
    parser: HDFParser,
) -> ChunkManifest:
    """Chunks HDF5 stored with an optional filter skipped (e.g. blosc on incompressible data)
    cannot be decoded by the array's codecs: read their values and hold them re-encoded inline."""
    ds, chunks = v.dataset(), info.chunks
    nbytes = len(skipped) * int(np.prod(chunks)) * ds.dtype.itemsize
    if nbytes > parser.max_load_bytes:
        raise NotVirtualizableError(
            f"{v.url}: variable {v.name!r} has {len(skipped)} chunks stored with some filters "
            f"skipped (first at chunk {skipped[0]}); holding them re-encoded in memory needs "
            f"{nbytes} bytes, more than max_load_bytes={parser.max_load_bytes}"
        )
    fill, dtype = info.fill_value, info.dtype

    def block(index: tuple[int, ...]) -> np.ndarray[Any, Any]:
        sel = tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(index, chunks, v.stored, strict=True)
        )
        out = np.full(chunks, fill, dtype=dtype)
        out[tuple(slice(0, s.stop - s.start) for s in sel)] = ds[sel]
        return out

    encoded = encode_chunks(info, (block(i) for i in skipped))
    return manifest.with_inline(skipped, encoded)


def _single_chunk_manifest(
    v: _Layout, chunks: tuple[int, ...], dtype: np.dtype[Any], layout: int
) -> ChunkManifest:
    """Chunk 0 holds the stored array; any chunks beyond it (the variable is longer than what
    was written) are missing."""
    manifest = ChunkManifest.empty(grid_shape(v.shape, chunks))
    first = (0,) * len(v.shape)
    if not math.prod(v.stored):
        return manifest
    if layout == h5d.COMPACT:
        raw = np.ascontiguousarray(np.asarray(v.dataset()[()], dtype=dtype)).tobytes()
        return manifest.with_inline([first], [raw])
    offset = v.dsid.get_offset()
    if offset is None:
        return manifest
    path_ids, offsets, lengths = manifest.path_ids, manifest.offsets, manifest.lengths
    path_ids[first] = 0
    offsets[first] = offset
    lengths[first] = v.dsid.get_storage_size()
    return ChunkManifest(paths=(v.url,), path_ids=path_ids, offsets=offsets, lengths=lengths)
