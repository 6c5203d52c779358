"""A dataset's variable: data type, fill value, storage layout and filters as Zarr codecs.

Chunked and contiguous datasets become chunk references (manifests built in `chunks`); compact
ones and variable-length strings, whose bytes are not a plain byte range of the file, are read at
parse time into inline chunks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
from h5py import h5d, h5p, h5t

from vcube.codecs import HDF5Filter, hdf5_filters_to_codecs
from vcube.errors import NotVirtualizableError, UnsupportedFeatureError
from vcube.manifests import ManifestArray
from vcube.manifests.attrs import encode_attributes
from vcube.manifests.inline import inline_array
from vcube.manifests.metadata import array_metadata
from vcube.parsers.hdf5.chunks import chunked_manifest, reencode, single_chunk_manifest

if TYPE_CHECKING:
    from collections.abc import Callable

    from zarr.abc.codec import Codec

    from vcube.parsers.hdf5.chunk_index import ChunkIndex
    from vcube.parsers.hdf5.parser import HDFParser

__all__ = ["Layout", "loaded_array", "pipeline_codecs", "virtual_array"]


@dataclass(frozen=True, slots=True)
class Layout:
    """One dataset and what the variable made of it looks like."""

    dsid: h5d.DatasetID
    dcpl: h5p.PropDCID  # read once: storage layout, chunk shape, filters, fill value
    stored: tuple[int, ...]  # the dataset's extent, which `shape` may exceed
    name: str
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    attrs: dict[str, Any]
    url: str
    chunk_index: Callable[[], ChunkIndex | None] = lambda: None
    """The chunks as vcube's own reader of chunk indexes lists them, None where it cannot."""

    def dataset(self) -> h5py.Dataset:
        """h5py's dataset object, to read values (of variables held inline)."""
        return h5py.Dataset(self.dsid, readonly=True)


def virtual_array(v: Layout, parser: HDFParser) -> ManifestArray:
    dcpl, name, url = v.dcpl, v.name, v.url
    dtype = _check_dtype(v.dsid.dtype, name, url)
    if dtype.kind == "O" or _space_padded(v.dsid):
        # Variable-length strings are not a byte range; space-padded ones read back padded
        # through Zarr, where h5py and netCDF4 strip the spaces: both are loaded.
        return loaded_array(v, parser, None)
    layout = dcpl.get_layout()
    if dcpl.get_external_count():
        raise NotVirtualizableError(f"{url}: variable {name!r} is stored in external files")
    skipped: list[tuple[int, ...]] = []
    if layout == h5d.CHUNKED:
        chunks = tuple(int(c) for c in dcpl.get_chunk())
        codecs = _codecs(dcpl, dtype.itemsize, name, url)
        manifest, skipped = chunked_manifest(v, chunks)
    elif layout in (h5d.CONTIGUOUS, h5d.COMPACT):
        # One chunk holding the whole stored array (compact data lives in the object header, so
        # its bytes are held inline).
        chunks = tuple(max(int(n), 1) for n in v.stored)
        codecs = []
        manifest = single_chunk_manifest(v, chunks, dtype, layout)
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
        manifest = reencode(v, info, manifest, skipped, parser)
    return ManifestArray(info, manifest, name=name)


def loaded_array(v: Layout, parser: HDFParser, reason: Exception | None) -> ManifestArray:
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


def _space_padded(dsid: h5d.DatasetID) -> bool:
    kind = dsid.get_type()
    return isinstance(kind, h5t.TypeStringID) and kind.get_strpad() == h5t.STR_SPACEPAD


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


def _fill_value(v: Layout, dtype: np.dtype[Any]) -> Any:
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
    codecs = pipeline_codecs(pipeline, itemsize)
    if codecs is not None:
        return list(codecs)
    try:  # (built again to say which filter of which variable has no codec)
        return hdf5_filters_to_codecs(_filters(pipeline), itemsize=itemsize, variable=name)
    except NotVirtualizableError as err:
        raise NotVirtualizableError(f"{url}: {err}") from err


@functools.lru_cache(maxsize=256)
def pipeline_codecs(pipeline: tuple[Any, ...], itemsize: int) -> tuple[Codec, ...] | None:
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
