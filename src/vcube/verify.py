"""`verify`: read sampled chunks of persisted references and of the original files, and compare.

A *target* is what `to_kerchunk` / `to_icechunk` wrote: a Kerchunk JSON file, a Kerchunk Parquet
directory or an Icechunk repository (detected from what is at the URL). Its chunks are read with
the real clients, raw (no CF decoding): fsspec's `ReferenceFileSystem` under zarr (Zarr v2) for
Kerchunk, an Icechunk read-only session under zarr for Icechunk.

The *sources* are the original files: `against` (URLs or globs), else the files the target
references (Kerchunk: the URLs in the references; Icechunk: the `vcube_sources` list in the commit
metadata of the branch's history, else every virtual chunk location). Each source is opened with
the library that owns its format and read raw, and its block is placed in the target by matching
coordinate values: along an axis where the file is shorter than the target, the file's (CF-decoded)
values of that dimension's coordinate are looked up in the target's; an axis of the same length
starts at 0. The references are not used to place a file, so a reference to the wrong file or
offset shows up as different values. Where there is no coordinate, files follow each other along
the axis in the order given.

For each variable, `samples` chunks covered by the sources are read both ways (the first and last
always among them) and compared element by element, NaN equal to NaN. Values are compared raw with
equal dtypes (byte order aside), unless a file's CF encoding (`units`, `calendar`, `scale_factor`,
`add_offset`) differs from the target's (a time coordinate re-encoded with the first file's units):
then both sides are CF-decoded and the decoded values are compared. A chunk that cannot be read on
either side is a difference that carries the error.
"""

from __future__ import annotations

import contextlib
import functools
import json
import posixpath
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast
from urllib.parse import urlsplit

import h5py
import hdf5plugin  # noqa: F401  (registers the blosc, zstd, lz4, bzip2 filters with HDF5)
import numpy as np
import obstore
import xarray as xr
import zarr
import zarr.storage

from vcube.errors import (
    SourceNotFoundError,
    StoreNotFoundError,
    UnsupportedFeatureError,
    UnsupportedFormatError,
    VcubeError,
)
from vcube.ingest import committed_sources
from vcube.manifests.array_api import grid_shape
from vcube.parsers.detect import directory_format, file_format, read_head
from vcube.readers import ObjectReader, translate_io_error
from vcube.registry import ObjectStoreRegistry, expand_urls, local_path, normalize_url
from vcube.stores import ObjectStoreOptions, open_repository, registry_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from numpy.typing import NDArray

__all__ = [
    "DEFAULT_SAMPLES",
    "Mismatch",
    "TargetKind",
    "VariableCheck",
    "VerifyReport",
    "verify",
]

DEFAULT_SAMPLES: Final = 10
CF_KEYS: Final = ("units", "calendar", "scale_factor", "add_offset")

TargetKind = Literal["Kerchunk JSON", "Kerchunk Parquet", "Icechunk"]
Index = tuple[int, ...]
Region = tuple[slice, ...]


# -- the report ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A chunk whose values through the references differ from the source files', or that could
    not be read. `index` is the first differing element in the variable's coordinates, where
    `expected` (the source's value) and `actual` (the references') differ."""

    chunk: Index
    sources: tuple[str, ...]
    index: Index | None = None
    expected: object = None
    actual: object = None
    error: str | None = None

    def __str__(self) -> str:
        where = f"chunk {_index_text(self.chunk)} ({', '.join(self.sources)})"
        if self.error is not None:
            return f"{where}: {self.error}"
        return (
            f"{where}: first difference at {_index_text(self.index or ())}: "
            f"source {self.expected!r}, references {self.actual!r}"
        )


@dataclass(frozen=True, slots=True)
class VariableCheck:
    """What was checked of one variable: the chunks compared and those that differ; `note` says
    why nothing was checked."""

    name: str
    chunks: tuple[Index, ...] = ()
    different: tuple[Mismatch, ...] = ()
    note: str | None = None

    @property
    def checked(self) -> int:
        return len(self.chunks)

    @property
    def equal(self) -> int:
        return self.checked - len(self.different)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of `verify`: one `VariableCheck` per array of the target, and `problems` with
    source files that could not be opened or placed in the target."""

    target: str
    kind: TargetKind
    sources: tuple[str, ...]
    variables: tuple[VariableCheck, ...]
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when something was checked, everything checked is equal and every source file
        could be opened and placed."""
        checked = any(v.checked for v in self.variables)
        return checked and not self.problems and not any(v.different for v in self.variables)

    def format(self) -> str:
        """A readable table, then every difference and problem, then the verdict."""
        width = max([len("variable"), *(len(v.name) for v in self.variables)])
        lines = [
            f"{self.kind} {self.target}: {len(self.sources)} source file(s)",
            f"{'variable':<{width}}  {'checked':>7}  {'equal':>7}  {'different':>9}",
        ]
        for v in self.variables:
            note = f"  ({v.note})" if v.note else ""
            row = f"{v.checked:>7}  {v.equal:>7}  {len(v.different):>9}"
            lines.append(f"{v.name:<{width}}  {row}{note}")
        lines += [f"DIFFERENT {v.name}: {m}" for v in self.variables for m in v.different]
        lines += [f"PROBLEM {p}" for p in self.problems]
        lines.append("OK: every chunk checked is equal" if self.ok else "FAILED")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _index_text(index: Index) -> str:
    return "[" + ", ".join(map(str, index)) + "]"


# -- verify -------------------------------------------------------------------------------------


def verify(
    target: str | Path,
    *,
    against: Sequence[str] | str | None = None,
    samples: int | None = DEFAULT_SAMPLES,
    registry: ObjectStoreRegistry | None = None,
    options: ObjectStoreOptions | None = None,
    seed: int = 0,
    branch: str = "main",
) -> VerifyReport:
    """Compare chunks read through persisted references with the original files.

    Parameters
    ----------
    target
        A Kerchunk JSON file, a Kerchunk Parquet directory or an Icechunk repository (a local
        path or a URL).
    against
        Source files (URLs or globs) to compare with; None takes the files the target names.
    samples
        Chunks checked per variable (the first and last always among them); None checks all.
    registry
        Object stores for remote targets and sources; local paths need none.
    options
        How to reach object storage (endpoint, region, anonymous) for buckets `registry` does
        not serve and for an Icechunk repository; credentials come from the environment.
    seed
        Seed of the random choice of chunks.
    branch
        Icechunk branch to read.

    Returns
    -------
    VerifyReport
        Per variable: chunks checked, equal, and the differences.

    Raises
    ------
    SourceNotFoundError
        Nothing at `target`, or a glob of `against` matches no file.
    UnsupportedFormatError
        `target` is not a Kerchunk or Icechunk target, or a source file's format is unknown.
    UnsupportedFeatureError
        A source file's format is one verify cannot read yet.
    """
    if samples is not None and samples < 1:
        raise UnsupportedFormatError(f"samples must be a positive integer or None, not {samples}")
    options = options or ObjectStoreOptions()
    url = normalize_url(target).rstrip("/")
    patterns = [against] if isinstance(against, str) else list(against or ())
    # A copy: stores are added for the buckets of the sources, known once the target is read.
    given = registry or ObjectStoreRegistry()
    registry = ObjectStoreRegistry({p: given.resolve(p)[0] for p in given.prefixes})
    _add_stores(registry, [url, *patterns], options)
    opened = _open_target(url, registry, options, branch)
    urls = expand_urls(patterns, registry) if against is not None else opened.sources
    _add_stores(registry, urls, options)
    members = opened.group.members(max_depth=None)
    targets = {p: _TargetArray.of(p, a) for p, a in members if isinstance(a, zarr.Array)}
    coordinates = {d for t in targets.values() for d in t.dims}
    coordinates &= {name for name, t in targets.items() if len(t.info.shape) == 1}
    coords = {
        c: _decoded(c, targets[c].read((slice(None),)), targets[c].info.cf) for c in coordinates
    }

    failed: dict[str, str] = {}  # source URL -> why it is not compared
    sources: list[_Source] = []
    for source_url in urls:
        try:
            sources.append(_survey(source_url, registry, coordinates))
        except (UnsupportedFormatError, UnsupportedFeatureError):
            raise
        except Exception as err:  # noqa: BLE001  (a file that cannot be read is a finding)
            failed[source_url] = _message(err)
    rng = np.random.default_rng(seed)
    checks: list[VariableCheck] = []
    placed: set[str] = set()
    with contextlib.closing(_Readers(registry)) as readers:
        for name in sorted(targets):
            blocks, unplaced, note = _place(name, targets[name], sources, coords)
            for source_url, why in unplaced.items():
                failed.setdefault(source_url, why)
            placed |= {b.source.url for b in blocks}
            check = _check_variable(name, targets[name], blocks, samples, rng, readers)
            if blocks and not check.chunks:
                note = "no chunk lies entirely in the files given"
            checks.append(replace(check, note=note) if note else check)
    for source in sources:
        if source.url not in placed:
            failed.setdefault(source.url, "none of its arrays is in the target")
    problems = [f"{u}: {why}" for u, why in failed.items()]
    if not urls:
        problems.append("no source files: pass against=[...] to name them")
    return VerifyReport(url, opened.kind, tuple(urls), tuple(checks), tuple(problems))


def _add_stores(
    registry: ObjectStoreRegistry, urls: Iterable[str], options: ObjectStoreOptions
) -> None:
    """Register a store made from `options` for each bucket of `urls` that `registry` does not
    serve yet."""
    missing = []
    for url in urls:
        try:
            registry.resolve(url)
        except StoreNotFoundError:
            missing.append(url)
    extra = registry_for(missing, options)
    for prefix in extra.prefixes:
        registry.register(prefix, extra.resolve(prefix)[0])


def _message(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


# -- targets ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    kind: TargetKind
    group: zarr.Group
    sources: list[str]


def _open_target(
    url: str, registry: ObjectStoreRegistry, options: ObjectStoreOptions, branch: str
) -> _Target:
    kind = _target_kind(url, registry)
    if kind == "Icechunk":
        return _open_icechunk(url, options, branch)
    if kind == "Kerchunk JSON":
        refs = json.loads(_get(url, registry))
        sources = _kerchunk_urls(refs)
        fo: object = refs
    else:
        path = local_path(url)
        if path is None:
            raise UnsupportedFeatureError(
                f"{url}: verify reads Kerchunk Parquet references from a local directory only; "
                "copy the directory to local disk"
            )
        sources = _parquet_urls(Path(path))
        fo = path
    from fsspec.implementations.reference import ReferenceFileSystem  # the `kerchunk` extra

    filesystems = _source_filesystems(sources, registry)
    references = ReferenceFileSystem(fo=fo, fs=filesystems, asynchronous=True)
    store = zarr.storage.FsspecStore(references, read_only=True, path="")
    return _Target(kind, zarr.open_group(store, mode="r", zarr_format=2), sources)


def _target_kind(url: str, registry: ObjectStoreRegistry) -> TargetKind:
    store, path = registry.resolve(url)
    what = (
        "give a Kerchunk JSON file, a Kerchunk Parquet directory or an Icechunk repository "
        "(what to_kerchunk / to_icechunk wrote)"
    )
    try:
        head = read_head(store, path)
    except FileNotFoundError:
        pass  # a directory, or nothing
    except Exception as err:
        raise translate_io_error(err, url) from err
    else:
        if head.lstrip().startswith(b"{"):
            return "Kerchunk JSON"
        raise UnsupportedFormatError(
            f"{url}: not a verify target (first bytes {head[:8]!r}): {what}"
        )
    try:
        listing = obstore.list_with_delimiter(store, prefix=path.rstrip("/") or None)
    except Exception as err:
        raise translate_io_error(err, url) from err
    names = {o["path"].rsplit("/", 1)[-1] for o in listing["objects"]}
    folders = {p.rstrip("/").rsplit("/", 1)[-1] for p in listing["common_prefixes"]}
    if not names and not folders:
        raise SourceNotFoundError(f"{url}: no such file or directory: {what}")
    # Icechunk 2 keeps a `repo` object at the top, Icechunk 1 `config.yaml` and `refs/`.
    if "snapshots" in folders and ("repo" in names or "refs" in folders):
        return "Icechunk"
    if directory_format(store, path, url) == "Kerchunk Parquet":
        return "Kerchunk Parquet"
    raise UnsupportedFormatError(f"{url}: not a verify target: {what}")


def _get(url: str, registry: ObjectStoreRegistry) -> bytes:
    store, path = registry.resolve(url)
    try:
        return bytes(obstore.get(store, path).bytes())
    except Exception as err:
        raise translate_io_error(err, url) from err


def _unique(urls: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(normalize_url(u) for u in urls))


def _kerchunk_urls(refs: Mapping[str, Any]) -> list[str]:
    """The file URLs of Kerchunk references, in order of first use, `{{name}}` templates
    filled in."""
    templates: Mapping[str, str] = refs.get("templates") or {}
    chunks = refs.get("refs", refs).values()
    urls = dict.fromkeys(str(v[0]) for v in chunks if isinstance(v, list) and v)

    def filled(url: str) -> str:
        for name, value in templates.items():
            url = url.replace("{{" + name + "}}", value)
        return url

    return _unique(filled(u) for u in urls)


def _parquet_urls(root: Path) -> list[str]:
    import pyarrow.parquet as pq  # the `kerchunk` extra

    def order(file: Path) -> tuple[str, int]:
        return str(file.parent), int(file.name.split(".")[1])

    urls: list[str] = []
    for file in sorted(root.glob("**/refs.*.parq"), key=order):
        urls += pq.read_table(file, columns=["path"]).column("path").drop_null().to_pylist()
    return _unique(urls)


def _source_filesystems(
    urls: Sequence[str], registry: ObjectStoreRegistry
) -> dict[str | None, Any]:
    """fsspec file systems for the protocols of the source URLs: fsspec's own for local files,
    for every other protocol one that reads through the registry (obstore). s3fs, gcsfs and
    adlfs are not dependencies, and the registry holds the stores the user configured."""
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
    from fsspec.implementations.local import LocalFileSystem

    local = AsyncFileSystemWrapper(LocalFileSystem(), asynchronous=True)
    filesystems: dict[str | None, Any] = {None: local, "file": local}
    for scheme in {urlsplit(u).scheme for u in urls} - {"file", ""}:
        filesystems[scheme] = _RegistryFiles(registry)
    return filesystems


class _RegistryFiles:
    """The one call fsspec's `ReferenceFileSystem` makes on a source file system when zarr reads
    a chunk (`_cat_file`), served by the registry's obstore store."""

    async_impl = True
    asynchronous = True

    def __init__(self, registry: ObjectStoreRegistry) -> None:
        self._registry = registry

    async def _cat_file(self, url: str, start: int | None = None, end: int | None = None) -> bytes:
        store, path = self._registry.resolve(url)
        try:
            if start is not None and end is not None:
                return bytes(await obstore.get_range_async(store, path, start=start, end=end))
            whole = await obstore.get_async(store, path)
            return bytes(await whole.bytes_async())[start:end]
        except Exception as err:
            raise translate_io_error(err, url) from err


def _open_icechunk(url: str, options: ObjectStoreOptions, branch: str) -> _Target:
    # Opened as `vcube ingest` opens it: every virtual chunk container of the repository
    # authorized, with credentials from `options` and the environment.
    repo = open_repository(url, options)
    try:
        session = repo.readonly_session(branch=branch)
    except Exception as err:
        branches = ", ".join(sorted(repo.list_branches()))
        raise VcubeError(f"{url}: no branch {branch!r} (branches: {branches})") from err
    sources = _unique(committed_sources(repo, branch))
    sources = sources or _unique(sorted(session.all_virtual_chunk_locations()))
    return _Target("Icechunk", zarr.open_group(session.store, mode="r", zarr_format=3), sources)


# -- source files, read raw with the library that owns the format --------------------------------


@dataclass(frozen=True, slots=True)
class _Info:
    """An array's shape, dtype and CF encoding attributes (of the target or of a source)."""

    shape: Index
    dtype: np.dtype[Any]
    cf: dict[str, object]


def _info(shape: Iterable[int], dtype: Any, attrs: Mapping[str, Any]) -> _Info:
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
    return _Info(tuple(int(n) for n in shape), np.dtype(dtype), cf)


class _Reader(Protocol):
    """A source file opened with its format's library."""

    def arrays(self) -> dict[str, _Info]: ...

    def read(self, name: str, region: Region) -> NDArray[Any]:
        """The stored (raw) values of a region of array `name`."""
        ...

    def close(self) -> None: ...


class _HDF5Reader:
    """NetCDF4 / HDF5 with h5py, which applies no CF decoding: `dataset[region]` is raw."""

    def __init__(self, url: str, registry: ObjectStoreRegistry) -> None:
        path = local_path(url)
        self._file = h5py.File(path if path is not None else _object_reader(url, registry), "r")

    def arrays(self) -> dict[str, _Info]:
        found: dict[str, _Info] = {}

        def visit(name: str, node: object) -> None:
            if isinstance(node, h5py.Dataset):
                found[name] = _info(node.shape, node.dtype, node.attrs)

        self._file.visititems(visit)
        return found

    def read(self, name: str, region: Region) -> NDArray[Any]:
        return np.asarray(self._file[name][region])

    def close(self) -> None:
        self._file.close()


class _ScipyReader:
    """NetCDF3 CDF-1 / CDF-2 with scipy (`maskandscale=False`); local files memory-mapped."""

    def __init__(self, url: str, registry: ObjectStoreRegistry) -> None:
        from scipy.io import netcdf_file  # optional: a reference library, not a dependency

        path = local_path(url)
        source = path if path is not None else _object_reader(url, registry)
        self._file = netcdf_file(source, "r", mmap=path is not None, maskandscale=False)

    def arrays(self) -> dict[str, _Info]:
        variables = self._file.variables.items()
        return {n: _info(v.shape, v.data.dtype, v._attributes) for n, v in variables}

    def read(self, name: str, region: Region) -> NDArray[Any]:
        # A copy: scipy cannot close a memory-mapped file while views of it exist.
        return np.array(self._file.variables[name].data[region])

    def close(self) -> None:
        self._file.close()


class _NetCDF4Reader:
    """NetCDF3 CDF-5 (which scipy does not read) with netCDF4-python, masking, scaling and char
    conversion off; a remote file is read whole (netCDF4 opens paths or bytes only)."""

    def __init__(self, url: str, registry: ObjectStoreRegistry) -> None:
        import netCDF4  # optional: a reference library, not a dependency

        path = local_path(url)
        if path is None:
            self._ds = netCDF4.Dataset("memory", memory=_get(url, registry))
        else:
            self._ds = netCDF4.Dataset(path)
        self._ds.set_auto_maskandscale(False)
        self._ds.set_auto_chartostring(False)

    def arrays(self) -> dict[str, _Info]:
        found = {}
        for name, v in self._ds.variables.items():
            found[name] = _info(v.shape, v.dtype, {k: v.getncattr(k) for k in v.ncattrs()})
        return found

    def read(self, name: str, region: Region) -> NDArray[Any]:
        return np.asarray(self._ds.variables[name][region or ...])

    def close(self) -> None:
        self._ds.close()


def _object_reader(url: str, registry: ObjectStoreRegistry) -> ObjectReader:
    store, path = registry.resolve(url)
    return ObjectReader(store, path, url=url)


def _open_hdf5(url: str, registry: ObjectStoreRegistry, head: bytes) -> _Reader:
    return _HDF5Reader(url, registry)


def _open_netcdf3(url: str, registry: ObjectStoreRegistry, head: bytes) -> _Reader:
    return _NetCDF4Reader(url, registry) if head[3:4] == b"\x05" else _ScipyReader(url, registry)


# Format (as vcube.parsers.detect names it) -> the reader of its owner library.
READERS: Final[dict[str, Callable[[str, ObjectStoreRegistry, bytes], _Reader]]] = {
    "HDF5/NetCDF4": _open_hdf5,
    "NetCDF3": _open_netcdf3,
}


def _open_source(url: str, registry: ObjectStoreRegistry) -> _Reader:
    store, path = registry.resolve(url)
    try:
        head = read_head(store, path)
    except FileNotFoundError as err:
        name = directory_format(store, path, url)
        if name is None:
            raise translate_io_error(err, url) from err
        head = b""
    except Exception as err:
        raise translate_io_error(err, url) from err
    else:
        name = file_format(head)
        if name is None:
            raise UnsupportedFormatError(
                f"{url}: unrecognized file format (first bytes {head[:8]!r}); verify reads "
                f"{', '.join(READERS)}"
            )
    opener = READERS.get(name)
    if opener is None:
        raise UnsupportedFeatureError(
            f"{url}: verify does not know how to read {name} yet (it reads {', '.join(READERS)})"
        )
    return opener(url, registry, head)


class _Readers:
    """Source files opened on demand; the `size` most recently used stay open."""

    def __init__(self, registry: ObjectStoreRegistry, size: int = 8) -> None:
        self._registry = registry
        self._size = size
        self._open: dict[str, _Reader] = {}

    def get(self, url: str) -> _Reader:
        reader = self._open.pop(url, None) or _open_source(url, self._registry)
        self._open[url] = reader  # most recent last
        if len(self._open) > self._size:
            self._open.pop(next(iter(self._open))).close()
        return reader

    def close(self) -> None:
        for reader in self._open.values():
            reader.close()
        self._open.clear()


@dataclass(frozen=True, slots=True)
class _Source:
    """A source file's arrays and the CF-decoded values of the target's coordinates it has."""

    url: str
    arrays: dict[str, _Info]
    coords: dict[str, NDArray[Any]]


def _survey(url: str, registry: ObjectStoreRegistry, coordinates: Iterable[str]) -> _Source:
    with contextlib.closing(_open_source(url, registry)) as reader:
        arrays = reader.arrays()
        coords = {
            c: _decoded(c, reader.read(c, (slice(None),)), arrays[c].cf)
            for c in coordinates
            if c in arrays and len(arrays[c].shape) == 1
        }
    return _Source(url, arrays, coords)


def _decoded(name: str, values: NDArray[Any], cf: Mapping[str, object]) -> NDArray[Any]:
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


# -- placing the sources in the target -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TargetArray:
    array: zarr.Array[Any]
    info: _Info
    dims: tuple[str, ...]  # paths of the dimensions' coordinates, in the array's group

    @classmethod
    def of(cls, name: str, array: zarr.Array[Any]) -> _TargetArray:
        stored = getattr(array.metadata, "dimension_names", None)
        stored = stored or array.attrs.get("_ARRAY_DIMENSIONS") or ()
        names = [*cast("Sequence[str | None]", stored), *[None] * array.ndim][: array.ndim]
        group = posixpath.dirname(name)
        dims = tuple(posixpath.join(group, str(n or f"dim_{k}")) for k, n in enumerate(names))
        return cls(array, _info(array.shape, array.dtype, array.attrs), dims)

    def read(self, region: Region) -> NDArray[Any]:
        return np.asarray(self.array[region])


@dataclass(frozen=True, slots=True)
class _Block:
    """Where a source file's array lies in the target array."""

    source: _Source
    origin: Index
    shape: Index


def _place(
    name: str, target: _TargetArray, sources: Sequence[_Source], coords: Mapping[str, NDArray[Any]]
) -> tuple[list[_Block], dict[str, str], str | None]:
    """The blocks of `sources` in the target array `name`, the sources that cannot be placed
    (with the reason) and, when there is no block, why. Identical blocks count once (a
    coordinate every file has)."""
    blocks: dict[tuple[Index, Index], _Block] = {}
    failed: dict[str, str] = {}
    running = [0] * len(target.info.shape)  # file order along axes without coordinates
    having = [s for s in sources if name in s.arrays]
    for source in having:
        shape = source.arrays[name].shape
        if len(shape) != len(target.info.shape):
            continue
        origin: list[int] = []
        for k, (n, total) in enumerate(zip(shape, target.info.shape, strict=True)):
            dim = target.dims[k]
            start: int | None = 0
            if n > total:
                start = None
            elif n < total and dim in coords and dim in source.coords:
                start = _locate(coords[dim], source.coords[dim])
            elif n < total:
                start, running[k] = running[k], running[k] + n
            if start is None:
                failed[source.url] = f"its {dim} values are not a run of the target's {dim}"
                break
            origin.append(start)
        else:
            blocks.setdefault((tuple(origin), shape), _Block(source, tuple(origin), shape))
    note = None
    if not having:
        note = "in no source file"
    elif not blocks and not failed:
        note = "the source files' array has other dimensions"
    elif not blocks:
        note = "no source file could be placed"
    return list(blocks.values()), failed, note


def _locate(values: NDArray[Any], part: NDArray[Any]) -> int | None:
    """Where `part` occurs as a run of `values`."""
    if part.size == 0:
        return 0
    for start in np.flatnonzero(_equal(values, part[:1])):
        run = values[start : start + part.size]
        if run.shape == part.shape and _equal(run, part).all():
            return int(start)
    return None


def _equal(a: NDArray[Any], b: NDArray[Any]) -> NDArray[np.bool_]:
    """Element-wise equality, NaN (and NaT) equal to NaN."""
    try:
        same = np.asarray(a == b, dtype=bool)
    except (TypeError, ValueError):  # types numpy cannot compare are not equal
        return np.zeros(np.broadcast_shapes(a.shape, b.shape), bool)
    if a.dtype.kind in "fcmM" and b.dtype.kind in "fcmM":
        same |= np.isnan(a) & np.isnan(b)
    return same


# -- choosing and comparing chunks ---------------------------------------------------------------


def _chunks_to_check(
    shape: Index, chunks: Index, blocks: Sequence[_Block], samples: int | None, rng: Any
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
    """The part of a chunk that one block holds: `region` in the source, `into` in the chunk."""

    block: _Block
    region: Region
    into: Region


def _pieces(blocks: Sequence[_Block], lo: NDArray[Any], hi: NDArray[Any]) -> list[_Piece]:
    if not blocks:
        return []
    origins = np.array([b.origin for b in blocks], np.int64).reshape(len(blocks), lo.size)
    ends = origins + np.array([b.shape for b in blocks], np.int64).reshape(origins.shape)
    hits = np.flatnonzero(((origins < hi) & (ends > lo)).all(axis=1))
    pieces = []
    for i in hits:
        first, last = np.maximum(lo, origins[i]), np.minimum(hi, ends[i])
        region = _slices(first - origins[i], last - origins[i])
        pieces.append(_Piece(blocks[int(i)], region, _slices(first - lo, last - lo)))
    return pieces


def _slices(starts: Iterable[int], stops: Iterable[int]) -> Region:
    return tuple(slice(int(a), int(b)) for a, b in zip(starts, stops, strict=True))


def _check_variable(
    name: str,
    target: _TargetArray,
    blocks: Sequence[_Block],
    samples: int | None,
    rng: Any,
    readers: _Readers,
) -> VariableCheck:
    shape, chunk_shape = target.info.shape, tuple(int(c) for c in target.array.chunks)
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


def _check_chunk(
    name: str,
    target: _TargetArray,
    chunk: Index,
    lo: NDArray[Any],
    hi: NDArray[Any],
    pieces: Sequence[_Piece],
    readers: _Readers,
    decode: bool,
) -> Mismatch | None:
    urls = tuple(dict.fromkeys(p.block.source.url for p in pieces))
    # Any failure to read a chunk, on either side, is a finding of verify, not a crash.
    try:
        actual = target.read(_slices(lo, hi))
        if decode:
            actual = _decoded(name, actual, target.info.cf)
    except Exception as err:  # noqa: BLE001  (a chunk that cannot be read is a finding)
        return Mismatch(chunk, urls, error=f"reading through the references: {_message(err)}")
    expected: NDArray[Any] | None = None
    for piece in pieces:
        source = piece.block.source
        try:
            values = readers.get(source.url).read(name, piece.region)
            if decode:
                values = _decoded(name, values, source.arrays[name].cf)
        except Exception as err:  # noqa: BLE001
            return Mismatch(chunk, urls, error=f"reading {source.url}: {_message(err)}")
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
    same = _equal(expected, actual)
    if same.all():
        return None
    first = tuple(int(i) for i in np.argwhere(~same)[0])
    index = tuple(int(o) + i for o, i in zip(lo, first, strict=True))
    return Mismatch(chunk, urls, index, _scalar(expected[first]), _scalar(actual[first]))


def _scalar(value: Any) -> object:
    if isinstance(value, np.datetime64 | np.timedelta64):
        return str(value)
    return value.item() if isinstance(value, np.generic) else value
