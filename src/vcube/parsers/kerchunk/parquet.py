"""`KerchunkParquetParser`: Kerchunk Parquet references as virtual Zarr arrays.

The layout is that of fsspec's `LazyReferenceMapper`: the metadata documents in `.zmetadata`
(with the `record_size`), the chunk references of array `a` in `a/refs.<i>.parq`, row `j` of
record `i` being chunk `i * record_size + j` of the chunk grid in C order, with columns `path`,
`offset`, `size` and `raw` (inline bytes). Records are read column-wise with pyarrow, a few at a
time, and only those of the arrays asked for; a record never written holds no chunk.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import obstore
from obstore.exceptions import NotFoundError

from vcube.errors import (
    SourceNotFoundError,
    TransientIOError,
    UnsupportedFormatError,
    VcubeError,
)
from vcube.manifests.manifest import MISSING
from vcube.parsers.kerchunk.common import Grid, PathTable, ReferenceParser, read_json
from vcube.readers import ReadStats, translate_io_error
from vcube.registry import ObjectStoreRegistry, normalize_url

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pyarrow as pa
    from numpy.typing import NDArray

    from vcube.manifests import ManifestStore

__all__ = ["KerchunkParquetParser"]

_PARQUET_COLUMNS: Final = ("path", "offset", "size", "raw")


@dataclass(frozen=True)
class KerchunkParquetParser(ReferenceParser):
    """Parse Kerchunk Parquet references (fsspec's `LazyReferenceMapper` layout) into a
    `ManifestStore`, reading the records of the arrays asked for only.

    Parameters
    ----------
    group, fs_root, drop_variables, root_array_name
        As for `KerchunkJSONParser`; by default relative URLs are resolved against the folder
        that holds the Parquet directory. The records of dropped arrays are never read.
    max_concurrency
        Parquet records fetched at a time.
    """

    max_concurrency: int = 8

    def __call__(self, url: str, registry: ObjectStoreRegistry | None = None) -> ManifestStore:
        url = normalize_url(url).rstrip("/")
        registry = registry or ObjectStoreRegistry()
        stats = ReadStats()
        docs, record_size = _read_zmetadata(url, registry, stats)
        layout = self._layout(docs, url)
        paths = self._paths(url, {})
        grids = [Grid(array, url) for array in layout.selected.values()]
        window = max(1, self.max_concurrency)
        with ThreadPoolExecutor(window) as pool:
            for grid in grids:
                base = f"{url}/{grid.array.path}".rstrip("/")
                urls = [f"{base}/refs.{i}.parq" for i in range(-(-grid.size // record_size))]
                for i, table in _records(urls, registry, stats, pool, window):
                    _add_record(grid, table, i * record_size, record_size, paths)
        return self._finish(layout, grids, paths, registry, stats)


def _read_zmetadata(
    url: str, registry: ObjectStoreRegistry, stats: ReadStats
) -> tuple[dict[str, Any], int]:
    zurl = f"{url}/.zmetadata"
    try:
        meta = read_json(zurl, registry, stats)
    except VcubeError as err:  # under a local file: "not a directory", not "not found"
        if isinstance(err, TransientIOError):
            raise
        raise _not_parquet(url, registry, err) from err
    record_size = meta.get("record_size") if isinstance(meta, dict) else None
    metadata = meta.get("metadata") if isinstance(meta, dict) else None
    if not isinstance(metadata, dict) or not isinstance(record_size, int) or record_size < 1:
        raise UnsupportedFormatError(
            f"{zurl}: not Kerchunk Parquet references: expected an object with 'metadata' (an "
            f"object) and 'record_size' (a positive integer); consolidated Zarr metadata is "
            f"opened with the Zarr parser"
        )
    return metadata, record_size


def _not_parquet(url: str, registry: ObjectStoreRegistry, err: VcubeError) -> VcubeError:
    """The error for a URL without a readable `.zmetadata`: a file, or nothing at all."""
    store, path = registry.resolve(url)
    try:
        obstore.head(store, path)
    except (FileNotFoundError, NotFoundError):
        if isinstance(err, SourceNotFoundError):
            return SourceNotFoundError(f"{url}: no Kerchunk Parquet references here ({err})")
        return err
    return UnsupportedFormatError(
        f"{url}: a file, not a Kerchunk Parquet directory (with a .zmetadata); for JSON "
        f"references use KerchunkJSONParser"
    )


def _records(
    urls: list[str],
    registry: ObjectStoreRegistry,
    stats: ReadStats,
    pool: ThreadPoolExecutor,
    window: int,
) -> Iterator[tuple[int, pa.Table]]:
    """The Parquet records that exist, by index, fetched `window` at a time: memory stays
    bounded whatever the size of the array."""
    for first in range(0, len(urls), window):
        batch = urls[first : first + window]
        read = pool.map(lambda u: _read_record(u, registry), batch)
        for i, (table, nbytes) in enumerate(read, first):
            stats.add(urls[i], nbytes)  # in this thread: ReadStats is not thread-safe
            if table is not None:
                yield i, table


def _read_record(url: str, registry: ObjectStoreRegistry) -> tuple[pa.Table | None, int]:
    """One Parquet record and its size; None when it was never written (all chunks missing)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    store, path = registry.resolve(url)
    try:
        data = obstore.get(store, path).bytes()
    except (FileNotFoundError, NotFoundError):
        return None, 0
    except Exception as err:
        raise translate_io_error(err, url) from err
    try:
        file = pq.ParquetFile(pa.BufferReader(pa.py_buffer(data)), read_dictionary=["path"])
        columns = [c for c in _PARQUET_COLUMNS if c in file.schema_arrow.names]
        return file.read(columns=columns), len(data)
    except pa.ArrowException as err:
        raise UnsupportedFormatError(f"{url}: not a Kerchunk Parquet record ({err})") from err


def _add_record(
    grid: Grid, table: pa.Table, start: int, record_size: int, paths: PathTable
) -> None:
    """The rows of one Parquet record, from chunk `start` on (rows past the grid are padding)."""
    import pyarrow.compute as pc

    table = table.slice(0, max(0, min(record_size, grid.size - start)))
    n = table.num_rows
    raw = table.column("raw") if "raw" in table.column_names else None
    inline = np.asarray(pc.is_valid(raw)) if raw is not None else np.zeros(n, dtype=bool)
    ids = _path_ids(table, paths, grid.where)
    ids[inline] = MISSING
    offsets, lengths = (
        np.asarray(pc.fill_null(table.column(c), 0), dtype=np.int64)
        if c in table.column_names
        else np.zeros(n, dtype=np.int64)
        for c in ("offset", "size")
    )
    # fsspec reads a path with offset and size 0 as a reference to the whole file.
    lengths = np.where((ids >= 0) & (offsets == 0) & (lengths == 0), -1, lengths)
    grid.put(slice(start, start + n), ids, offsets, lengths)
    if raw is not None and inline.any():
        rows = start + np.flatnonzero(inline)
        grid.add_inline(rows, raw.filter(pc.is_valid(raw)).to_pylist())


def _path_ids(table: pa.Table, paths: PathTable, where: str) -> NDArray[np.int32]:
    """Path ids of a record's rows (MISSING for a null path), one dictionary at a time."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "path" not in table.column_names or pa.types.is_null(table.column("path").type):
        return np.full(table.num_rows, MISSING, dtype=np.int32)
    column = table.column("path")
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    parts = [np.zeros(0, dtype=np.int32)]
    for chunk in column.chunks:
        table_ids = np.append(paths.ids(chunk.dictionary.to_pylist(), where), MISSING)
        codes = np.asarray(pc.fill_null(chunk.indices, -1), dtype=np.intp)
        parts.append(table_ids[codes])
    return np.concatenate(parts).astype(np.int32)
