"""CF time decoding of loaded coordinates, deferred from the map to after the reduce.

Decoding a time coordinate is xarray's costliest step per file (about as costly as parsing a
small NetCDF4 file). When every file encodes a variable alike (same units, calendar, dtype: all
its attributes), decoding the combined values once gives what decoding each file's values and
combining gives, since the decoding is element by element and keeps the order of the values.
`open_virtual_mfdataset` therefore opens files leaving them encoded, and calls
`decode_for_combine` before the reduce and `decode_combined` after it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from xarray.coding.times import TIME_UNITS
from xarray.conventions import decode_cf_variable

from vcube.manifests import ManifestArray

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence

    import xarray as xr

__all__ = ["decode_combined", "decode_for_combine", "is_time_encoded"]


def is_time_encoded(variable: xr.Variable) -> bool:
    """Whether xarray would decode `variable` as CF datetimes or timedeltas."""
    units = variable.attrs.get("units")
    return isinstance(units, str) and ("since" in units or units.strip().lower() in TIME_UNITS)


def decode_for_combine(
    datasets: list[xr.Dataset], decode_times: bool | None
) -> tuple[list[xr.Dataset], list[Hashable]]:
    """Decode, file by file, the loaded time variables the files do not all encode alike; the
    names of the others, to decode once after the combine."""
    first = datasets[0]
    # (a variable some file lacks, or holds virtual, is decoded file by file where loaded)
    names = list(
        dict.fromkeys(n for ds in datasets for n, v in ds.variables.items() if _loaded_time(v))
    )
    shared = [name for name in names if all(_alike(first, ds, name) for ds in datasets)]
    separate = [name for name in names if name not in shared]
    if separate:
        datasets = [
            _decode(ds, [n for n in separate if n in ds.variables], decode_times) for ds in datasets
        ]
    return datasets, shared


def decode_combined(
    ds: xr.Dataset, names: Sequence[Hashable], decode_times: bool | None
) -> xr.Dataset:
    """Decode the combined values of the variables `decode_for_combine` left encoded."""
    return _decode(ds, [name for name in names if name in ds.variables], decode_times)


def _loaded_time(var: xr.Variable | None) -> bool:
    return var is not None and not isinstance(var.data, ManifestArray) and is_time_encoded(var)


def _alike(first: xr.Dataset, other: xr.Dataset, name: Hashable) -> bool:
    var, reference = other.variables.get(name), first.variables.get(name)
    if var is None or reference is None or not _loaded_time(var):
        return False
    return (
        var.dtype == reference.dtype
        and var.dims == reference.dims
        and _same_attrs(var.attrs, reference.attrs)
    )


def _same_attrs(a: dict[Any, Any], b: dict[Any, Any]) -> bool:
    return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)


def _same_value(a: Any, b: Any) -> bool:
    left, right = np.asarray(a), np.asarray(b)
    if left.dtype.kind != right.dtype.kind:
        return False
    return bool(np.array_equal(left, right, equal_nan=left.dtype.kind in "fc"))


def _decode(ds: xr.Dataset, names: Sequence[Hashable], decode_times: bool | None) -> xr.Dataset:
    """The variables `names` of `ds` decoded as `xr.open_dataset` decodes them."""
    if not names:
        return ds
    kwargs = {} if decode_times is None else {"decode_times": decode_times}
    decoded = {
        name: decode_cf_variable(name, ds.variables[name], **kwargs).load() for name in names
    }
    coords = {k: v for k, v in decoded.items() if k in ds.coords}
    data_vars = {k: v for k, v in decoded.items() if k not in ds.coords}
    # (a dimension coordinate's index is rebuilt from the decoded values)
    return ds.assign_coords(coords).assign(data_vars)
