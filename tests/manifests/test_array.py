"""`ManifestArray` through xarray: combining, expanding, broadcasting and chunk-aligned selection
work on the references; anything that needs the values is refused with a clear error.

Each chunk's file offset is `id * 1000` for an id unique in the test, so `element_ids` turns a
virtual array into a plain numpy array saying, for every element, which chunk holds it; numpy's
own operations on those arrays are the expected results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.codecs import BytesCodec, GzipCodec, TransposeCodec

from vcube.errors import IncompatibleArraysError, VcubeError, VirtualDataError
from vcube.manifests import ChunkManifest, ManifestArray
from vcube.manifests.manifest import MISSING
from vcube.manifests.metadata import array_metadata

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from numpy.typing import NDArray
    from zarr.abc.codec import Codec

SETTINGS = settings(max_examples=50, deadline=None, database=None)
A, B, C, D = (f"file:///data/{n}.nc" for n in "abcd")
COMBINE: dict[str, Any] = {
    "coords": "minimal",
    "compat": "override",
    "join": "exact",
    "combine_attrs": "override",
}


def virtual(
    shape: Sequence[int],
    chunks: Sequence[int],
    path: str = A,
    *,
    base: int = 0,
    name: str = "air",
    dtype: str = "f4",
    codecs: Sequence[Codec] = (),
    fill_value: object = None,
    missing: NDArray[np.bool_] | None = None,
) -> ManifestArray:
    """A virtual array whose chunk `i` (C order) lives at offset `(base + i) * 1000` of `path`."""
    grid = tuple(-(-s // c) for s, c in zip(shape, chunks, strict=True))
    ids = base + np.arange(int(np.prod(grid)), dtype=np.uint64).reshape(grid)
    manifest = ChunkManifest.from_file(path, offsets=ids * 1000, lengths=100, missing=missing)
    info = array_metadata(
        shape=shape, dtype=np.dtype(dtype), chunks=chunks, codecs=codecs, fill_value=fill_value
    )
    return ManifestArray(info, manifest, name=name)


def element_ids(x: ManifestArray) -> NDArray[np.int64]:
    """For every element, the id of the chunk holding it (-1 where the chunk is missing)."""
    m = x.manifest
    ids = np.where(m.path_ids == MISSING, -1, (m.offsets // 1000).astype(np.int64))
    for axis, chunk in enumerate(x.chunks):
        ids = np.repeat(ids, chunk, axis=axis)
    return ids[tuple(slice(0, n) for n in x.shape)]


def dataset(x: ManifestArray, t0: int = 0, x0: int = 0) -> xr.Dataset:
    return xr.Dataset(
        {"air": (("time", "x"), x)},
        coords={"time": np.arange(t0, t0 + x.shape[0]), "x": np.arange(x0, x0 + x.shape[1])},
        attrs={"source": x.source},
    )


def virtual_air(ds: xr.Dataset) -> ManifestArray:
    data = ds["air"].variable.data
    assert isinstance(data, ManifestArray)
    return data


# -- combining ----------------------------------------------------------------------------------


def test_concat_along_an_existing_dimension() -> None:
    a, b = virtual((4, 6), (2, 3), A), virtual((3, 6), (2, 3), B, base=100)
    out = virtual_air(xr.concat([dataset(a), dataset(b, t0=4)], dim="time", **COMBINE))
    assert out.shape == (7, 6)
    assert out.chunks == (2, 3)
    np.testing.assert_array_equal(
        element_ids(out), np.concatenate([element_ids(a), element_ids(b)])
    )
    assert out.manifest.path_column()[:, 0].tolist() == [A, A, B, B]


def test_variable_concat_along_a_new_dimension_stacks() -> None:
    a, b = virtual((4, 6), (2, 3), A), virtual((4, 6), (2, 3), B, base=100)
    va, vb = xr.Variable(("time", "x"), a), xr.Variable(("time", "x"), b)
    out = xr.Variable.concat([va, vb], dim="member")
    assert out.dims == ("member", "time", "x")
    assert isinstance(out.data, ManifestArray)
    assert out.data.chunks == (1, 2, 3)
    np.testing.assert_array_equal(element_ids(out.data), np.stack([element_ids(a), element_ids(b)]))


def test_dataset_concat_along_a_new_dimension_stacks() -> None:
    a, b = virtual((4, 6), (2, 3), A), virtual((4, 6), (2, 3), B, base=100)
    out = virtual_air(xr.concat([dataset(a), dataset(b)], dim="member", **COMBINE))
    assert out.shape == (2, 4, 6)
    np.testing.assert_array_equal(element_ids(out), np.stack([element_ids(a), element_ids(b)]))


def test_combine_nested_two_dimensions() -> None:
    parts = [
        [virtual((4, 6), (2, 3), p, base=100 * i) for i, p in enumerate(row)]
        for row in [(A, B), (C, D)]
    ]
    datasets = [
        [dataset(x, t0=4 * r, x0=6 * c) for c, x in enumerate(row)] for r, row in enumerate(parts)
    ]
    out = virtual_air(xr.combine_nested(datasets, concat_dim=["time", "x"], **COMBINE))
    assert out.shape == (8, 12)
    expected = np.block([[element_ids(x) for x in row] for row in parts])
    np.testing.assert_array_equal(element_ids(out), expected)
    assert out.manifest.path_column()[::2, ::2].tolist() == [[A, B], [C, D]]
    assert set(out.manifest.paths) == {A, B, C, D}


@pytest.mark.parametrize("join", ["exact", "override"])
def test_combine_by_coords_orders_by_coordinate(join: str) -> None:
    pieces = [virtual((2, 6), (2, 3), p, base=100 * i) for i, p in enumerate([A, B, C])]
    datasets = [dataset(x, t0=2 * i) for i, x in enumerate(pieces)]
    shuffled = [datasets[2], datasets[0], datasets[1]]
    out_ds = xr.combine_by_coords(shuffled, **{**COMBINE, "join": join})
    assert isinstance(out_ds, xr.Dataset)
    out = virtual_air(out_ds)
    assert out.shape == (6, 6)
    np.testing.assert_array_equal(out_ds["time"].values, np.arange(6))
    np.testing.assert_array_equal(
        element_ids(out), np.concatenate([element_ids(x) for x in pieces])
    )
    assert out.manifest.path_column()[:, 0].tolist() == [A, B, C]


# -- expanding and broadcasting -----------------------------------------------------------------


def test_expand_dims_with_a_size_broadcasts_the_references() -> None:
    a = virtual((4, 6), (2, 3))
    out = virtual_air(dataset(a).expand_dims(member=3))
    assert out.shape == (3, 4, 6)
    assert out.chunks == (1, 2, 3)
    np.testing.assert_array_equal(element_ids(out), np.broadcast_to(element_ids(a), (3, 4, 6)))


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_numpy_expand_dims(axis: int) -> None:
    a = virtual((4, 6), (2, 3))
    out = np.expand_dims(a, axis)
    assert isinstance(out, ManifestArray)
    expected = np.expand_dims(element_ids(a), axis)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(element_ids(out), expected)


def test_expand_dims_of_length_one() -> None:
    out = virtual_air(dataset(virtual((4, 6), (2, 3))).expand_dims("member"))
    assert out.shape == (1, 4, 6)


def test_broadcast_against_a_larger_variable() -> None:
    row = xr.DataArray(virtual((6,), (3,), A), dims=("x",))
    cube = xr.DataArray(virtual((4, 6), (2, 3), B, base=100), dims=("time", "x"))
    big, wide = xr.broadcast(cube, row)
    assert isinstance(big.data, ManifestArray)
    assert isinstance(wide.data, ManifestArray)
    assert wide.dims == ("time", "x")
    assert wide.data.chunks == (1, 3)
    np.testing.assert_array_equal(
        element_ids(wide.data), np.broadcast_to(element_ids(row.data), (4, 6))
    )


def test_broadcast_needing_a_transpose_is_refused_clearly() -> None:
    row = xr.DataArray(virtual((6,), (3,)), dims=("x",))
    cube = xr.DataArray(virtual((4, 6), (2, 3)), dims=("time", "x"))
    with pytest.raises(VcubeError, match="air"):
        xr.broadcast(row, cube)


def test_broadcast_of_a_chunked_axis_is_refused() -> None:
    a = virtual((1, 6), (2, 3))  # an axis of length 1 in a chunk of 2
    with pytest.raises(IncompatibleArraysError, match=r"air.*rechunking"):
        np.broadcast_to(a, (4, 6))


# -- selection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "indexers",
    [
        {"time": slice(2, 4)},
        {"time": slice(0, 2), "x": slice(3, None)},
        {"x": slice(6, 7)},  # the partial last chunk
        {"time": slice(4, 4)},
        {"time": slice(None), "x": slice(0, 7)},
    ],
)
def test_chunk_aligned_isel(indexers: dict[str, slice]) -> None:
    a = virtual((6, 7), (2, 3))
    out = dataset(a).isel(indexers)
    key = tuple(indexers.get(d, slice(None)) for d in ("time", "x"))
    expected = element_ids(a)[key]
    assert out["air"].shape == expected.shape
    np.testing.assert_array_equal(element_ids(virtual_air(out)), expected)


@pytest.mark.parametrize(
    "indexers",
    [
        {"time": slice(1, 3)},
        {"x": slice(0, 4)},
        {"time": slice(0, 6, 2)},
        {"time": 0},
        {"time": [0, 1]},
        {"time": slice(None, None, -1)},
    ],
)
def test_isel_inside_a_chunk_is_refused(indexers: dict[str, Any]) -> None:
    with pytest.raises(VirtualDataError, match="chunk"):
        dataset(virtual((6, 7), (2, 3))).isel(indexers)


# -- refusals -----------------------------------------------------------------------------------

DIFFERENCES: dict[str, tuple[dict[str, Any], str]] = {
    "dtype": ({"dtype": "f8"}, "dtype"),
    "codecs": ({"codecs": [BytesCodec(), GzipCodec(level=1)]}, "codecs"),
    "chunk shape": ({"chunks": (1, 3)}, "chunk shape"),
    "fill value": ({"fill_value": -999.0}, "fill value"),
    "partial chunk": ({"shape": (3, 6)}, "partial chunk"),
}


def mismatched(what: str) -> tuple[ManifestArray, ManifestArray]:
    changes, _ = DIFFERENCES[what]
    first = {"shape": (4, 6), "chunks": (2, 3)}
    if what == "partial chunk":  # the first ends in a partial chunk
        first, changes = {**first, **changes}, {}
    second = {"shape": (4, 6), "chunks": (2, 3), **changes}
    return virtual(path=A, **first), virtual(path=B, base=100, **second)


def assert_names_everything(err: pytest.ExceptionInfo[Exception], property_name: str) -> None:
    message = str(err.value)
    for part in ("'air'", A, B, property_name):
        assert part in message, f"{part!r} missing from: {message}"


@pytest.mark.parametrize("what", list(DIFFERENCES))
def test_numpy_concatenate_refusal_names_variable_files_and_property(what: str) -> None:
    a, b = mismatched(what)
    with pytest.raises(IncompatibleArraysError) as err:
        np.concatenate([a, b], axis=0)
    assert_names_everything(err, DIFFERENCES[what][1])


@pytest.mark.parametrize(
    "what",
    [
        pytest.param(
            "dtype",
        ),
        *(w for w in DIFFERENCES if w != "dtype"),
    ],
)
def test_xarray_concat_refusal_names_variable_files_and_property(what: str) -> None:
    a, b = mismatched(what)
    with pytest.raises(IncompatibleArraysError) as err:
        xr.concat([dataset(a), dataset(b, t0=a.shape[0])], dim="time", **COMBINE)
    assert_names_everything(err, DIFFERENCES[what][1])


def test_stack_with_an_array_to_array_codec_is_refused() -> None:
    a = virtual((4, 6), (2, 3), codecs=[TransposeCodec(order=(1, 0)), BytesCodec()])
    with pytest.raises(IncompatibleArraysError, match="air"):
        np.stack([a, a])


def test_default_and_explicit_default_fill_values_concatenate() -> None:
    a, b = virtual((2, 3), (2, 3)), virtual((2, 3), (2, 3), B, fill_value=0.0)
    assert a.metadata.to_dict() == b.metadata.to_dict()
    assert np.concatenate([a, b]).shape == (4, 3)


DATA_OPS: dict[str, Callable[[xr.Dataset], object]] = {
    "np.add": lambda ds: np.add(ds["air"], 1),
    "np.asarray": lambda ds: np.asarray(ds["air"]),
    ".values": lambda ds: ds["air"].values,
    "==": lambda ds: ds["air"] == 1,
    "data ==": lambda ds: ds["air"].data == 1,
    "mean": lambda ds: ds["air"].mean(),
    "astype": lambda ds: ds["air"].astype("f8"),
    "np.sort": lambda ds: np.sort(ds["air"].data),
    "ds + 1": lambda ds: ds + 1,
    "1 - ds": lambda ds: 1 - ds,
    "-air": lambda ds: -ds["air"],
    "air < 0": lambda ds: ds["air"] < 0,
    "air != 0": lambda ds: ds["air"] != 0,
}


@pytest.mark.parametrize("op", list(DATA_OPS))
def test_operations_needing_values_are_refused(op: str) -> None:
    with pytest.raises(VirtualDataError, match=r"'air'.*(?i:load)"):
        DATA_OPS[op](dataset(virtual((4, 6), (2, 3))))


# -- properties ---------------------------------------------------------------------------------


@st.composite
def joinable(draw: st.DrawFn, *, same_shape: bool) -> tuple[list[ManifestArray], int]:
    """2-4 arrays that can be concatenated along a drawn axis (or stacked, with `same_shape`)."""
    ndim = draw(st.integers(1, 3))
    chunks = tuple(draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim)))
    shape = [draw(st.integers(1, 7)) for _ in range(ndim)]
    axis = draw(st.integers(-ndim, ndim - 1))
    arrays = []
    count = draw(st.integers(2, 4))
    for k in range(count):
        here = list(shape)
        if not same_shape:  # whole chunks along the axis, except for the last array
            last = k == count - 1
            here[axis] = draw(st.integers(0, 7)) if last else chunks[axis] * draw(st.integers(0, 3))
        grid = tuple(-(-s // c) for s, c in zip(here, chunks, strict=True))
        flags = draw(
            st.lists(st.booleans(), min_size=int(np.prod(grid)), max_size=int(np.prod(grid)))
        )
        missing = np.array(flags, dtype=bool).reshape(grid)
        arrays.append(virtual(here, chunks, (A, B, C, D)[k], base=1000 * k, missing=missing))
    return arrays, axis


@SETTINGS
@given(joinable(same_shape=False))
def test_concatenate_is_numpy_concatenate(case: tuple[list[ManifestArray], int]) -> None:
    arrays, axis = case
    out = np.concatenate(arrays, axis=axis)
    expected = np.concatenate([element_ids(x) for x in arrays], axis=axis)
    assert out.shape == expected.shape
    assert out.chunks == arrays[0].chunks
    np.testing.assert_array_equal(element_ids(out), expected)


@SETTINGS
@given(joinable(same_shape=True), st.data())
def test_stack_is_numpy_stack(case: tuple[list[ManifestArray], int], data: st.DataObject) -> None:
    arrays, _ = case
    ndim = arrays[0].ndim
    axis = data.draw(st.integers(-ndim - 1, ndim))
    out = np.stack(arrays, axis=axis)
    expected = np.stack([element_ids(x) for x in arrays], axis=axis)
    assert out.shape == expected.shape
    assert out.chunks[axis] == 1
    np.testing.assert_array_equal(element_ids(out), expected)


@SETTINGS
@given(joinable(same_shape=True), st.data())
def test_aligned_getitem_is_numpy_indexing(
    case: tuple[list[ManifestArray], int], data: st.DataObject
) -> None:
    x = case[0][0]
    key = []
    for n, c in zip(x.shape, x.chunks, strict=True):
        bounds = sorted({*range(0, n, c), n})
        start = data.draw(st.sampled_from(bounds[:-1]))
        key.append(slice(start, data.draw(st.sampled_from([b for b in bounds if b >= start]))))
    out = x[tuple(key)]
    np.testing.assert_array_equal(element_ids(out), element_ids(x)[tuple(key)])


def test_empty_selection_at_the_end_is_aligned() -> None:
    x = virtual((6, 7), (2, 3))
    assert x[:, 7:7].shape == (6, 0)


def test_bytes_codec_goes_after_array_codecs() -> None:
    from zarr.codecs import BytesCodec, TransposeCodec, ZstdCodec

    from vcube.manifests.metadata import array_metadata

    info = array_metadata(
        shape=(4, 6),
        dtype=np.dtype(">i4"),
        chunks=(2, 3),
        codecs=[TransposeCodec(order=(1, 0)), ZstdCodec()],
    )
    assert [type(c) for c in info.codecs] == [TransposeCodec, BytesCodec, ZstdCodec]
    assert info.codecs[1] == BytesCodec(endian="big")
    info.to_zarr()  # a valid pipeline for zarr
