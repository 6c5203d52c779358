"""What verify knows of an array on either side (the target's, a source file's): shape, dtype,
CF encoding and dimension names; CF decoding as xarray does it; equality with NaN equal to NaN."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import xarray as xr

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from numpy.typing import NDArray

    from vcube.verify.report import Index

__all__ = ["CF_KEYS", "Info", "Region", "decoded", "describe", "equal", "slices"]

# The attributes whose difference between a file and the target makes verify compare decoded
# values (a time coordinate re-encoded with the first file's units, BSCALE as scale_factor).
CF_KEYS: Final = ("units", "calendar", "scale_factor", "add_offset")

Region = tuple[slice, ...]


@dataclass(frozen=True, slots=True)
class Info:
    """An array's shape, dtype, CF encoding attributes and dimension names (the target's are
    paths of the coordinates in the array's group; a source's are None when its format does not
    name them)."""

    shape: Index
    dtype: np.dtype[Any]
    cf: dict[str, object]
    dims: tuple[str, ...] | None = None


def describe(
    shape: Iterable[int],
    dtype: Any,
    attrs: Mapping[str, Any],
    dims: Iterable[str] | None = None,
) -> Info:
    """The `Info` of an array, its CF attributes as plain Python values."""
    cf: dict[str, object] = {}
    for key in CF_KEYS:
        if key in attrs:
            value = attrs[key]
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            elif not isinstance(value, str):
                array = np.asarray(value)
                value = array.item() if array.size == 1 else array.tolist()
            cf[key] = value
    names = None if dims is None else tuple(dims)
    return Info(tuple(int(n) for n in shape), np.dtype(dtype), cf, names)


def decoded(name: str, values: NDArray[Any], cf: Mapping[str, object]) -> NDArray[Any]:
    """Values CF-decoded (times, scale and offset) as xarray decodes them; values xarray cannot
    decode (units it does not know) stay raw, and are then compared raw."""
    if not cf:
        return values
    dims = tuple(f"dim_{k}" for k in range(values.ndim))
    variable = xr.Variable(dims, values, attrs=dict(cf))
    try:
        decoded = xr.conventions.decode_cf_variable(name, variable, concat_characters=False)
    except (ValueError, TypeError, OverflowError):
        return values
    return np.asarray(decoded.values)


def equal(a: NDArray[Any], b: NDArray[Any]) -> NDArray[np.bool_]:
    """Element-wise equality, NaN (and NaT) equal to NaN."""
    try:
        same = np.asarray(a == b, dtype=bool)
    except (TypeError, ValueError):  # types numpy cannot compare are not equal
        return np.zeros(np.broadcast_shapes(a.shape, b.shape), bool)
    if a.dtype.kind in "fcmM" and b.dtype.kind in "fcmM":
        same |= np.isnan(a) & np.isnan(b)
    return same


def slices(starts: Iterable[int], stops: Iterable[int]) -> Region:
    return tuple(slice(int(a), int(b)) for a, b in zip(starts, stops, strict=True))
