"""Choosing the chunks of a variable to check and comparing each, read through the references
and from the source files, element by element.

Values are compared raw with equal dtypes (byte order aside), unless a file's CF encoding
differs from the target's: then both sides are CF-decoded and the decoded values compared. A
chunk that cannot be read on either side is a difference that carries the error."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vcube.manifests.array_api import grid_shape
from vcube.verify.arrays import decoded, equal, slices
from vcube.verify.report import Mismatch, VariableCheck, error_text

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from vcube.verify.arrays import Region
    from vcube.verify.placement import Block
    from vcube.verify.report import Index
    from vcube.verify.sources import Readers
    from vcube.verify.targets import TargetArray

__all__ = ["check_variable"]


def check_variable(
    name: str,
    target: TargetArray,
    blocks: Sequence[Block],
    samples: int | None,
    rng: np.random.Generator,
    readers: Readers,
) -> VariableCheck:
    """Compare up to `samples` chunks of the target array `name` that `blocks` cover."""
    shape, chunk_shape = target.info.shape, target.chunks
    # Raw comparison unless a file's CF encoding differs from the target's (then decoded).
    decode = any(b.source.arrays[name].cf != target.info.cf for b in blocks)
    checked: list[Index] = []
    different: list[Mismatch] = []
    for row in _chunks_to_check(shape, chunk_shape, blocks, samples, rng):
        lo = row * np.array(chunk_shape, np.int64)
        hi = np.minimum(lo + chunk_shape, shape)
        chunk = tuple(int(i) for i in row)
        mismatch = _check_chunk(
            name, target, chunk, lo, hi, _pieces(blocks, lo, hi), readers, decode
        )
        checked.append(chunk)
        if mismatch is not None:
            different.append(mismatch)
    return VariableCheck(name, tuple(checked), tuple(different))


def _chunks_to_check(
    shape: Index,
    chunks: Index,
    blocks: Sequence[Block],
    samples: int | None,
    rng: np.random.Generator,
) -> NDArray[np.intp]:
    """Indices (one row per chunk) of up to `samples` chunks the blocks cover entirely, the first
    and the last always among them; every covered chunk when `samples` is None."""
    if not shape:
        return np.zeros((1 if blocks else 0, 0), np.intp)
    grid = grid_shape(shape, chunks)
    starts = [np.arange(g, dtype=np.int64) * c for g, c in zip(grid, chunks, strict=True)]
    stops = [np.minimum(s + c, n) for s, c, n in zip(starts, chunks, shape, strict=True)]
    # Elements of each chunk that the blocks cover: one slab of the grid per block.
    covered = np.zeros(grid, np.int64)
    for block in blocks:
        slab, overlap = [], []
        for o, b, c, start, stop in zip(
            block.origin, block.shape, chunks, starts, stops, strict=True
        ):
            lo, hi = o // c, -(-(o + b) // c)
            slab.append(slice(lo, hi))
            overlap.append(np.minimum(stop[lo:hi], o + b) - np.maximum(start[lo:hi], o))
        covered[tuple(slab)] += functools.reduce(np.multiply.outer, overlap)
    full = functools.reduce(np.multiply.outer, [t - s for s, t in zip(starts, stops, strict=True)])
    flat = np.flatnonzero(covered >= full)
    if samples is not None and flat.size > samples:
        middle = rng.choice(flat[1:-1], size=max(samples - 2, 0), replace=False)
        flat = np.unique(np.concatenate([flat[[0, -1]], middle]))
    return np.stack(np.unravel_index(flat, grid), axis=-1)


@dataclass(frozen=True, slots=True)
class _Piece:
    """The part of a chunk that one block holds: `region` of the block (in the target's axes,
    from the block's origin), `into` in the chunk."""

    block: Block
    region: Region
    into: Region


def _pieces(blocks: Sequence[Block], lo: NDArray[Any], hi: NDArray[Any]) -> list[_Piece]:
    if not blocks:
        return []
    origins = np.array([b.origin for b in blocks], np.int64).reshape(len(blocks), lo.size)
    ends = origins + np.array([b.shape for b in blocks], np.int64).reshape(origins.shape)
    hits = np.flatnonzero(((origins < hi) & (ends > lo)).all(axis=1))
    pieces = []
    for i in hits:
        first, last = np.maximum(lo, origins[i]), np.minimum(hi, ends[i])
        region = slices(first - origins[i], last - origins[i])
        pieces.append(_Piece(blocks[int(i)], region, slices(first - lo, last - lo)))
    return pieces


def _check_chunk(
    name: str,
    target: TargetArray,
    chunk: Index,
    lo: NDArray[Any],
    hi: NDArray[Any],
    pieces: Sequence[_Piece],
    readers: Readers,
    decode: bool,
) -> Mismatch | None:
    urls = tuple(dict.fromkeys(p.block.source.url for p in pieces))
    # Any failure to read a chunk, on either side, is a finding of verify, not a crash.
    try:
        actual = target.read(slices(lo, hi))
        if decode:
            actual = decoded(name, actual, target.info.cf)
    except Exception as err:  # noqa: BLE001  (a chunk that cannot be read is a finding)
        return Mismatch(chunk, urls, error=f"reading through the references: {error_text(err)}")
    expected: NDArray[Any] | None = None
    for piece in pieces:
        block = piece.block
        try:
            values = readers.get(block.source.url).read(name, block.source_region(piece.region))
            values = block.as_target(values)
            if decode:
                values = decoded(name, values, block.source.arrays[name].cf)
        except Exception as err:  # noqa: BLE001
            return Mismatch(chunk, urls, error=f"reading {block.source.url}: {error_text(err)}")
        if expected is None:
            expected = values if len(pieces) == 1 else np.empty(actual.shape, values.dtype)
        if len(pieces) > 1:
            expected[piece.into] = values
    assert expected is not None  # a checked chunk is covered by at least one block
    if not decode and expected.dtype.newbyteorder("=") != actual.dtype.newbyteorder("="):
        error = f"dtype {actual.dtype} through the references, {expected.dtype} in the source"
        return Mismatch(chunk, urls, error=error)
    if expected.shape != actual.shape:
        error = f"shape {actual.shape} through the references, {expected.shape} in the source"
        return Mismatch(chunk, urls, error=error)
    same = equal(expected, actual)
    if same.all():
        return None
    first = tuple(int(i) for i in np.argwhere(~same)[0])
    index = tuple(int(o) + i for o, i in zip(lo, first, strict=True))
    return Mismatch(chunk, urls, index, _scalar(expected[first]), _scalar(actual[first]))


def _scalar(value: Any) -> object:
    if isinstance(value, np.datetime64 | np.timedelta64):
        return str(value)
    return value.item() if isinstance(value, np.generic) else value
