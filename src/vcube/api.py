"""The public entry points: `open_virtual_dataset` (one file) and `open_virtual_mfdataset` (many)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import xarray as xr
import zarr.api.asynchronous
from xarray.conventions import decode_cf_variable
from xarray.indexes import PandasIndex
from zarr.core.sync import sync

from vcube.combine import combine as combine_datasets
from vcube.errors import NothingVirtualizedError, UnsupportedFeatureError, VcubeError
from vcube.manifests.attrs import decode_attributes
from vcube.mapreduce import READ_STATS_KEY, OnError, Task, run_tasks
from vcube.parallel import Parallel, RetryPolicy, get_executor
from vcube.parsers import detect_parser
from vcube.progress import Callback, make_callback
from vcube.registry import ObjectStoreRegistry, expand_glob, normalize_url
from vcube.times import decode_combined, decode_for_combine, is_time_encoded

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence

    from xarray.core.types import CombineAttrsOptions, CompatOptions, JoinOptions

    from vcube.manifests import ManifestArray, ManifestStore
    from vcube.parsers import Parser

__all__ = ["open_virtual_dataset", "open_virtual_mfdataset", "virtual_dataset"]

REPORT_KEY = "vcube_report"
# Coordinates up to this many values share their index between files (`_default_index`).
SHARED_INDEX_SIZE = 4096
# What xarray's CF coders act on besides time units (see `_cf_encoded`).
CF_CODING_ATTRS = frozenset(
    {"_FillValue", "missing_value", "scale_factor", "add_offset", "_Unsigned", "dtype", "_Encoding"}
)


def open_virtual_dataset(
    url: str | Path,
    registry: ObjectStoreRegistry | None = None,
    parser: Parser | None = None,
    *,
    loadable_variables: Iterable[str] | None = None,
    decode_times: bool | None = None,
    drop_variables: Iterable[str] | None = None,
    group: str | None = None,
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
    group
        Open this group of the file (NetCDF4/HDF5, Zarr) instead of the root.

    Returns
    -------
    xarray.Dataset
        Virtual variables hold `ManifestArray`s; loaded ones hold what netCDF4 reads.
    """
    return _open(
        url,
        registry,
        parser,
        loadable_variables=loadable_variables,
        decode_times=decode_times,
        drop_variables=drop_variables,
        group=group,
    )


def _open(
    url: str | Path,
    registry: ObjectStoreRegistry | None = None,
    parser: Parser | None = None,
    *,
    loadable_variables: Iterable[str] | None = None,
    decode_times: bool | None = None,
    drop_variables: Iterable[str] | None = None,
    group: str | None = None,
    raw_times: bool = False,
) -> xr.Dataset:
    url = normalize_url(url)
    registry = registry or ObjectStoreRegistry()
    loadable = None if loadable_variables is None else list(loadable_variables)
    drop = list(drop_variables or ())
    if parser is None:
        parser = detect_parser(url, registry)
    store = _configured(parser, drop=drop, load=loadable or [], group=group)(url, registry)
    ds = virtual_dataset(
        store,
        loadable_variables=loadable,
        decode_times=decode_times,
        drop_variables=drop_variables,
        raw_times=raw_times,
    )
    if store.read_stats is not None:
        ds.encoding[READ_STATS_KEY] = store.read_stats
    return ds


def _open_with_raw_times(url: str, **kwargs: Any) -> xr.Dataset:
    """`open_virtual_dataset` leaving loaded time variables encoded (`vcube.times`)."""
    return _open(url, raw_times=True, **kwargs)


def open_virtual_mfdataset(
    paths: str | Path | Sequence[Any],
    registry: ObjectStoreRegistry | None = None,
    parser: Parser | None = None,
    *,
    concat_dim: str | Sequence[str | None] | None = None,
    compat: CompatOptions = "override",
    preprocess: Callable[[xr.Dataset], xr.Dataset] | None = None,
    data_vars: Literal["all", "minimal", "different"] | None = None,
    coords: Any = "minimal",
    combine: Literal["by_coords", "nested"] = "by_coords",
    parallel: Parallel = False,
    join: JoinOptions = "exact",
    combine_attrs: CombineAttrsOptions = "override",
    retries: int | RetryPolicy = 3,
    on_error: OnError = "raise",
    progress: bool | Callback = False,
    max_workers: int | None = None,
    **open_kwargs: Any,
) -> xr.Dataset:
    """Virtualize many files in parallel and combine them into one virtual datacube.

    The combine keywords are `xarray.open_mfdataset`'s, with defaults that never compare or
    load the values of virtual variables (`data_vars=None` joins only the variables that have
    the join dimension, or all of them along a new dimension).

    Parameters
    ----------
    paths
        A glob (local or in object storage), or a list of paths / URLs (nested lists for
        `combine="nested"` over several dimensions).
    registry, parser
        As for `open_virtual_dataset`; `parser` is detected per file when None.
    parallel
        False (serial), "threads", "processes", "dask", "lithops", an `Executor` class, or a
        configured `Executor` instance.
    retries
        Attempts beyond the first for a file whose failure is transient (timeouts, dropped
        connections, throttling, HTTP 5xx), with exponential backoff and jitter; a
        `vcube.parallel.RetryPolicy` also sets the backoff.
    on_error
        "raise" the first failure, or leave failed files out and "warn" or "skip" silently;
        `ds.vcube.report` lists the failures either way.
    progress
        True for a progress bar, or a `vcube.progress.Callback`.
    max_workers
        Workers of the thread or process pool vcube creates.
    **open_kwargs
        Passed to `open_virtual_dataset` (`loadable_variables`, `decode_times`, ...).

    Returns
    -------
    xarray.Dataset
        The combined virtual dataset; `ds.vcube.report` tells what was virtualized.
    """
    registry = registry or ObjectStoreRegistry()
    nested = _expand(paths, registry)
    urls = list(_flatten(nested))
    if not urls:
        raise VcubeError(f"no files match {paths!r}")
    policy = RetryPolicy(retries=retries) if isinstance(retries, int) else retries
    # Time coordinates are decoded once after the combine, unless preprocess wants them decoded.
    defer = preprocess is None and open_kwargs.get("decode_times") is not False
    opener = _open_with_raw_times if defer else open_virtual_dataset
    tasks = [
        Task(i, url, opener, registry, parser, open_kwargs, preprocess, policy)
        for i, url in enumerate(urls)
    ]
    executor, owned = get_executor(parallel, max_workers=max_workers)
    try:
        datasets, report = run_tasks(
            tasks, executor, on_error=on_error, progress=make_callback(progress)
        )
    except BaseException:
        if owned:  # interrupted or failed: do not wait for the files still queued
            executor.shutdown(wait=False, cancel_futures=True)
        raise
    if owned:
        executor.shutdown()
    if not datasets:
        first = report.failures[0]
        raise NothingVirtualizedError(
            f"none of the {len(urls)} files could be virtualized (first: {first.url}: "
            f"{first.error_type}: {first.message})",
            report.failures,
        )
    deferred: list[Hashable] = []
    if defer:
        datasets, deferred = decode_for_combine(datasets, open_kwargs.get("decode_times"))
    kwargs: dict[str, Any] = {
        "compat": compat,
        "data_vars": data_vars,
        "coords": coords,
        "join": join,
        "combine_attrs": combine_attrs,
    }
    if combine == "nested":
        grid = _regrid(nested, datasets, report.failures)
        dims = [concat_dim] if isinstance(concat_dim, str) or concat_dim is None else concat_dim
        if len(dims) == 1 and all(isinstance(ds, xr.Dataset) for ds in grid):
            combined = combine_datasets(grid, concat_dim=dims[0], by_coords=False, **kwargs)
        else:
            combined = xr.combine_nested(grid, concat_dim=concat_dim, **kwargs)
    else:
        combined = combine_datasets(datasets, concat_dim=None, by_coords=True, **kwargs)
    if not isinstance(combined, xr.Dataset):
        raise VcubeError("the files combined into a DataArray, not a Dataset")
    combined = decode_combined(combined, deferred, open_kwargs.get("decode_times"))
    combined.encoding[REPORT_KEY] = report
    return combined


def _expand(paths: str | Path | Sequence[Any], registry: ObjectStoreRegistry) -> Any:
    if isinstance(paths, str | Path):
        return expand_glob(str(paths), registry)
    return [
        _expand(p, registry) if isinstance(p, list | tuple) else normalize_url(p) for p in paths
    ]


def _flatten(nested: Any) -> Iterator[str]:
    for item in nested:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item


def _regrid(nested: Any, datasets: list[xr.Dataset], failures: Sequence[Any]) -> Any:
    """The datasets in the nesting of the input; a failed file can only be left out of a
    one-dimensional list."""
    if failures and any(isinstance(item, list) for item in nested):
        raise VcubeError(
            f"{len(failures)} files failed (first: {failures[0].url}); a multi-dimensional "
            f"nested combine cannot leave them out. Fix them or use on_error='raise'."
        )
    remaining = iter(datasets)

    def rebuild(level: Any) -> Any:
        return [rebuild(x) if isinstance(x, list) else next(remaining) for x in level]

    return rebuild(nested) if not failures else datasets


def _configured(
    parser: Parser, *, drop: list[str], load: list[str], group: str | None = None
) -> Parser:
    """`parser` also told which variables to drop and which to load, when it takes those options
    (dropping in the parser skips variables it could not even read), and which group to open."""
    candidate: object = parser  # a Parser protocol says nothing of dataclasses
    if not dataclasses.is_dataclass(candidate) or isinstance(candidate, type):
        if group is not None:
            raise _no_groups(parser, group)
        return parser
    names = {f.name for f in dataclasses.fields(candidate)}
    if group is not None and "group" not in names:
        raise _no_groups(parser, group)
    changes: dict[str, Any] = {}
    if group is not None:
        changes["group"] = group
    if drop and "drop_variables" in names:
        changes["drop_variables"] = (*getattr(parser, "drop_variables", ()), *drop)
    current = getattr(parser, "load_unsupported", None)
    if load and "load_unsupported" in names and current is not True:
        changes["load_unsupported"] = (*(current or ()), *load)
    return dataclasses.replace(candidate, **changes) if changes else parser  # type: ignore[return-value]


def _no_groups(parser: Parser, group: str) -> UnsupportedFeatureError:
    return UnsupportedFeatureError(
        f"{type(parser).__name__} files have no groups: open them without group={group!r}"
    )


def virtual_dataset(
    store: ManifestStore,
    *,
    loadable_variables: Iterable[str] | None = None,
    decode_times: bool | None = None,
    drop_variables: Iterable[str] | None = None,
    raw_times: bool = False,
) -> xr.Dataset:
    """The root group of a `ManifestStore` as a virtual dataset (see `open_virtual_dataset`);
    `raw_times` leaves loaded time variables encoded, for `vcube.times` to decode later."""
    group = store.group
    drop = set(drop_variables or ())
    arrays = {k: a for k, a in group.arrays.items() if k not in drop}
    load = _variables_to_load(arrays, loadable_variables)
    variables: dict[str, xr.Variable] = {
        name: _virtual_variable(array) for name, array in arrays.items() if name not in load
    }
    coord_names = _coordinate_names(arrays)
    loaded = _load(store, arrays, load, decode_times, raw_times)
    # Virtual coordinates get no index: an index would need their values.
    virtual_coords = {k: v for k, v in variables.items() if k in coord_names or v.dims == (k,)}
    loaded_coords = {k: v for k, v in loaded.items() if k in coord_names or v.dims == (k,)}
    data_vars = {
        k: v
        for k, v in (variables | loaded).items()
        if k not in virtual_coords and k not in loaded_coords
    }
    # Loaded dimension coordinates get xarray's default index; virtual ones none.
    indexes = {k: _default_index(k, v) for k, v in loaded_coords.items() if v.dims == (k,)}
    coords = xr.Coordinates(virtual_coords | loaded_coords, indexes=indexes)
    return xr.Dataset(data_vars, coords=coords, attrs=dict(group.attributes))


def _default_index(name: str, variable: xr.Variable) -> PandasIndex:
    """xarray's default index of a dimension coordinate; the files of an archive mostly share
    their coordinates (latitudes, longitudes, levels), so a small one's index is built once and
    shared (xarray never changes an index in place)."""
    values = variable.values
    if values.size > SHARED_INDEX_SIZE or values.dtype.kind not in "iufcmM":
        return PandasIndex.from_variables({name: variable}, options={})
    return _shared_index(name, values.dtype.str, values.shape, values.tobytes())


@functools.lru_cache(maxsize=64)
def _shared_index(name: str, dtype: str, shape: tuple[int, ...], data: bytes) -> PandasIndex:
    values = np.frombuffer(data, dtype=dtype).reshape(shape)
    return PandasIndex.from_variables({name: xr.Variable((name,), values)}, options={})


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
    raw_times: bool = False,
) -> dict[str, xr.Variable]:
    """Read the raw values of `load` through the store and decode each with xarray's CF
    decoding, as `xr.open_dataset` would."""
    if not load:
        return {}
    values = {name: store.read_plain_now(name) for name in sorted(load)}
    pending = [name for name, value in values.items() if value is None]
    if pending:  # one batch of concurrent reads for what needs requests or codecs
        values.update(zip(pending, sync(_read_arrays(store, pending)), strict=True))
    kwargs: dict[str, Any] = {} if decode_times is None else {"decode_times": decode_times}
    decoded = {}
    for name, value in values.items():
        array = arrays[name]
        attrs = decode_attributes(array.info.attributes, array.dtype)
        raw = xr.Variable(_dims(array), value, attrs=attrs)
        # Loaded once: xarray's decoding is lazy, and the index and the variable would each
        # decode the values again.
        if _cf_encoded(raw) and not (raw_times and is_time_encoded(raw)):
            raw = decode_cf_variable(name, raw, **kwargs).load()
        decoded[name] = raw
    return decoded


def _cf_encoded(variable: xr.Variable) -> bool:
    """Whether xarray's CF decoding could change `variable`: a plain numeric variable without
    any attribute its coders act on comes out unchanged, so decoding it is skipped (it costs
    more than reading a small coordinate)."""
    if variable.dtype.kind not in "iuf" or not variable.dtype.isnative:
        return True
    return is_time_encoded(variable) or any(key in variable.attrs for key in CF_CODING_ATTRS)


async def _read_arrays(store: ManifestStore, names: list[str]) -> list[Any]:
    async def read(name: str) -> Any:
        values = await store.read_plain(name)
        if values is not None:
            return values
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
