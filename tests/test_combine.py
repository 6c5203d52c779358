"""The direct combine gives what xarray's combine gives, and hands every other case to xarray."""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import xarray as xr

import vcube
from vcube.combine import NO_LOAD_COMBINE, combine
from vcube.demo import write_sample_archive
from vcube.errors import IncompatibleArraysError
from vcube.manifests import ManifestArray

if TYPE_CHECKING:
    from pathlib import Path

KWARGS: dict[str, Any] = {**NO_LOAD_COMBINE, "data_vars": None}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> list[xr.Dataset]:
    paths = write_sample_archive(tmp_path_factory.mktemp("archive"), 6)
    return [vcube.open_virtual_dataset(p) for p in paths]


def assert_same(actual: xr.Dataset, expected: xr.Dataset) -> None:
    """Same variables, coordinates, dimensions, attributes and encodings; same references for
    virtual variables and same values for loaded ones."""
    assert list(actual.variables) == list(expected.variables)
    assert set(actual.coords) == set(expected.coords)
    assert set(actual.xindexes) == set(expected.xindexes)
    assert actual.attrs == expected.attrs
    for name, var in expected.variables.items():
        got = actual.variables[name]
        assert got.dims == var.dims, name
        assert got.attrs == var.attrs, name
        assert got.encoding == var.encoding, name
        if isinstance(var.data, ManifestArray):
            assert isinstance(got.data, ManifestArray), name
            assert got.data.info == var.data.info, name
            assert got.data.manifest.equals(var.data.manifest), name
        else:
            np.testing.assert_array_equal(got.values, var.values, err_msg=str(name))
            assert got.dtype == var.dtype, name


def test_nested_is_xarrays(datasets: list[xr.Dataset]) -> None:
    expected = xr.combine_nested(datasets, concat_dim="time", **KWARGS)
    assert_same(combine(datasets, concat_dim="time", by_coords=False, **KWARGS), expected)


def test_by_coords_orders_files_as_xarray_does(datasets: list[xr.Dataset]) -> None:
    shuffled = datasets[:]
    random.Random(0).shuffle(shuffled)
    expected = xr.combine_by_coords(shuffled, **KWARGS)
    assert isinstance(expected, xr.Dataset)
    actual = combine(shuffled, concat_dim=None, by_coords=True, **KWARGS)
    assert_same(actual, expected)
    assert list(actual.indexes["time"]) == sorted(actual.indexes["time"])


def same_outcome(datasets: list[xr.Dataset], *, concat_dim: str | None, **kwargs: Any) -> None:
    """`combine` returns what xarray returns, or raises what xarray raises."""
    by_coords = concat_dim is None
    try:
        if by_coords:
            expected = xr.combine_by_coords(datasets, **kwargs)
        else:
            expected = xr.combine_nested(datasets, concat_dim=concat_dim, **kwargs)
    except (ValueError, TypeError) as err:  # VirtualDataError is a TypeError
        with pytest.raises(type(err), match=re.escape(str(err))):
            combine(datasets, concat_dim=concat_dim, by_coords=by_coords, **kwargs)
        return
    assert isinstance(expected, xr.Dataset)
    assert_same(combine(datasets, concat_dim=concat_dim, by_coords=by_coords, **kwargs), expected)


@pytest.mark.parametrize("join", ["exact", "outer"])
def test_a_file_with_other_variables_goes_to_xarray(datasets: list[xr.Dataset], join: str) -> None:
    odd = [*datasets[:2], datasets[2].drop_vars("rhum")]
    same_outcome(odd, concat_dim="time", **{**KWARGS, "join": join})
    same_outcome(odd, concat_dim=None, **{**KWARGS, "join": join})


def test_a_new_dimension_goes_to_xarray(datasets: list[xr.Dataset]) -> None:
    same_outcome([datasets[0], datasets[0].copy()], concat_dim="member", **KWARGS)


def test_overlapping_files_go_to_xarray(datasets: list[xr.Dataset]) -> None:
    same_outcome([datasets[0], datasets[0]], concat_dim=None, **KWARGS)
    same_outcome([datasets[1], datasets[0], datasets[1]], concat_dim=None, **KWARGS)


def test_other_keywords_go_to_xarray(datasets: list[xr.Dataset]) -> None:
    same_outcome(datasets[:3], concat_dim="time", **{**KWARGS, "combine_attrs": "drop"})


def test_other_grids_are_refused_as_xarray_refuses(datasets: list[xr.Dataset]) -> None:
    shifted = datasets[1].assign_coords(lat=datasets[1].lat + 1)
    with pytest.raises(ValueError, match="lat"):
        combine([datasets[0], shifted], concat_dim="time", by_coords=False, **KWARGS)


def test_incompatible_arrays_name_the_variable_and_files(tmp_path: Path) -> None:
    import netCDF4

    paths = write_sample_archive(tmp_path, 2)
    with netCDF4.Dataset(paths[1], "a") as nc:  # same shape, other chunks
        nc.renameVariable("air", "old")
        var = nc.createVariable("air", "f4", ("time", "lat", "lon"), chunksizes=(1, 73, 144))
        var[:] = nc["old"][:]
    with netCDF4.Dataset(paths[1], "a") as nc:
        nc.renameVariable("old", "older")
    ds = [vcube.open_virtual_dataset(p, drop_variables=["older"]) for p in paths]
    with pytest.raises(IncompatibleArraysError, match=r"'air'.*chunk shape"):
        combine(ds, concat_dim="time", by_coords=False, **KWARGS)
