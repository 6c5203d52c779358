"""Chunk manifests: from HDF5's chunk index (`chunk_iter`), or one chunk for contiguous and
compact datasets; chunks stored with filters skipped are held re-encoded inline."""

from __future__ import annotations

import functools
import itertools
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from h5py import h5d

from vcube.errors import NotVirtualizableError
from vcube.manifests import ChunkManifest
from vcube.manifests.array_api import grid_shape
from vcube.manifests.inline import encode_chunks
from vcube.manifests.manifest import MISSING
from vcube.parsers.hdf5.chunk_index import ChunkIndex

if TYPE_CHECKING:
    from vcube.manifests.metadata import ArrayInfo
    from vcube.parsers.hdf5.layout import Layout
    from vcube.parsers.hdf5.parser import HDFParser

__all__ = ["chunked_manifest", "index_manifest", "reencode", "single_chunk_manifest"]


def chunked_manifest(
    v: Layout, chunks: tuple[int, ...]
) -> tuple[ChunkManifest, list[tuple[int, ...]]]:
    """The manifest from the dataset's chunk index, and the chunks stored with some filters
    skipped. The index is read by vcube where it can: HDF5 2.0's `chunk_iter` misplaces chunks of
    an extensible array whose unlimited axis is not the first."""
    if math.prod(v.stored) and (own := v.chunk_index()) is not None:
        return index_manifest(v.url, v.shape, v.stored, chunks, own)
    infos: list[Any] = []
    if math.prod(v.stored):
        v.dsid.chunk_iter(infos.append)
    if not infos:
        return ChunkManifest.empty(grid_shape(v.shape, chunks)), []
    starts, masks, byte_offsets, sizes = zip(*infos, strict=True)
    # Flattened first: numpy converts a flat sequence of ints far faster than nested tuples.
    flat_starts = np.fromiter(
        itertools.chain.from_iterable(starts), dtype=np.int64, count=len(starts) * len(chunks)
    )
    index = ChunkIndex(
        starts=flat_starts.reshape(len(starts), len(chunks)),
        masks=np.array(masks, dtype=np.uint32),
        offsets=np.array(byte_offsets, dtype=np.uint64),
        lengths=np.array(sizes, dtype=np.uint64),
    )
    return index_manifest(v.url, v.shape, v.stored, chunks, index)


def index_manifest(
    url: str,
    shape: tuple[int, ...],
    stored: tuple[int, ...],
    chunks: tuple[int, ...],
    index: ChunkIndex,
) -> tuple[ChunkManifest, list[tuple[int, ...]]]:
    """The manifest of the chunks in `index` (a variable of `shape`, of which `stored` is
    written), and the grid positions of chunks stored with some filters skipped."""
    grid = grid_shape(shape, chunks)
    if not len(index.offsets):
        return ChunkManifest.empty(grid), []
    stored_grid = grid_shape(stored, chunks)
    skipped: list[tuple[int, ...]] = []
    if index.masks.any():
        positions = index.starts[index.masks != 0] // np.array(chunks, dtype=np.int64)
        inside = (positions < np.array(stored_grid, dtype=np.int64)).all(axis=1)
        skipped = [tuple(int(i) for i in row) for row in positions[inside]]
    if _is_complete(index.starts, grid, stored_grid, chunks):
        # Every chunk written and listed in C order: the columns are the lists as they come.
        path_ids = np.zeros(grid, dtype=np.int32)
        offsets, lengths = index.offsets.reshape(grid), index.lengths.reshape(grid)
    else:
        positions = index.starts // np.array(chunks, dtype=np.int64)
        path_ids, offsets, lengths = _scattered(positions, index, grid, stored_grid)
    manifest = ChunkManifest(paths=(url,), path_ids=path_ids, offsets=offsets, lengths=lengths)
    return manifest, skipped


def _is_complete(
    starts: np.ndarray[Any, Any],
    grid: tuple[int, ...],
    stored_grid: tuple[int, ...],
    chunks: tuple[int, ...],
) -> bool:
    """Whether the chunks starting at `starts` fill the whole grid in C order (the order in
    which HDF5 lists a fully written dataset's chunks)."""
    return (
        len(starts) == math.prod(grid)
        and grid == stored_grid
        and bool(np.array_equal(starts, _c_order_starts(grid, chunks)))
    )


@functools.lru_cache(maxsize=32)
def _c_order_starts(grid: tuple[int, ...], chunks: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """The first element of every chunk of a grid, in C order."""
    positions = np.indices(grid, dtype=np.int64).reshape(len(grid), -1).T
    return positions * np.array(chunks, dtype=np.int64)


def _scattered(
    positions: np.ndarray[Any, Any],
    index: ChunkIndex,
    grid: tuple[int, ...],
    stored_grid: tuple[int, ...],
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Manifest columns with each chunk placed at its grid position (chunks in any order, some
    missing)."""
    offsets, lengths = index.offsets, index.lengths
    # Chunks past the current extent (a dataset shrunk after writing) hold no visible data.
    inside = (positions < np.array(stored_grid, dtype=np.int64)).all(axis=1)
    if not inside.all():
        positions, offsets, lengths = positions[inside], offsets[inside], lengths[inside]
    flat = np.asarray(np.ravel_multi_index(tuple(positions.T), grid))
    path_ids = np.full(math.prod(grid), MISSING, dtype=np.int32)
    path_ids[flat] = 0
    return path_ids.reshape(grid), _scatter(grid, flat, offsets), _scatter(grid, flat, lengths)


def _scatter(
    grid: tuple[int, ...], flat: np.ndarray[Any, Any], values: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    out = np.zeros(math.prod(grid), dtype=np.uint64)
    out[flat] = values
    return out.reshape(grid)


def reencode(
    v: Layout,
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


def single_chunk_manifest(
    v: Layout, chunks: tuple[int, ...], dtype: np.dtype[Any], layout: int
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
    # (an unallocated dataset after a user block has an "offset" of the undefined address
    # plus the block's size, wrapped around: nothing is stored)
    if offset is None or v.dsid.get_storage_size() == 0:
        return manifest
    path_ids, offsets, lengths = manifest.path_ids, manifest.offsets, manifest.lengths
    path_ids[first] = 0
    offsets[first] = offset
    lengths[first] = v.dsid.get_storage_size()
    return ChunkManifest(paths=(v.url,), path_ids=path_ids, offsets=offsets, lengths=lengths)
