"""`ChunkManifest` layout operations agree with the same numpy operations on plain index arrays.

Every chunk of a generated manifest carries a unique id (its file offset is `id * 1000`, its length
`id + 1`, its inline bytes `b"inline-<id>"`), so the reference model is a handful of plain numpy
arrays shaped like the chunk grid; numpy itself says where every chunk must end up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcube.errors import ChunkNotFoundError, IncompatibleArraysError
from vcube.manifests.manifest import INLINE, MISSING, ChunkManifest, ChunkRef, concatenate, stack

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import NDArray

SETTINGS = settings(max_examples=50, deadline=None, database=None)
POOL = tuple(f"s3://bucket/run-{i}/file-{i:02d}.nc" for i in range(6))
GRID_SIZE = 10_000  # ids of the k-th manifest of an example start at k * GRID_SIZE


@dataclass(frozen=True)
class Layout:
    """The reference model: one plain numpy array per property, shaped like the chunk grid."""

    paths: NDArray[Any]  # object: the file URL, "" when missing or inline
    offsets: NDArray[np.uint64]  # file offset, 0 when missing or inline
    lengths: NDArray[np.uint64]  # 0 when missing
    missing: NDArray[np.bool_]
    inline: NDArray[Any]  # object: the bytes of an inline chunk, else None

    def map(self, fn: Callable[[NDArray[Any]], NDArray[Any]]) -> Layout:
        return Layout(*(fn(getattr(self, f)) for f in FIELDS))


FIELDS = ("paths", "offsets", "lengths", "missing", "inline")


def join(fn: Callable[[list[NDArray[Any]]], NDArray[Any]], layouts: list[Layout]) -> Layout:
    return Layout(*(fn([getattr(x, f) for x in layouts]) for f in FIELDS))


def layout_of(m: ChunkManifest) -> Layout:
    """What `m` says about every chunk, through its public columns."""
    ids = m.path_ids
    missing = ids == MISSING
    table = np.array([None, *m.inline], dtype=object)
    inline_at = np.where(ids == INLINE, m.offsets.astype(np.int64) + 1, 0)
    return Layout(
        paths=m.path_column(),
        offsets=np.where(ids >= 0, m.offsets, np.uint64(0)),
        lengths=np.where(missing, np.uint64(0), m.lengths),
        missing=missing,
        inline=table[inline_at],
    )


def assert_layout(m: ChunkManifest, expected: Layout) -> None:
    actual = layout_of(m)
    assert m.grid_shape == expected.missing.shape
    for f in FIELDS:
        a, e = getattr(actual, f), getattr(expected, f)
        assert a.shape == e.shape, f
        assert a.tolist() == e.tolist(), f
    assert m.nrefs == len(m) == int(np.count_nonzero(~expected.missing))


# -- strategies ---------------------------------------------------------------------------------


@st.composite
def manifests(
    draw: st.DrawFn, grid: tuple[int, ...], base: int = 0
) -> tuple[ChunkManifest, Layout]:
    """A manifest over `grid` with unique ids from `base`, and its reference layout."""
    n = int(np.prod(grid))
    ids = base + np.arange(n, dtype=np.uint64).reshape(grid)
    offsets, lengths = ids * np.uint64(1000), ids + np.uint64(1)
    blobs = np.array([f"inline-{i}".encode() for i in ids.ravel()], object).reshape(grid)
    flags = st.lists(st.booleans(), min_size=n, max_size=n)
    missing = np.array(draw(flags), dtype=bool).reshape(grid)
    kind = draw(st.sampled_from(["arrays", "file", "inline"]))
    if kind == "inline":
        inline = ~missing
        m = ChunkManifest.from_inline(np.where(inline, blobs, None).ravel().tolist(), grid)
        return m, reference(np.full(grid, "", object), offsets, lengths, missing, inline, blobs)
    if kind == "file":
        path = draw(st.sampled_from(POOL))
        m = ChunkManifest.from_file(path, offsets=offsets, lengths=lengths, missing=missing)
        paths = np.full(grid, path, object)
        return m, reference(paths, offsets, lengths, missing, np.zeros(grid, bool), blobs)
    table = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=4, unique=True))
    picks = draw(st.lists(st.integers(0, len(table) - 1), min_size=n, max_size=n))
    paths = np.array(table, dtype=object)[picks].reshape(grid)
    m = ChunkManifest.from_arrays(
        paths=np.where(missing, "", paths), offsets=offsets, lengths=lengths
    )
    some = draw(st.booleans()) and bool(grid)
    inline = ~missing & np.array(draw(flags), dtype=bool).reshape(grid) & some
    if inline.any():
        at = [tuple(int(i) for i in row) for row in np.argwhere(inline)]
        m = m.with_inline(at, [blobs[i] for i in at])
    return m, reference(paths, offsets, lengths, missing, inline, blobs)


def reference(
    paths: NDArray[Any],
    offsets: NDArray[np.uint64],
    lengths: NDArray[np.uint64],
    missing: NDArray[np.bool_],
    inline: NDArray[np.bool_],
    blobs: NDArray[Any],
) -> Layout:
    """The layout of chunks that are missing, inline (holding `blobs`) or else in `paths`."""
    elsewhere = missing | inline
    return Layout(
        paths=np.where(elsewhere, "", paths).astype(object),
        offsets=np.where(elsewhere, 0, offsets).astype(np.uint64),
        lengths=np.where(missing, 0, np.where(inline, lengths_of(blobs), lengths)).astype(
            np.uint64
        ),
        missing=missing,
        inline=np.where(inline, blobs, None),
    )


def lengths_of(blobs: NDArray[Any]) -> NDArray[np.uint64]:
    flat = [0 if b is None else len(b) for b in blobs.ravel()]
    return np.array(flat, dtype=np.uint64).reshape(blobs.shape)


def grids(min_dims: int = 1, max_dims: int = 3, min_side: int = 1) -> st.SearchStrategy[Any]:
    return st.lists(st.integers(min_side, 4), min_size=min_dims, max_size=max_dims).map(tuple)


def keys(grid: tuple[int, ...]) -> st.SearchStrategy[tuple[slice | int, ...]]:
    """Keys for `select`: per axis a non-negative integer or a slice with a positive step."""

    def axis_key(n: int) -> st.SearchStrategy[slice | int]:
        bound = st.none() | st.integers(-n - 1, n + 1)
        sliced = st.builds(slice, bound, bound, st.none() | st.integers(1, 3))
        return sliced | st.integers(0, n - 1) if n else sliced

    return st.tuples(*(axis_key(n) for n in grid))


def expected_ref(layout: Layout, index: tuple[int, ...]) -> ChunkRef | None:
    if layout.missing[index]:
        return None
    length = int(layout.lengths[index])
    if layout.inline[index] is not None:
        return ChunkRef(path=None, offset=0, length=length, data=layout.inline[index])
    return ChunkRef(path=layout.paths[index], offset=int(layout.offsets[index]), length=length)


# -- construction -------------------------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_constructors_match_the_reference(data: st.DataObject) -> None:
    grid = data.draw(grids(min_dims=1, min_side=0))
    m, layout = data.draw(manifests(grid))
    assert_layout(m, layout)
    assert len(set(m.paths)) == len(m.paths)
    for index in np.ndindex(grid):
        assert m[index] == expected_ref(layout, index)


def test_from_arrays_empty_path_marks_missing() -> None:
    m = ChunkManifest.from_arrays(
        paths=[["", "b"], ["a", ""], [None, "b"]], offsets=[[0, 1], [2, 3], [4, 5]], lengths=7
    )
    assert m.paths == ("b", "a")
    assert m.path_ids.tolist() == [[MISSING, 0], [1, MISSING], [MISSING, 0]]
    assert m.path_column().tolist() == [["", "b"], ["a", ""], ["", "b"]]
    assert m.nrefs == 3
    assert m[(0, 0)] is None
    assert m[(1, 0)] == ChunkRef(path="a", offset=2, length=7)
    everything_missing = ChunkManifest.from_arrays(paths=["", ""], offsets=0, lengths=0)
    assert everything_missing.paths == ()
    assert everything_missing.nrefs == 0


def test_from_arrays_refuses_negative_offsets() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        ChunkManifest.from_arrays(paths=["a"], offsets=[-1], lengths=[1])


def test_lookup_outside_the_grid() -> None:
    m = ChunkManifest.from_file("f", offsets=[[0, 10]], lengths=10)
    for index in [(1, 0), (0, 2), (0,), (0, -1)]:
        with pytest.raises(ChunkNotFoundError):
            m[index]


# -- layout operations --------------------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_concatenate_is_numpy_concatenate(data: st.DataObject) -> None:
    grid = data.draw(grids())
    axis = data.draw(st.integers(-len(grid), len(grid) - 1))
    parts = []
    for k in range(data.draw(st.integers(1, 4))):
        shape = list(grid)
        shape[axis] = data.draw(st.integers(0, 3))
        parts.append(data.draw(manifests(tuple(shape), base=k * GRID_SIZE)))
    result = concatenate([m for m, _ in parts], axis=axis)
    assert_layout(result, join(lambda cols: np.concatenate(cols, axis=axis), [x for _, x in parts]))
    assert len(set(result.paths)) == len(result.paths)


@SETTINGS
@given(st.data())
def test_stack_is_numpy_stack(data: st.DataObject) -> None:
    grid = data.draw(grids(min_dims=0))
    axis = data.draw(st.integers(-len(grid) - 1, len(grid)))
    count = data.draw(st.integers(1, 4))
    parts = [data.draw(manifests(grid, base=k * GRID_SIZE)) for k in range(count)]
    result = stack([m for m, _ in parts], axis=axis)
    assert_layout(result, join(lambda cols: np.stack(cols, axis=axis), [x for _, x in parts]))


@SETTINGS
@given(st.data())
def test_expand_dims_is_numpy_expand_dims(data: st.DataObject) -> None:
    grid = data.draw(grids())
    m, layout = data.draw(manifests(grid))
    axis = data.draw(st.integers(-len(grid) - 1, len(grid)))
    assert_layout(m.expand_dims(axis), layout.map(lambda a: np.expand_dims(a, axis)))


@SETTINGS
@given(st.data())
def test_broadcast_to_is_numpy_broadcast_to(data: st.DataObject) -> None:
    grid = data.draw(st.lists(st.sampled_from([1, 1, 2, 3]), min_size=1, max_size=3).map(tuple))
    m, layout = data.draw(manifests(grid))
    lead = data.draw(st.lists(st.integers(1, 3), max_size=2))
    target = (*lead, *(data.draw(st.integers(1, 3)) if n == 1 else n for n in grid))
    result = m.broadcast_to(target)
    assert_layout(result, layout.map(lambda a: np.broadcast_to(a, target)))
    result.path_ids[...] = MISSING  # the result owns its columns: m is untouched
    assert_layout(m, layout)


@SETTINGS
@given(st.data())
def test_select_is_numpy_indexing(data: st.DataObject) -> None:
    grid = data.draw(grids())
    m, layout = data.draw(manifests(grid))
    key = data.draw(keys(grid))
    numpy_key = tuple(slice(k, k + 1) if isinstance(k, int) else k for k in key)
    assert_layout(m.select(key), layout.map(lambda a: a[numpy_key]))


@SETTINGS
@given(st.data())
def test_operations_compose(data: st.DataObject) -> None:
    """stack, then select and concatenate the pieces back: the original layout again."""
    grid = data.draw(grids(max_dims=2))
    parts = [data.draw(manifests(grid, base=k * GRID_SIZE)) for k in range(3)]
    stacked = stack([m for m, _ in parts], axis=0)
    pieces = [stacked.select((k,)) for k in (2, 0, 1)]
    joined = concatenate(pieces, axis=0)
    assert_layout(joined, join(lambda c: np.stack(c), [parts[k][1] for k in (2, 0, 1)]))


def test_joining_different_grids_is_refused() -> None:
    a, b = ChunkManifest.empty((2, 3)), ChunkManifest.empty((2, 4))
    with pytest.raises(IncompatibleArraysError, match=r"\(2, 3\).*\(2, 4\)"):
        concatenate([a, b], axis=0)
    with pytest.raises(IncompatibleArraysError):
        stack([a, b], axis=0)
    with pytest.raises(IncompatibleArraysError, match="no manifests"):
        concatenate([], axis=0)


# -- paths, sizes and equality ------------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_rename_paths(data: st.DataObject) -> None:
    m, layout = data.draw(manifests(data.draw(grids())))
    renames: list[Callable[[str], str]] = [
        lambda p: p.replace("s3://bucket/", "file:///mnt/"),
        lambda p: POOL[0],
        lambda p: p.rsplit("/", 1)[-1],  # distinct files again
    ]
    for rename in renames:
        expected = np.array([rename(p) if p else "" for p in layout.paths.ravel()], dtype=object)
        renamed = m.rename_paths(rename)
        assert_layout(renamed, Layout(expected.reshape(layout.paths.shape), *_rest(layout)))
        assert len(set(renamed.paths)) == len(renamed.paths)
    one = np.where(layout.paths == "", "", "https://host/x.nc").astype(object)
    assert_layout(m.rename_paths("https://host/x.nc"), Layout(one, *_rest(layout)))


def _rest(layout: Layout) -> tuple[Any, ...]:
    return layout.offsets, layout.lengths, layout.missing, layout.inline


@SETTINGS
@given(st.data())
def test_equals_is_layout_equality(data: st.DataObject) -> None:
    grid = data.draw(grids())
    m, _ = data.draw(manifests(grid, base=GRID_SIZE))
    assert m.equals(m)
    # The same layout, held with another path table and other inline offsets.
    other, _ = data.draw(manifests(grid))
    same = concatenate([other, m], axis=0).select((slice(grid[0], None),))
    assert m.equals(same)
    assert same.equals(m)
    # One chunk changed: equal exactly when the layouts are.
    index = tuple(data.draw(st.integers(0, n - 1)) for n in grid)
    for changed in mutations(m, index):
        assert m.equals(changed) == same_layout(m, changed)
        assert changed.equals(m) == same_layout(m, changed)


def mutations(m: ChunkManifest, index: tuple[int, ...]) -> list[ChunkManifest]:
    pid = int(m.path_ids[index])
    out = [
        m.with_inline([index], [b"changed"]),
        replace(m, path_ids=_set(m.path_ids, index, MISSING)),
    ]
    if pid != MISSING:
        out.append(replace(m, lengths=_set(m.lengths, index, m.lengths[index] + 1)))
    if pid >= 0:
        out.append(replace(m, offsets=_set(m.offsets, index, m.offsets[index] + 1)))
        out.append(
            replace(
                m,
                paths=(*m.paths, "gs://else/x.nc"),
                path_ids=_set(m.path_ids, index, len(m.paths)),
            )
        )
    if pid == MISSING and m.paths:
        out.append(replace(m, path_ids=_set(m.path_ids, index, 0)))
    return out


def _set(column: NDArray[Any], index: tuple[int, ...], value: Any) -> NDArray[Any]:
    out = column.copy()
    out[index] = value
    return out


def same_layout(a: ChunkManifest, b: ChunkManifest) -> bool:
    x, y = layout_of(a), layout_of(b)
    return all(getattr(x, f).tolist() == getattr(y, f).tolist() for f in FIELDS)


def test_nbytes_and_nrefs() -> None:
    m = ChunkManifest.from_arrays(paths=["a", "", "bb"], offsets=[0, 0, 5], lengths=[5, 0, 5])
    assert m.nrefs == len(m) == 2
    assert len("a") + len("bb") < m.nbytes <= 3 * 24 + len("a") + len("bb")
    inlined = m.with_inline([(1,)], [b"x" * 100])
    assert inlined.nrefs == 3
    assert inlined.nbytes == m.nbytes + 100  # inline bytes are held too
    assert ChunkManifest.empty((4, 5)).nrefs == 0


def test_nbytes_of_a_million_chunks_of_one_file() -> None:
    grid = (1000, 1000)
    m = ChunkManifest.from_file(
        "s3://bucket/a/long/prefix/of/some/archive/file.nc",
        offsets=np.arange(10**6, dtype=np.uint64).reshape(grid) * 4096,
        lengths=4096,
    )
    assert m.nrefs == 10**6
    assert m.nbytes <= 24 * 10**6


def test_nbytes_of_a_million_chunks_of_a_thousand_files() -> None:
    paths = np.array([f"s3://bucket/archive/year/file-{i:04d}.nc" for i in range(1000)], object)
    per_file = [
        ChunkManifest.from_file(p, offsets=np.arange(1000, dtype=np.uint64) * 4096, lengths=4096)
        for p in paths
    ]
    combined = concatenate(per_file, axis=0)
    assert combined.grid_shape == (10**6,)
    assert len(combined.paths) == 1000
    assert combined.nbytes <= 24 * 10**6
    direct = ChunkManifest.from_arrays(
        paths=np.repeat(paths, 1000), offsets=np.tile(np.arange(1000) * 4096, 1000), lengths=4096
    )
    assert direct.nbytes <= 24 * 10**6
    assert direct.equals(combined)


# -- bugs ---------------------------------------------------------------------------------------


def test_with_inline_of_no_chunks_is_a_copy() -> None:
    m = ChunkManifest.from_file("f", offsets=[0, 10], lengths=10)
    assert m.with_inline([], []).equals(m)


def test_with_inline_on_a_scalar_grid() -> None:
    m = ChunkManifest.from_file("f", offsets=3, lengths=4)
    assert m.with_inline([()], [b"data"])[()] == ChunkRef(
        path=None, offset=0, length=4, data=b"data"
    )


def test_select_negative_integer_counts_from_the_end() -> None:
    m = ChunkManifest.from_file("f", offsets=[0, 10, 20], lengths=10)
    assert m.select((-1,)).equals(m.select((slice(2, 3),)))


def test_equals_ignores_what_a_missing_chunk_records() -> None:
    a = ChunkManifest.from_file("f", offsets=[0, 10], lengths=10, missing=[False, True])
    b = ChunkManifest.from_arrays(paths=["f", ""], offsets=[0, 0], lengths=[10, 0])
    assert a.equals(b)
