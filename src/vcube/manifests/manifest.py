"""`ChunkManifest`: where every chunk of one array lives, as numpy columns shaped like the chunk grid.

A reference costs 20 bytes: a `uint64` offset, a `uint64` length and an `int32` id into a small
table of unique paths. Two negative ids mark what is not a byte range of a file: `MISSING` (the
chunk was never written; readers see the fill value) and `INLINE` (the chunk bytes are held in
memory; its offset is then an index into `inline`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from vcube.errors import ChunkNotFoundError, IncompatibleArraysError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from numpy.typing import ArrayLike, NDArray

__all__ = ["INLINE", "MISSING", "ChunkManifest", "ChunkRef"]

MISSING: Final = -1
INLINE: Final = -2


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk: a byte range of a file, or bytes held in memory (`data`)."""

    path: str | None
    offset: int
    length: int
    data: bytes | None = None


@dataclass(frozen=True, slots=True, eq=False)
class ChunkManifest:
    """The chunk references of one array, as numpy columns shaped like its chunk grid.

    Parameters
    ----------
    paths
        Table of unique file URLs; `path_ids` index into it.
    path_ids
        `int32` per chunk: an index into `paths`, `MISSING` or `INLINE`.
    offsets, lengths
        `uint64` per chunk: the byte range (for inline chunks, `offsets` indexes `inline`).
    inline
        Bytes of the inline chunks.
    """

    paths: tuple[str, ...]
    path_ids: NDArray[np.int32]
    offsets: NDArray[np.uint64]
    lengths: NDArray[np.uint64]
    inline: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        shapes = {self.path_ids.shape, self.offsets.shape, self.lengths.shape}
        if len(shapes) != 1:
            raise ValueError(f"manifest columns have different shapes: {sorted(shapes)}")

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_arrays(
        cls, *, paths: ArrayLike, offsets: ArrayLike, lengths: ArrayLike
    ) -> ChunkManifest:
        """Build from array-likes shaped like the chunk grid; an empty path marks a missing chunk."""
        path_arr = np.asarray(paths, dtype=object)
        codes, uniques = pd.factorize(path_arr.ravel(), use_na_sentinel=True)
        ids = codes.astype(np.int32).reshape(path_arr.shape)
        table = [str(u) for u in uniques]
        if "" in table:
            empty = table.index("")
            ids = np.where(ids == empty, MISSING, ids - (ids > empty)).astype(np.int32)
            table.pop(empty)
        return cls(
            paths=tuple(table),
            path_ids=ids,
            offsets=_column(offsets, path_arr.shape),
            lengths=_column(lengths, path_arr.shape),
        )

    @classmethod
    def from_file(
        cls, path: str, *, offsets: ArrayLike, lengths: ArrayLike, missing: ArrayLike | None = None
    ) -> ChunkManifest:
        """Build the manifest of one file: every chunk present unless `missing` marks it."""
        off = np.asarray(offsets, dtype=np.uint64)
        ids = np.zeros(off.shape, dtype=np.int32)
        if missing is not None:
            ids[np.asarray(missing, dtype=bool)] = MISSING
        return cls(paths=(path,), path_ids=ids, offsets=off, lengths=_column(lengths, off.shape))

    @classmethod
    def empty(cls, grid_shape: Sequence[int]) -> ChunkManifest:
        """A manifest whose every chunk is missing."""
        shape = tuple(grid_shape)
        return cls(
            paths=(),
            path_ids=np.full(shape, MISSING, dtype=np.int32),
            offsets=np.zeros(shape, dtype=np.uint64),
            lengths=np.zeros(shape, dtype=np.uint64),
        )

    @classmethod
    def from_inline(
        cls, chunks: Sequence[bytes | None], grid_shape: Sequence[int]
    ) -> ChunkManifest:
        """A manifest of in-memory chunks, in C order of the grid; `None` marks a missing one."""
        shape = tuple(grid_shape)
        present = [c for c in chunks if c is not None]
        is_present = np.array([c is not None for c in chunks], dtype=bool).reshape(shape)
        offsets = np.zeros(shape, dtype=np.uint64)
        offsets[is_present] = np.arange(len(present), dtype=np.uint64)
        lengths = np.zeros(shape, dtype=np.uint64)
        lengths[is_present] = [len(c) for c in present]
        ids = np.where(is_present, INLINE, MISSING).astype(np.int32)
        return cls(paths=(), path_ids=ids, offsets=offsets, lengths=lengths, inline=tuple(present))

    # -- inspection ---------------------------------------------------------------------------

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Number of chunks along each axis."""
        return tuple(int(n) for n in self.path_ids.shape)

    @property
    def ndim_chunk_grid(self) -> int:
        return self.path_ids.ndim

    @property
    def nbytes(self) -> int:
        """Bytes held in memory by the references (columns, path table and inline chunks)."""
        columns = self.path_ids.nbytes + self.offsets.nbytes + self.lengths.nbytes
        table = sum(len(p.encode()) for p in self.paths)
        return columns + table + sum(len(b) for b in self.inline)

    @property
    def nrefs(self) -> int:
        """Number of chunks that are present (file references or inline), missing ones excluded."""
        return int(np.count_nonzero(self.path_ids != MISSING))

    @property
    def is_inline(self) -> bool:
        """True when no chunk refers to a file (every chunk is in memory or missing)."""
        return not bool(np.any(self.path_ids >= 0))

    def __len__(self) -> int:
        return self.nrefs

    def __getitem__(self, index: tuple[int, ...]) -> ChunkRef | None:
        """The chunk at a grid index, or None when it is missing."""
        if len(index) != self.path_ids.ndim or not all(
            0 <= i < n for i, n in zip(index, self.path_ids.shape, strict=True)
        ):
            raise ChunkNotFoundError(f"chunk {index} is outside the grid {self.grid_shape}")
        pid = int(self.path_ids[index])
        offset, length = int(self.offsets[index]), int(self.lengths[index])
        if pid == MISSING:
            return None
        if pid == INLINE:
            return ChunkRef(path=None, offset=0, length=length, data=self.inline[offset])
        return ChunkRef(path=self.paths[pid], offset=offset, length=length)

    def path_column(self) -> NDArray[Any]:
        """The URL of every chunk as an object array shaped like the grid ('' where not a file)."""
        table = np.array([*self.paths, "", ""], dtype=object)
        return table[np.where(self.path_ids >= 0, self.path_ids, len(self.paths))]

    def equals(self, other: ChunkManifest) -> bool:
        """True when both manifests reference the same bytes for every chunk."""
        return (
            self.grid_shape == other.grid_shape
            and bool(np.array_equal(self.path_column(), other.path_column()))
            and bool(np.array_equal(self.path_ids < 0, other.path_ids < 0))
            and bool(np.array_equal(self.path_ids == INLINE, other.path_ids == INLINE))
            and bool(np.array_equal(self._file_offsets(), other._file_offsets()))
            and bool(np.array_equal(self._present_lengths(), other._present_lengths()))
            and self._inline_bytes() == other._inline_bytes()
        )

    def _file_offsets(self) -> NDArray[np.uint64]:
        return np.where(self.path_ids >= 0, self.offsets, np.uint64(0))

    def _present_lengths(self) -> NDArray[np.uint64]:
        return np.where(self.path_ids != MISSING, self.lengths, np.uint64(0))

    def _inline_bytes(self) -> list[bytes]:
        order = self.offsets[self.path_ids == INLINE]
        return [self.inline[int(i)] for i in order]

    # -- transformations (all vectorized over the whole grid) ---------------------------------

    def rename_paths(self, new: str | Callable[[str], str]) -> ChunkManifest:
        """Replace every path by `new` (a string, or a function of the old path)."""
        table = tuple(new(p) for p in self.paths) if callable(new) else (new,) * len(self.paths)
        return _with_table(self, table, self.path_ids)

    def select(self, key: tuple[slice | int, ...]) -> ChunkManifest:
        """The sub-grid at `key` (slices or integers over chunk indices)."""
        pick = tuple(
            slice(k % n, k % n + 1) if isinstance(k, int) else k
            for k, n in zip(key, self.grid_shape, strict=False)
        )
        return ChunkManifest(
            paths=self.paths,
            path_ids=self.path_ids[pick],
            offsets=self.offsets[pick],
            lengths=self.lengths[pick],
            inline=self.inline,
        )

    def with_inline(
        self, indices: Sequence[tuple[int, ...]], chunks: Sequence[bytes]
    ) -> ChunkManifest:
        """A copy in which the chunks at `indices` are replaced by in-memory bytes."""
        if not indices:
            return self
        rows = np.array(indices, dtype=np.intp).reshape(len(indices), self.path_ids.ndim)
        flat = (
            np.ravel_multi_index(tuple(rows.T), self.grid_shape)
            if self.path_ids.ndim
            else np.zeros(len(indices), dtype=np.intp)
        )
        path_ids, offsets, lengths = self.path_ids.copy(), self.offsets.copy(), self.lengths.copy()
        path_ids.reshape(-1)[flat] = INLINE
        offsets.reshape(-1)[flat] = np.arange(len(self.inline), len(self.inline) + len(chunks))
        lengths.reshape(-1)[flat] = [len(c) for c in chunks]
        return ChunkManifest(
            paths=self.paths,
            path_ids=path_ids,
            offsets=offsets,
            lengths=lengths,
            inline=(*self.inline, *chunks),
        )

    def expand_dims(self, axis: int) -> ChunkManifest:
        """Insert a length-1 axis into the chunk grid."""
        return self._map_columns(lambda col: np.expand_dims(col, axis))

    def broadcast_to(self, grid_shape: tuple[int, ...]) -> ChunkManifest:
        """Repeat the references over a larger grid (numpy broadcasting rules)."""
        return self._map_columns(lambda col: np.broadcast_to(col, grid_shape).copy())

    def _map_columns(self, fn: Callable[[NDArray[Any]], NDArray[Any]]) -> ChunkManifest:
        return ChunkManifest(
            paths=self.paths,
            path_ids=fn(self.path_ids),
            offsets=fn(self.offsets),
            lengths=fn(self.lengths),
            inline=self.inline,
        )


def concatenate(manifests: Sequence[ChunkManifest], axis: int) -> ChunkManifest:
    """Join manifests along an existing axis of the chunk grid."""
    if not manifests:
        raise IncompatibleArraysError("nothing to combine: no manifests given")
    ndim = manifests[0].path_ids.ndim
    axis = axis % ndim if ndim else axis
    lengths = [m.path_ids.shape[axis] if m.path_ids.ndim == ndim else -1 for m in manifests]
    # Which manifest each chunk of the result comes from, broadcast along the other axes.
    source = np.repeat(np.arange(len(manifests)), np.maximum(lengths, 0))
    source = source.reshape([-1 if i == axis else 1 for i in range(ndim)])
    return _combine(manifests, lambda cols: np.concatenate(cols, axis=axis), source)


def stack(manifests: Sequence[ChunkManifest], axis: int) -> ChunkManifest:
    """Join manifests along a new axis of the chunk grid."""
    if not manifests:
        raise IncompatibleArraysError("nothing to combine: no manifests given")
    ndim = manifests[0].path_ids.ndim + 1
    axis = axis % ndim
    source = np.arange(len(manifests)).reshape([-1 if i == axis else 1 for i in range(ndim)])
    return _combine(manifests, lambda cols: np.stack(cols, axis=axis), source)


def _combine(
    manifests: Sequence[ChunkManifest],
    join: Callable[[list[NDArray[Any]]], NDArray[Any]],
    source: NDArray[np.int64],
) -> ChunkManifest:
    """Join the columns, then move every manifest's path ids and inline offsets into the
    merged tables in one vectorized step (`source`: the manifest each chunk comes from)."""
    try:
        ids = join([m.path_ids for m in manifests])
        offsets = join([m.offsets for m in manifests])
        lengths = join([m.lengths for m in manifests])
    except ValueError as err:
        shapes = [m.grid_shape for m in manifests]
        raise IncompatibleArraysError(f"chunk grids {shapes} cannot be joined: {err}") from err
    source = np.broadcast_to(source, ids.shape)
    table, ids = _merge_tables(manifests, ids, source)
    inline: tuple[bytes, ...] = ()
    if any(m.inline for m in manifests):
        starts = _starts([len(m.inline) for m in manifests])
        shift = np.where(ids == INLINE, starts[source], 0).astype(np.uint64)
        offsets = offsets + shift
        inline = tuple(b for m in manifests for b in m.inline)
    return ChunkManifest(paths=table, path_ids=ids, offsets=offsets, lengths=lengths, inline=inline)


def _merge_tables(
    manifests: Sequence[ChunkManifest], ids: NDArray[np.int32], source: NDArray[Any]
) -> tuple[tuple[str, ...], NDArray[np.int32]]:
    """One path table for all manifests, and the joined ids moved into it."""
    first = manifests[0].paths
    if all(m.paths is first or m.paths == first for m in manifests):
        return first, ids
    every = [p for m in manifests for p in m.paths]
    index = {p: i for i, p in enumerate(dict.fromkeys(every))}
    mapping = np.array([index[p] for p in every], dtype=np.int32)
    starts = _starts([len(m.paths) for m in manifests])
    position = starts[source] + np.maximum(ids, 0)
    remapped = np.where(ids >= 0, mapping[np.minimum(position, max(len(every) - 1, 0))], ids)
    return tuple(index), remapped.astype(np.int32)


def _starts(sizes: Sequence[int]) -> NDArray[np.int64]:
    """Where each of consecutive blocks of `sizes` starts."""
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)[:-1]]).astype(np.int64)


def _remap(ids: NDArray[np.int32], mapping: NDArray[np.int32]) -> NDArray[np.int32]:
    if mapping.size == 0:
        return ids
    return np.where(ids >= 0, mapping[np.maximum(ids, 0)], ids).astype(np.int32)


def _with_table(m: ChunkManifest, table: Iterable[str], ids: NDArray[np.int32]) -> ChunkManifest:
    """`m` with a new path table; duplicate paths in the table are merged."""
    index: dict[str, int] = {}
    mapping = np.array([index.setdefault(p, len(index)) for p in table], dtype=np.int32)
    return ChunkManifest(
        paths=tuple(index),
        path_ids=_remap(ids, mapping),
        offsets=m.offsets,
        lengths=m.lengths,
        inline=m.inline,
    )


def _column(values: ArrayLike, shape: tuple[int, ...]) -> NDArray[np.uint64]:
    arr = np.asarray(values)
    if arr.size and (np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0):
        raise ValueError("offsets and lengths must be non-negative")
    return np.broadcast_to(arr.astype(np.uint64, copy=False), shape).copy()
