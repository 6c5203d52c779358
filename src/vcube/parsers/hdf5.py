"""`HDFParser`: NetCDF4 and plain HDF5 files as virtual Zarr arrays, with h5py for the metadata.

Chunk locations come from HDF5's own chunk index (`chunk_iter`); filter pipelines become Zarr v3
codecs; compact datasets and variable-length strings, whose bytes are not a plain byte range of the
file, are read at parse time into inline chunks.
"""

from __future__ import annotations

import contextlib
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h5py
import hdf5plugin  # noqa: F401  (registers the blosc, zstd, lz4, bzip2 filters with HDF5)
import numpy as np

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
    from collections.abc import Collection, Iterator

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
# Hidden attributes vcube never needs: not read at all, which saves a third of the parse time.
UNREAD_ATTRS = HIDDEN_ATTRS - {"CLASS", "DIMENSION_LIST", "NAME"}
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
            group = _Walker(self, url, file).group(root)
        self.stats.merge(stats)
        return ManifestStore(group, registry=registry, read_stats=stats)

    def _root(self, file: h5py.File, url: str) -> h5py.Group:
        if not self.group:
            return file
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
    """Builds the `ManifestGroup` tree of one open file."""

    def __init__(self, parser: HDFParser, url: str, file: h5py.File) -> None:
        self.parser = parser
        self.url = url
        self.file = file
        self.scales: dict[tuple[int, int], tuple[str, int]] = {}
        self.phony_count = [0]

    def group(self, group: h5py.Group) -> ManifestGroup:
        arrays: dict[str, ManifestArray] = {}
        groups: dict[str, ManifestGroup] = {}
        phony = _PhonyDims(self.phony_count)
        # Subgroups first, then this group's variables: the order in which netCDF-C numbers
        # phony dimensions.
        nodes = [(key, group.get(key)) for key in group]
        for key, node in nodes:
            if isinstance(node, h5py.Group):
                groups[key] = self.group(node)
        for key, node in nodes:
            # A dangling soft or external link gives None: skipped, as h5py cannot open it.
            if isinstance(node, h5py.Dataset):
                name = key.removeprefix(NON_COORD_PREFIX)
                raw_attrs = self.attributes(node)
                if name in self.parser.drop_variables or _is_pure_dimension(raw_attrs):
                    continue
                arrays[name] = self.variable(node, name, raw_attrs, phony)
        attrs = {k: v for k, v in self.attributes(group).items() if k not in HIDDEN_ATTRS}
        return ManifestGroup(arrays=arrays, groups=groups, attributes=json_value(attrs))

    def variable(
        self, ds: h5py.Dataset, name: str, raw_attrs: dict[str, Any], phony: _PhonyDims
    ) -> ManifestArray:
        try:
            dims, lengths = self.dimensions(ds, name, raw_attrs, phony)
            # netCDF-C stops a record variable at the records written; netCDF4 shows it at the
            # length of its unlimited dimension, the rest reading as fill.
            shape = tuple(max(n, length) for n, length in zip(ds.shape, lengths, strict=True))
            attrs = {k: v for k, v in raw_attrs.items() if k not in HIDDEN_ATTRS}
            layout = _Layout(ds, name, shape, dims, attrs, self.source_url(ds, name))
            return _virtual_array(layout, self.parser)
        except NotVirtualizableError as err:
            if not self.parser.loads(name):
                raise
            return _loaded_array(layout, self.parser, err)
        except VcubeError:
            raise
        except (OSError, RuntimeError, ValueError, TypeError, IndexError, KeyError) as err:
            raise UnsupportedFormatError(
                f"{self.url}: cannot read the layout of variable {name!r}: {err}"
            ) from err

    def attributes(self, node: h5py.HLObject) -> dict[str, Any]:
        """Every attribute of `node`, the hidden bookkeeping ones included."""
        out: dict[str, Any] = {}
        attrs = node.attrs
        for key in attrs:
            if key in UNREAD_ATTRS:
                continue
            try:
                value = attrs[key]
            except (OSError, TypeError) as err:
                raise UnsupportedFeatureError(
                    f"{self.url}: attribute {key!r} of {node.name!r} has a type vcube cannot read "
                    f"({err})"
                ) from err
            if isinstance(value, h5py.Empty):
                value = "" if value.dtype.kind == "S" else np.empty(0, value.dtype)
            out[key] = value
        return out

    def source_url(self, ds: h5py.Dataset, name: str) -> str:
        """The URL of the file holding `ds`'s bytes: another file behind an external link."""
        if ds.id.fileno == self.file.id.fileno:
            return self.url
        if local_path(self.url) is None:
            raise NotVirtualizableError(
                f"{self.url}: variable {name!r} is an external link into {ds.file.filename!r}, "
                f"which vcube can follow only for local files; virtualize that file itself"
            )
        return normalize_url(ds.file.filename)

    def dimensions(
        self, ds: h5py.Dataset, name: str, raw_attrs: dict[str, Any], phony: _PhonyDims
    ) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Dimension names and lengths (0 where the dataset's own length decides)."""
        if ds.ndim == 0:
            return (), ()
        if raw_attrs.get("CLASS") == b"DIMENSION_SCALE" and ds.ndim == 1:
            return (name,), (self.scale(ds.id)[1],)
        names: list[str | None] = [None] * ds.ndim
        lengths = [0] * ds.ndim
        for axis, refs in enumerate(raw_attrs.get("DIMENSION_LIST", ())):
            if len(refs):
                names[axis], lengths[axis] = self.scale(h5py.h5r.dereference(refs[0], ds.id))
        return phony.fill(names, ds.shape), tuple(lengths)

    def scale(self, target: Any) -> tuple[str, int]:
        """Name and length of a dimension scale; an unlimited one is as long as the longest
        dataset attached to it."""
        # References do not hash by target, so scales are keyed by file and object address.
        address = (target.fileno, h5py.h5o.get_info(target).addr)
        if address not in self.scales:
            path = (h5py.h5i.get_name(target) or b"").decode()
            name = posixpath.basename(path).removeprefix(NON_COORD_PREFIX)
            self.scales[address] = (name, _scale_length(h5py.Dataset(target)))
        return self.scales[address]


def _scale_length(scale: h5py.Dataset) -> int:
    length = int(scale.shape[0]) if scale.ndim else 0
    if not scale.maxshape or scale.maxshape[0] is not None:
        return length
    attached = scale.attrs.get("REFERENCE_LIST")
    for entry in attached if attached is not None else ():
        shape = h5py.h5r.dereference(entry[0], scale.id).shape
        length = max(length, int(shape[int(entry[1])]))
    return length


@dataclass(frozen=True, slots=True)
class _Layout:
    """One dataset and what the variable made of it looks like."""

    ds: h5py.Dataset
    name: str
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    attrs: dict[str, Any]
    url: str


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
    ds, name, url = v.ds, v.name, v.url
    dtype = _check_dtype(ds, name, url)
    if dtype.kind == "O":
        return _loaded_array(v, parser, None)
    plist = ds.id.get_create_plist()
    layout = plist.get_layout()
    if plist.get_external_count():
        raise NotVirtualizableError(f"{url}: variable {name!r} is stored in external files")
    skipped: list[tuple[int, ...]] = []
    if layout == h5py.h5d.CHUNKED:
        chunks = tuple(int(c) for c in ds.chunks)
        try:
            codecs = hdf5_filters_to_codecs(_filters(plist), itemsize=dtype.itemsize, variable=name)
        except NotVirtualizableError as err:
            raise NotVirtualizableError(f"{url}: {err}") from err
        manifest, skipped = _chunked_manifest(ds, v.shape, chunks, url)
    elif layout in (h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT):
        # One chunk holding the whole stored array (compact data lives in the object header, so
        # its bytes are held inline).
        chunks = tuple(max(int(n), 1) for n in ds.shape)
        codecs = []
        manifest = _single_chunk_manifest(ds, v.shape, chunks, url, dtype, layout)
    else:
        raise NotVirtualizableError(f"{url}: variable {name!r} is an HDF5 virtual dataset")
    info = array_metadata(
        shape=v.shape,
        dtype=dtype,
        chunks=chunks,
        codecs=codecs,
        fill_value=_fill_value(ds, dtype),
        dimension_names=v.dims,
        attributes=encode_attributes(v.attrs, dtype),
    )
    if skipped:
        manifest = _reencode(ds, info, manifest, skipped, parser, url, name)
    return ManifestArray(info, manifest, name=name)


def _loaded_array(v: _Layout, parser: HDFParser, reason: Exception | None) -> ManifestArray:
    ds = v.ds
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
        fill = _fill_value(ds, values.dtype)
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


def _check_dtype(ds: h5py.Dataset, name: str, url: str) -> np.dtype[Any]:
    dtype = ds.dtype
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


def _fill_value(ds: h5py.Dataset, dtype: np.dtype[Any]) -> Any:
    if dtype.kind == "S":
        raw = ds.fillvalue
        return raw if isinstance(raw, bytes) else b""
    if dtype.kind == "O":
        return ""
    value = np.asarray(ds.fillvalue, dtype=dtype).reshape(())
    return value.item() if dtype.kind != "c" else complex(value)


def _filters(plist: h5py.h5p.PropDCID) -> list[HDF5Filter]:
    out = []
    for i in range(plist.get_nfilters()):
        code, _flags, cd_values, label = plist.get_filter(i)
        out.append(HDF5Filter(int(code), tuple(int(v) for v in cd_values), label.decode()))
    return out


def _chunked_manifest(
    ds: h5py.Dataset, shape: tuple[int, ...], chunks: tuple[int, ...], url: str
) -> tuple[ChunkManifest, list[tuple[int, ...]]]:
    """The manifest from HDF5's chunk index, and the chunks stored with some filters skipped."""
    grid = grid_shape(shape, chunks)
    infos: list[Any] = []
    if ds.size:
        ds.id.chunk_iter(infos.append)
    if not infos:
        return ChunkManifest.empty(grid), []
    starts, filter_masks, byte_offsets, sizes = zip(*infos, strict=True)
    index = np.array(starts, dtype=np.int64).reshape(len(infos), -1) // np.array(chunks)
    masks = np.array(filter_masks, dtype=np.int64)
    offsets = np.array(byte_offsets, dtype=np.uint64)
    lengths = np.array(sizes, dtype=np.uint64)
    # Chunks past the current extent (a dataset shrunk after writing) hold no visible data.
    inside = np.all(index < -(-np.array(ds.shape) // np.array(chunks)), axis=1)
    where = tuple(index[inside].T)
    path_ids = np.full(grid, MISSING, dtype=np.int32)
    path_ids[where] = 0
    manifest = ChunkManifest(
        paths=(url,),
        path_ids=path_ids,
        offsets=_scatter(grid, where, offsets[inside]),
        lengths=_scatter(grid, where, lengths[inside]),
    )
    skipped = [tuple(int(i) for i in row) for row in index[inside & (masks != 0)]]
    return manifest, skipped


def _scatter(
    grid: tuple[int, ...], where: tuple[Any, ...], values: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    out = np.zeros(grid, dtype=np.uint64)
    out[where] = values
    return out


def _reencode(
    ds: h5py.Dataset,
    info: ArrayInfo,
    manifest: ChunkManifest,
    skipped: list[tuple[int, ...]],
    parser: HDFParser,
    url: str,
    name: str,
) -> ChunkManifest:
    """Chunks HDF5 stored with an optional filter skipped (e.g. blosc on incompressible data)
    cannot be decoded by the array's codecs: read their values and hold them re-encoded inline."""
    chunks = info.chunks
    nbytes = len(skipped) * int(np.prod(chunks)) * ds.dtype.itemsize
    if nbytes > parser.max_load_bytes:
        raise NotVirtualizableError(
            f"{url}: variable {name!r} has {len(skipped)} chunks stored with some filters "
            f"skipped (first at chunk {skipped[0]}); holding them re-encoded in memory needs "
            f"{nbytes} bytes, more than max_load_bytes={parser.max_load_bytes}"
        )
    fill, dtype = info.fill_value, info.dtype

    def block(index: tuple[int, ...]) -> np.ndarray[Any, Any]:
        sel = tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(index, chunks, ds.shape, strict=True)
        )
        out = np.full(chunks, fill, dtype=dtype)
        out[tuple(slice(0, s.stop - s.start) for s in sel)] = ds[sel]
        return out

    encoded = encode_chunks(info, (block(i) for i in skipped))
    return manifest.with_inline(skipped, encoded)


def _single_chunk_manifest(
    ds: h5py.Dataset,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    url: str,
    dtype: np.dtype[Any],
    layout: int,
) -> ChunkManifest:
    """Chunk 0 holds the stored array; any chunks beyond it (the variable is longer than what
    was written) are missing."""
    manifest = ChunkManifest.empty(grid_shape(shape, chunks))
    first = (0,) * len(shape)
    if not ds.size:
        return manifest
    if layout == h5py.h5d.COMPACT:
        raw = np.ascontiguousarray(np.asarray(ds[()], dtype=dtype)).tobytes()
        return manifest.with_inline([first], [raw])
    offset = ds.id.get_offset()
    if offset is None:
        return manifest
    path_ids, offsets, lengths = manifest.path_ids, manifest.offsets, manifest.lengths
    path_ids[first] = 0
    offsets[first] = offset
    lengths[first] = ds.id.get_storage_size()
    return ChunkManifest(paths=(url,), path_ids=path_ids, offsets=offsets, lengths=lengths)
