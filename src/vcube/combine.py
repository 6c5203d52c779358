"""The reduce: many per-file virtual datasets into one, along one dimension.

xarray's combine builds and aligns a new dataset for every pair it joins, which dominates the
reduce of thousands of small virtual datasets. When the files agree in structure, which is the
usual archive, this module joins each variable in one call over all files (one `np.concatenate`
of the manifests' columns, one of the loaded coordinates) and builds the result once. It gives
what `xr.combine_nested` / `xr.combine_by_coords` give with the no-load keywords vcube uses
(`coords="minimal"`, `compat="override"`, `join="exact"`, `combine_attrs="override"`); anything
else (different variables, a new dimension, several concat dimensions, other keywords) goes to
xarray itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence

__all__ = ["NO_LOAD_COMBINE", "combine"]

# xarray's combine keywords that never load, compare or align the values of virtual variables.
NO_LOAD_COMBINE: dict[str, Any] = {
    "coords": "minimal",
    "compat": "override",
    "data_vars": "minimal",
    "join": "exact",
    "combine_attrs": "override",
}
# The keyword values the direct join gives the same result for (the first of each: the default).
FAST_KEYWORDS = {
    "compat": ("override",),
    "coords": ("minimal",),
    "join": ("exact", "override"),
    "combine_attrs": ("override",),
    "data_vars": (None, "minimal"),
}


def combine(
    datasets: Sequence[xr.Dataset], *, concat_dim: str | None, by_coords: bool, **kwargs: Any
) -> xr.Dataset:
    """Combine one-dimensional `datasets` along `concat_dim` (found from the coordinates when
    `by_coords`), directly when they agree in structure, else with xarray."""
    dim = _concat_dim(datasets) if by_coords else concat_dim
    if dim is not None and _fast_path_applies(datasets, dim, kwargs):
        ordered = _by_first_value(datasets, dim) if by_coords else list(datasets)
        if ordered is not None:
            return _concat(ordered, dim)
    if by_coords:
        result = xr.combine_by_coords(list(datasets), **kwargs)
    else:
        result = xr.combine_nested(list(datasets), concat_dim=concat_dim, **kwargs)
    if not isinstance(result, xr.Dataset):
        raise TypeError("the files combined into a DataArray, not a Dataset")
    return result


def _fast_path_applies(datasets: Sequence[xr.Dataset], dim: str, kwargs: dict[str, Any]) -> bool:
    if any(kwargs.get(k, v[0]) not in v for k, v in FAST_KEYWORDS.items()):
        return False
    first = datasets[0]
    if dim not in first.dims:
        return False  # a new dimension: xarray stacks and broadcasts
    layout = _layout(first)
    if any(_layout(ds) != layout for ds in datasets[1:]):
        return False
    # join="exact": every other index must be equal in every file (xarray explains otherwise).
    for name in first.xindexes.keys():  # noqa: SIM118 (Indexes iterates as Index to mypy)
        if name == dim:
            continue
        values = first.variables[name].values
        if any(not np.array_equal(ds.variables[name].values, values) for ds in datasets[1:]):
            return False
    return True


def _layout(ds: xr.Dataset) -> tuple[Any, ...]:
    """Variable names and dimensions, coordinate and index names: what must agree."""
    variables = tuple((name, v.dims) for name, v in ds.variables.items())
    return variables, tuple(ds.coords), tuple(ds.xindexes)


def _concat_dim(datasets: Sequence[xr.Dataset]) -> str | None:
    """The one dimension whose index differs between the first two files, or None; the checks
    that follow send anything else (another index differing in a later file) to xarray."""
    if len(datasets) < 2:
        return None
    first, second = datasets[0], datasets[1]
    differing = [
        name
        for name in first.xindexes.keys()  # noqa: SIM118
        if name in second.xindexes
        and not np.array_equal(first.variables[name].values, second.variables[name].values)
    ]
    return str(differing[0]) if len(differing) == 1 else None


def _by_first_value(datasets: Sequence[xr.Dataset], dim: str) -> list[xr.Dataset] | None:
    """Files ordered along `dim`, or None when their values do not form one increasing run
    (overlapping or unordered files: xarray decides)."""
    indexes = [ds.variables[dim].values for ds in datasets]
    if any(i.size == 0 for i in indexes):
        return None
    order = np.argsort(np.array([i[0] for i in indexes]), kind="stable")
    values = np.concatenate([indexes[i] for i in order])
    if values.size > 1 and not bool(np.all(values[1:] > values[:-1])):
        return None
    return [datasets[i] for i in order]


def _concat(datasets: Sequence[xr.Dataset], dim: str) -> xr.Dataset:
    first = datasets[0]
    variables: dict[Hashable, xr.Variable] = {}
    for name, var in first.variables.items():
        if dim not in var.dims:
            variables[name] = var  # compat="override": the first file's
            continue
        axis = var.dims.index(dim)
        parts = [ds.variables[name].data for ds in datasets]
        data = np.concatenate(parts, axis=axis)
        variables[name] = xr.Variable(var.dims, data, attrs=var.attrs, encoding=var.encoding)
    coords = {name: variables.pop(name) for name in first.coords}
    return xr.Dataset(variables, coords=coords, attrs=first.attrs)
