"""Targets: what `to_kerchunk` / `to_icechunk` wrote, detected from what is at the URL, opened
with the clients every user of the datacube uses (fsspec's `ReferenceFileSystem` under zarr for
Kerchunk, an Icechunk read-only session under zarr for Icechunk), read raw (no CF decoding)."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import urlsplit

import numpy as np
import obstore
import zarr
import zarr.storage

from vcube.errors import (
    SourceNotFoundError,
    UnsupportedFeatureError,
    UnsupportedFormatError,
    VcubeError,
)
from vcube.ingest import committed_sources
from vcube.parsers.detect import directory_format, read_head
from vcube.readers import translate_io_error
from vcube.registry import local_path
from vcube.stores import open_repository
from vcube.verify.access import fetch, unique
from vcube.verify.arrays import describe

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from numpy.typing import NDArray

    from vcube.registry import ObjectStoreRegistry
    from vcube.stores import ObjectStoreOptions
    from vcube.verify.arrays import Info, Region
    from vcube.verify.report import TargetKind

__all__ = ["Target", "TargetArray", "open_target"]

WHAT: Final = (
    "give a Kerchunk JSON file, a Kerchunk Parquet directory or an Icechunk repository "
    "(what to_kerchunk / to_icechunk wrote)"
)


@dataclass(frozen=True, slots=True)
class Target:
    """An opened target: its root group and the source URLs it names."""

    kind: TargetKind
    group: zarr.Group
    sources: list[str]

    def arrays(self) -> dict[str, TargetArray]:
        """Every array of the target, by path."""
        members = self.group.members(max_depth=None)
        return {p: TargetArray.of(p, a) for p, a in members if isinstance(a, zarr.Array)}


@dataclass(frozen=True, slots=True)
class TargetArray:
    array: zarr.Array[Any]
    info: Info  # dims: paths of the dimensions' coordinates, in the array's group

    @classmethod
    def of(cls, name: str, array: zarr.Array[Any]) -> TargetArray:
        stored = getattr(array.metadata, "dimension_names", None)
        stored = stored or array.attrs.get("_ARRAY_DIMENSIONS") or ()
        names = [*cast("Sequence[str | None]", stored), *[None] * array.ndim][: array.ndim]
        group = posixpath.dirname(name)
        dims = [posixpath.join(group, str(n or f"dim_{k}")) for k, n in enumerate(names)]
        return cls(array, describe(array.shape, array.dtype, array.attrs, dims))

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(int(c) for c in self.array.chunks)

    def read(self, region: Region) -> NDArray[Any]:
        return np.asarray(self.array[region])


def open_target(
    url: str, registry: ObjectStoreRegistry, options: ObjectStoreOptions, branch: str
) -> Target:
    """Open the Kerchunk references or Icechunk repository at `url`."""
    kind = _target_kind(url, registry)
    if kind == "Icechunk":
        return _open_icechunk(url, options, branch)
    if kind == "Kerchunk JSON":
        refs = json.loads(fetch(url, registry))
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
    return Target(kind, zarr.open_group(store, mode="r", zarr_format=2), sources)


def _target_kind(url: str, registry: ObjectStoreRegistry) -> TargetKind:
    store, path = registry.resolve(url)
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
            f"{url}: not a verify target (first bytes {head[:8]!r}): {WHAT}"
        )
    try:
        listing = obstore.list_with_delimiter(store, prefix=path.rstrip("/") or None)
    except Exception as err:
        raise translate_io_error(err, url) from err
    names = {o["path"].rsplit("/", 1)[-1] for o in listing["objects"]}
    folders = {p.rstrip("/").rsplit("/", 1)[-1] for p in listing["common_prefixes"]}
    if not names and not folders:
        raise SourceNotFoundError(f"{url}: no such file or directory: {WHAT}")
    # Icechunk 2 keeps a `repo` object at the top, Icechunk 1 `config.yaml` and `refs/`.
    if "snapshots" in folders and ("repo" in names or "refs" in folders):
        return "Icechunk"
    if directory_format(store, path, url) == "Kerchunk Parquet":
        return "Kerchunk Parquet"
    raise UnsupportedFormatError(f"{url}: not a verify target: {WHAT}")


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

    return unique(filled(u) for u in urls)


def _parquet_urls(root: Path) -> list[str]:
    import pyarrow.parquet as pq  # the `kerchunk` extra

    def order(file: Path) -> tuple[str, int]:
        return str(file.parent), int(file.name.split(".")[1])

    urls: list[str] = []
    for file in sorted(root.glob("**/refs.*.parq"), key=order):
        urls += pq.read_table(file, columns=["path"]).column("path").drop_null().to_pylist()
    return unique(urls)


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


def _open_icechunk(url: str, options: ObjectStoreOptions, branch: str) -> Target:
    # Opened as `vcube ingest` opens it: every virtual chunk container of the repository
    # authorized, with credentials from `options` and the environment.
    repo = open_repository(url, options)
    try:
        session = repo.readonly_session(branch=branch)
    except Exception as err:
        branches = ", ".join(sorted(repo.list_branches()))
        raise VcubeError(f"{url}: no branch {branch!r} (branches: {branches})") from err
    sources = unique(committed_sources(repo, branch))
    sources = sources or unique(sorted(session.all_virtual_chunk_locations()))
    return Target("Icechunk", zarr.open_group(session.store, mode="r", zarr_format=3), sources)
