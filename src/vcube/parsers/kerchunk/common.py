"""What the Kerchunk JSON and Parquet parsers share: their options and last steps, reading a JSON
document, the table of chunk file URLs (relative ones resolved against `fs_root`), and each
array's manifest columns being filled from chunk keys, file references and inline chunks."""

from __future__ import annotations

import json
import math
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import obstore
import pandas as pd

from vcube.errors import UnsupportedFormatError
from vcube.manifests import ChunkManifest, ManifestArray, ManifestStore
from vcube.manifests.array_api import grid_shape
from vcube.manifests.manifest import INLINE, MISSING
from vcube.parsers.kerchunk.layout import Layout
from vcube.parsers.kerchunk.templates import STRINGS, render
from vcube.parsers.zarr_metadata import chunk_positions
from vcube.readers import ReadStats, translate_io_error
from vcube.registry import ObjectStoreRegistry, local_path, normalize_url

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from numpy.typing import NDArray

    from vcube.parsers.kerchunk.layout import Array

__all__ = ["FileRefs", "Grid", "PathTable", "ReferenceParser", "read_json"]


@dataclass(frozen=True)
class ReferenceParser:
    """The options and the last steps shared by the JSON and Parquet parsers."""

    group: str | None = None
    fs_root: str | None = None
    drop_variables: Collection[str] = ()
    root_array_name: str = "data"
    stats: ReadStats = field(default_factory=ReadStats, compare=False)
    """Requests and bytes of every parse made with this parser (in this process)."""

    def _finish(
        self,
        layout: Layout,
        grids: list[Grid],
        paths: PathTable,
        registry: ObjectStoreRegistry,
        stats: ReadStats,
    ) -> ManifestStore:
        table = tuple(paths.urls)
        sizes = _whole_file_sizes(table, grids, registry, stats, layout.source)
        arrays = {g.array.name: g.manifest_array(table, sizes) for g in grids}
        self.stats.merge(stats)
        return ManifestStore(layout.tree(arrays), registry=registry, read_stats=stats)

    def _layout(self, docs: Mapping[str, Any], url: str) -> Layout:
        """The groups and arrays of the metadata documents, and those this parser selects."""
        return Layout(
            docs,
            url,
            group=self.group,
            drop_variables=self.drop_variables,
            root_array_name=self.root_array_name,
        )

    def _paths(self, url: str, templates: dict[str, str]) -> PathTable:
        """The URL table of a parse of `url`: relative URLs are resolved against `fs_root`,
        else the folder of the references."""
        base = normalize_url(self.fs_root) if self.fs_root else url.rsplit("/", 1)[0]
        return PathTable(base, templates)


def read_json(url: str, registry: ObjectStoreRegistry, stats: ReadStats) -> Any:
    """The JSON document at `url`."""
    store, path = registry.resolve(url)
    try:
        data = obstore.get(store, path).bytes()
    except Exception as err:
        raise translate_io_error(err, url) from err
    stats.add(url, len(data))
    try:
        text = str(memoryview(data), "utf-8")  # decoded from obstore's buffer: no bytes copy
        del data
        return json.loads(text)
    except (UnicodeDecodeError, ValueError) as err:
        raise UnsupportedFormatError(
            f"{url}: not JSON, so not Kerchunk references ({err})"
        ) from err


class PathTable:
    """The absolute URL of every chunk file of one parse (shared by all its manifests): templates
    substituted, relative paths resolved; done once per distinct URL."""

    def __init__(self, base: str, templates: dict[str, str]) -> None:
        self.base = base
        self.templates = templates
        self._ids: dict[str, int] = {}
        self._written: dict[str, int] = {}  # URL as written -> id

    @property
    def urls(self) -> list[str]:
        return list(self._ids)

    def ids(self, written: Sequence[Any], where: str) -> NDArray[np.int32]:
        out = np.empty(len(written), dtype=np.int32)
        for i, url in enumerate(written):
            if not isinstance(url, str) or not url:
                raise UnsupportedFormatError(f"{where}: malformed chunk URL {url!r}")
            found = self._written.get(url)
            if found is None:
                text = render(url, self.templates, where) if "{{" in url else url
                found = self._ids.setdefault(_absolute(str(text), self.base), len(self._ids))
                self._written[url] = found
            out[i] = found
        return out


def _absolute(url: str, base: str) -> str:
    if "://" in url:
        return url
    if url.startswith("/"):
        return normalize_url(url)
    local = local_path(base)
    if local is not None:
        return normalize_url(f"{local}/{url}")
    scheme, _, path = base.partition("://")
    return f"{scheme}://{posixpath.normpath(f'{path}/{url}')}"


@dataclass(frozen=True, slots=True)
class FileRefs:
    """File references under one key prefix: chunk key, URL as written, offset and length (-1:
    the whole file)."""

    names: Any  # list[str] or a numpy string array
    urls: Any  # a sequence or a numpy string array
    offsets: NDArray[np.int64]
    lengths: NDArray[np.int64]


class Grid:
    """One array's references being assembled: numpy columns over its flattened chunk grid."""

    def __init__(self, array: Array, source: str) -> None:
        self.array = array
        self.where = f"{source}: array {array.path or '/'!r}"
        self.shape = grid_shape(array.info.shape, array.info.chunks)
        self.size = math.prod(self.shape)
        self.ids = np.full(self.size, MISSING, dtype=np.int32)
        self.offsets = np.zeros(self.size, dtype=np.uint64)
        self.lengths = np.zeros(self.size, dtype=np.uint64)
        self.whole = np.zeros(self.size, dtype=bool)  # references to a whole file
        self.inline: list[bytes] = []

    def add_files(self, refs: FileRefs, prefix: str, paths: PathTable) -> None:
        """File references whose keys are under `prefix`; each distinct URL resolved once."""
        codes, uniques = pd.factorize(np.asarray(refs.urls, dtype=object), use_na_sentinel=True)
        if np.any(codes < 0):
            raise UnsupportedFormatError(f"{self.where}: a chunk reference has a null URL")
        ids = paths.ids(list(uniques), self.where)[codes]
        self.put(self.rows(refs.names, prefix), ids, refs.offsets, refs.lengths)

    def add_inline(self, rows: NDArray[np.intp], data: list[bytes]) -> None:
        self.ids[rows] = INLINE
        self.offsets[rows] = np.arange(len(self.inline), len(self.inline) + len(data))
        self.lengths[rows] = np.fromiter(map(len, data), dtype=np.uint64, count=len(data))
        self.whole[rows] = False
        self.inline.extend(data)

    def put(
        self,
        rows: NDArray[np.intp] | slice,
        ids: NDArray[np.int32],
        offsets: NDArray[np.int64],
        lengths: NDArray[np.int64],
    ) -> None:
        """File references (a length of -1: the whole file) at flat grid positions `rows`."""
        whole = lengths < 0
        self.ids[rows] = ids
        self.offsets[rows] = offsets
        self.lengths[rows] = np.where(whole, 0, lengths)
        self.whole[rows] = whole & (ids >= 0)

    def rows(self, names: Any, prefix: str) -> NDArray[np.intp]:
        """Flat grid positions of the chunk keys `names` found under `prefix` (`0.1`; `0/1` and
        `c/0/1`, whose first parts are in `prefix`)."""
        rest = prefix.removeprefix(self.array.path).removeprefix("/")
        if rest:  # keys with `/` in them were grouped under a deeper prefix
            names = np.strings.add(
                np.asarray(f"{rest}/", dtype=STRINGS), np.asarray(names, dtype=STRINGS)
            )
        encoding = self.array.encoding
        positions, is_key, inside = chunk_positions(names, encoding, self.shape)
        if not inside.all():
            i = int(np.flatnonzero(~inside)[0])
            key = str(names[i])
            if is_key[i]:
                raise UnsupportedFormatError(
                    f"{self.where}: chunk key {key!r} is outside its chunk grid {self.shape} "
                    f"(shape {self.array.info.shape}, chunks {self.array.info.chunks})"
                )
            raise UnsupportedFormatError(
                f"{self.where}: {key!r} is not a chunk key of this array (expected keys like "
                f"{encoding.example(len(self.shape))!r}: {len(self.shape)} indices in decimal, "
                f"separator {encoding.separator!r})"
            )
        return positions

    def manifest_array(self, paths: tuple[str, ...], sizes: NDArray[np.uint64]) -> ManifestArray:
        if self.whole.any():
            self.lengths[self.whole] = sizes[self.ids[self.whole]]
        manifest = ChunkManifest(
            paths=paths,
            path_ids=self.ids.reshape(self.shape),
            offsets=self.offsets.reshape(self.shape),
            lengths=self.lengths.reshape(self.shape),
            inline=tuple(self.inline),
        )
        return ManifestArray(self.array.info, manifest, name=self.array.name)


def _whole_file_sizes(
    urls: tuple[str, ...],
    grids: list[Grid],
    registry: ObjectStoreRegistry,
    stats: ReadStats,
    source: str,
) -> NDArray[np.uint64]:
    """The size of each file referenced as a whole (`[url]`), by a HEAD request per file."""
    sizes = np.zeros(len(urls), dtype=np.uint64)
    needed = set().union(*(np.unique(g.ids[g.whole]).tolist() for g in grids))
    for i in sorted(needed):
        store, path = registry.resolve(urls[i])
        try:
            sizes[i] = obstore.head(store, path)["size"]
        except Exception as err:
            where = f"{urls[i]} (referenced as a whole file by {source})"
            raise translate_io_error(err, where) from err
        stats.add(urls[i], 0)
    return sizes
