"""`open_virtual_dataset`: one file's metadata as an xarray Dataset of virtual variables."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import xarray as xr
import zarr.api.asynchronous
from zarr.core.sync import sync

from vcube.manifests.attrs import decode_attributes
from vcube.parsers import detect_parser
from vcube.registry import ObjectStoreRegistry, normalize_url

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from vcube.manifests import ManifestArray, ManifestStore
    from vcube.parsers import Parser

__all__ = ["open_virtual_dataset", "virtual_dataset"]


def open_virtual_dataset(
    url: str | Path,
    registry: ObjectStoreRegistry | None = None,
    parser: Parser | None = None,
    *,
    loadable_variables: Iterable[str] | None = None,
    decode_times: bool | None = None,
    drop_variables: Iterable[str] | None = None,
) -> xr.Dataset:
    """Open one file as a virtual dataset: chunk references, plus loaded coordinates.

    Parameters
    ----------
    url
        Local path or URL (`file://`, `s3://`, `gs://`, `az://`, `https://`).
    registry
        Object stores by URL prefix; local files need none.
    parser
        Parser for the format; detected from the file's magic bytes when None.
    loadable_variables
        Variables to load as values. None loads the dimension coordinates; `[]` loads nothing.
    decode_times
        Decode CF times of loaded variables (xarray's default when None).
    drop_variables
        Variables to leave out.

    Returns
    -------
    xarray.Dataset
        Virtual variables hold `ManifestArray`s; loaded ones hold what netCDF4 reads.
    """
    url = normalize_url(url)
    registry = registry or ObjectStoreRegistry()
    loadable = None if loadable_variables is None else list(loadable_variables)
    if parser is None:
        parser = detect_parser(url, registry, load_unsupported=loadable or ())
    store = parser(url, registry)
    return virtual_dataset(
        store,
        loadable_variables=loadable,
        decode_times=decode_times,
        drop_variables=drop_variables,
    )


def virtual_dataset(
    store: ManifestStore,
    *,
    loadable_variables: Iterable[str] | None = None,
    decode_times: bool | None = None,
    drop_variables: Iterable[str] | None = None,
) -> xr.Dataset:
    """The root group of a `ManifestStore` as a virtual dataset (see `open_virtual_dataset`)."""
    group = store.group
    drop = set(drop_variables or ())
    arrays = {k: a for k, a in group.arrays.items() if k not in drop}
    load = _variables_to_load(arrays, loadable_variables)
    variables: dict[str, xr.Variable] = {
        name: _virtual_variable(array) for name, array in arrays.items() if name not in load
    }
    loaded = _load(store, arrays, load, decode_times)
    coord_names = _coordinate_names(arrays)
    # Virtual coordinates get no index: an index would need their values.
    virtual_coords = {k: v for k, v in variables.items() if k in coord_names or v.dims == (k,)}
    ds = xr.Dataset(
        {k: v for k, v in variables.items() if k not in virtual_coords},
        coords=xr.Coordinates(virtual_coords, indexes={}),
        attrs=dict(group.attributes),
    )
    if loaded.variables:
        ds = xr.merge([ds, loaded], compat="override", join="exact", combine_attrs="override")
    return ds.set_coords([c for c in coord_names if c in ds.variables])


def _variables_to_load(
    arrays: dict[str, ManifestArray], loadable: Iterable[str] | None
) -> set[str]:
    strings = {k for k, a in arrays.items() if a.dtype.kind in "OT"}
    if loadable is not None:
        return set(loadable) & set(arrays) | strings
    dims = {k for k, a in arrays.items() if a.ndim == 1 and _dims(a) == (k,)}
    return dims | strings


def _load(
    store: ManifestStore,
    arrays: dict[str, ManifestArray],
    load: set[str],
    decode_times: bool | None,
) -> xr.Dataset:
    """Read the raw values of `load` through the store (one batch of concurrent reads) and decode
    them with xarray's CF decoding, as `xr.open_dataset` would."""
    if not load:
        return xr.Dataset()
    names = sorted(load)
    values = sync(_read_arrays(store, names))
    raw = xr.Dataset(
        {
            name: xr.Variable(
                _dims(arrays[name]),
                value,
                attrs=decode_attributes(arrays[name].info.attributes, arrays[name].dtype),
            )
            for name, value in zip(names, values, strict=True)
        }
    )
    kwargs: dict[str, Any] = {} if decode_times is None else {"decode_times": decode_times}
    return xr.decode_cf(raw, **kwargs)


async def _read_arrays(store: ManifestStore, names: list[str]) -> list[Any]:
    async def read(name: str) -> Any:
        array = await zarr.api.asynchronous.open_array(store=store, path=name, zarr_format=3)
        return await array.getitem(...)

    return list(await asyncio.gather(*(read(n) for n in names)))


def _virtual_variable(array: ManifestArray) -> xr.Variable:
    attrs = decode_attributes(array.info.attributes, array.dtype)
    return xr.Variable(_dims(array), array, attrs=attrs)


def _dims(array: ManifestArray) -> tuple[str, ...]:
    names = array.info.dimension_names
    if names is None:
        return tuple(f"dim_{i}" for i in range(array.ndim))
    return tuple(str(n) for n in names)


def _coordinate_names(arrays: dict[str, ManifestArray]) -> set[str]:
    names: set[str] = set()
    for array in arrays.values():
        text = array.info.attributes.get("coordinates")
        if isinstance(text, str):
            names.update(text.split())
    return names
