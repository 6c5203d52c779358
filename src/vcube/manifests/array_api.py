"""The numpy functions xarray calls on virtual arrays, implemented on chunk references.

Each function checks that the arrays can be joined without touching the data (same dtype, codecs,
chunk shape and fill value, no partial chunk in the middle of the result) and then works on the
manifests' numpy columns.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayArrayCodec

from vcube.errors import IncompatibleArraysError, VirtualDataError
from vcube.manifests import manifest as chunk_manifest

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from vcube.manifests.array import ManifestArray
    from vcube.manifests.metadata import ArrayInfo

__all__ = ["HANDLED_FUNCTIONS", "check_joinable", "getitem", "grid_shape"]

HANDLED_FUNCTIONS: dict[Callable[..., Any], Callable[..., Any]] = {}


def _implements(numpy_function: Callable[..., Any]) -> Callable[[Any], Any]:
    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        HANDLED_FUNCTIONS[numpy_function] = func
        return func

    return register


def grid_shape(shape: Sequence[int], chunks: Sequence[int]) -> tuple[int, ...]:
    """Number of chunks along each axis."""
    return tuple(-(-int(s) // int(c)) if c else 0 for s, c in zip(shape, chunks, strict=True))


@_implements(np.result_type)
def result_type(*arrays_and_dtypes: Any) -> np.dtype[Any]:
    virtual = [x for x in arrays_and_dtypes if getattr(x, "manifest", None) is not None]
    for other in virtual[1:]:
        if other.dtype != virtual[0].dtype:
            first = virtual[0]
            raise IncompatibleArraysError(
                f"cannot combine variable {first.name!r}: its dtype differs between "
                f"{first.source} ({first.dtype}) and {other.source} ({other.dtype}); virtual "
                f"arrays cannot be cast"
            )
    dtypes = [getattr(x, "dtype", x) for x in arrays_and_dtypes]
    return np.result_type(*dtypes)


@_implements(np.concatenate)
def concatenate(
    arrays: Sequence[ManifestArray], /, axis: int | None = 0, **kwargs: Any
) -> ManifestArray:
    arrays = list(arrays)
    if axis is None:
        raise VirtualDataError("concatenating flattened virtual arrays (axis=None) needs values")
    first = arrays[0]
    axis = _normalize_axis(axis, first.ndim)
    check_joinable(arrays, operation="concatenate", axis=axis)
    if len(arrays) == 1:
        return first
    manifest = chunk_manifest.concatenate([a.manifest for a in arrays], axis=axis)
    shape = list(first.shape)
    shape[axis] = sum(a.shape[axis] for a in arrays)
    return first.replace(info=_relayout(first, shape, first.chunks), manifest=manifest)


@_implements(np.stack)
def stack(arrays: Sequence[ManifestArray], /, axis: int = 0, **kwargs: Any) -> ManifestArray:
    arrays = list(arrays)
    first = arrays[0]
    axis = _normalize_axis(axis, first.ndim + 1)
    check_joinable(arrays, operation="stack")
    _refuse_array_codecs(first, "stack")
    manifest = chunk_manifest.stack([a.manifest for a in arrays], axis=axis)
    shape = _insert(first.shape, axis, len(arrays))
    chunks = _insert(first.chunks, axis, 1)
    return first.replace(info=_relayout(first, shape, chunks), manifest=manifest)


@_implements(np.expand_dims)
def expand_dims(x: ManifestArray, /, axis: int = 0) -> ManifestArray:
    axis = _normalize_axis(axis, x.ndim + 1)
    _refuse_array_codecs(x, "expand_dims")
    info = _relayout(x, _insert(x.shape, axis, 1), _insert(x.chunks, axis, 1))
    return x.replace(info=info, manifest=x.manifest.expand_dims(axis))


@_implements(np.broadcast_to)
def broadcast_to(x: ManifestArray, /, shape: tuple[int, ...], **kwargs: Any) -> ManifestArray:
    shape = tuple(int(s) for s in shape)
    if shape == x.shape:
        return x
    if len(shape) > x.ndim:
        _refuse_array_codecs(x, "broadcast_to")
    lead = len(shape) - x.ndim
    if lead < 0:
        raise ValueError(f"cannot broadcast shape {x.shape} to {shape}")
    old_shape = (1,) * lead + x.shape
    old_chunks = (1,) * lead + x.chunks
    for old, new, chunk in zip(old_shape, shape, old_chunks, strict=True):
        if old != new and (old != 1 or chunk != 1):
            raise IncompatibleArraysError(
                f"variable {x.name!r} from {x.source}: cannot broadcast shape {x.shape} with "
                f"chunks {x.chunks} to {shape} without rechunking (only axes of length 1 held "
                f"in chunks of 1 can be repeated)"
            )
    grid = grid_shape(shape, old_chunks)
    manifest = x.manifest
    for _ in range(lead):
        manifest = manifest.expand_dims(0)
    return x.replace(info=_relayout(x, shape, old_chunks), manifest=manifest.broadcast_to(grid))


def getitem(x: ManifestArray, key: Any) -> ManifestArray:
    """Chunk-aligned selection: slices that start and stop on chunk boundaries; `None` inserts a
    new axis of length 1, as in numpy."""
    items = key if isinstance(key, tuple) else (key,)
    if any(k is None for k in items):
        selected = getitem(x, tuple(k for k in items if k is not None))
        for axis in (i for i, k in enumerate(_expand_none(items, x.ndim)) if k is None):
            selected = expand_dims(selected, axis=axis)
        return selected
    key = _expand_key(key, x.ndim)
    pick: list[slice] = []
    shape: list[int] = []
    for k, size, chunk in zip(key, x.shape, x.chunks, strict=True):
        start, stop, step = k.indices(size)
        stop = max(stop, start)
        aligned = start == stop or (start % chunk == 0 and (stop % chunk == 0 or stop == size))
        if step != 1 or not aligned:
            raise VirtualDataError(
                f"variable {x.name!r} from {x.source}: selecting {k} along an axis of length "
                f"{size} with chunks of {chunk} is not aligned to chunk boundaries, so it needs "
                f"the values. Select whole chunks, or load the variable."
            )
        first = start // chunk
        pick.append(slice(first, first if start == stop else -(-stop // chunk)))
        shape.append(stop - start)
    if tuple(shape) == x.shape:
        return x
    return x.replace(info=_relayout(x, shape, x.chunks), manifest=x.manifest.select(tuple(pick)))


def check_joinable(
    arrays: Sequence[ManifestArray], *, operation: str, axis: int | None = None
) -> None:
    """Raise `IncompatibleArraysError` naming the variable, both files and the difference."""
    first = next((a for a in arrays if getattr(a, "manifest", None) is not None), arrays[0])
    first_key = _join_key(first, axis)
    for other in arrays:
        if getattr(other, "manifest", None) is not None and _join_key(other, axis) == first_key:
            continue  # the common case, decided in one comparison (NaN fills take the long way)
        if getattr(other, "manifest", None) is None:
            raise IncompatibleArraysError(
                f"cannot {operation} virtual variable {first.name!r} from {first.source} with a "
                f"loaded (numpy) array; load both or neither"
            )
        for what, a, b in _layout_fields(first, other, axis):
            if not _same(a, b):
                raise IncompatibleArraysError(
                    f"cannot {operation} variable {first.name!r}: its {what} differs between "
                    f"{first.source} ({a}) and {other.source} ({b})"
                )
    if axis is None:
        return
    for a, b in itertools.pairwise(arrays):
        if a.shape[axis] % a.chunks[axis]:
            raise IncompatibleArraysError(
                f"cannot {operation} variable {a.name!r} along axis {axis}: {a.source} ends in a "
                f"partial chunk ({a.shape[axis]} is not a multiple of the chunk length "
                f"{a.chunks[axis]}), so {b.source} would not start on a chunk boundary"
            )


def _join_key(x: ManifestArray, axis: int | None) -> tuple[Any, ...]:
    info = x.info
    other_shape = tuple(n for i, n in enumerate(info.shape) if i != axis)
    return (info.dtype, info.chunks, other_shape, info.codecs, info.fill_value)


def _layout_fields(
    a: ManifestArray, b: ManifestArray, axis: int | None
) -> list[tuple[str, Any, Any]]:
    other_axes = [i for i in range(a.ndim) if i != axis]
    return [
        ("number of dimensions", a.ndim, b.ndim),
        ("dtype", a.dtype, b.dtype),
        ("chunk shape", a.chunks, b.chunks),
        ("shape (outside the join axis)", _at(a.shape, other_axes), _at(b.shape, other_axes)),
        ("codecs", a.codecs, b.codecs),
        ("fill value", a.fill_value, b.fill_value),
    ]


def _at(values: Sequence[int], axes: Sequence[int]) -> tuple[int, ...]:
    return tuple(values[i] for i in axes if i < len(values))


def _codec_json(x: ManifestArray) -> list[Any]:
    return [c.to_dict() for c in x.codecs]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float | np.floating) and isinstance(b, float | np.floating):
        return bool(a == b or (math.isnan(a) and math.isnan(b)))
    if isinstance(a, complex | np.complexfloating) and isinstance(b, complex | np.complexfloating):
        return _same(a.real, b.real) and _same(a.imag, b.imag)
    return bool(a == b)


def _refuse_array_codecs(x: ManifestArray, operation: str) -> None:
    if any(isinstance(c, ArrayArrayCodec) for c in x.codecs):
        raise IncompatibleArraysError(
            f"variable {x.name!r} from {x.source}: {operation} is not possible with the "
            f"array-to-array codecs {_codec_json(x)}"
        )


def _relayout(x: ManifestArray, shape: Sequence[int], chunks: Sequence[int]) -> ArrayInfo:
    """The array's description with a new shape and chunk shape; xarray tracks dimension names."""
    return x.info.replace(shape=tuple(shape), chunks=tuple(chunks), dimension_names=None)


def _insert(values: tuple[int, ...], axis: int, value: int) -> tuple[int, ...]:
    return (*values[:axis], value, *values[axis:])


def _normalize_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(axis, ndim)
    return axis % ndim


def _expand_none(items: tuple[Any, ...], ndim: int) -> tuple[Any, ...]:
    """`items` with the Ellipsis expanded, so `None` entries sit at their result axis."""
    if not any(k is Ellipsis for k in items):
        return items
    at = next(i for i, k in enumerate(items) if k is Ellipsis)
    fill = (slice(None),) * (ndim - sum(k is not None for k in items) + 1)
    return (*items[:at], *fill, *items[at + 1 :])


def _expand_key(key: Any, ndim: int) -> tuple[slice, ...]:
    items = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in items):
        at = next(i for i, k in enumerate(items) if k is Ellipsis)
        fill = (slice(None),) * (ndim - len(items) + 1)
        items = (*items[:at], *fill, *items[at + 1 :])
    items = (*items, *(slice(None),) * (ndim - len(items)))
    if len(items) != ndim or not all(isinstance(k, slice) for k in items):
        raise VirtualDataError(
            f"virtual arrays support only slices that select whole chunks, not {key!r}"
        )
    return tuple(items)
