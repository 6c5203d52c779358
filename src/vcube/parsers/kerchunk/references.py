"""`KerchunkJSONParser`: a Kerchunk JSON reference file (spec version 0 or 1) as virtual Zarr
arrays.

Spec version 0 is the mapping of Zarr keys to values itself; version 1 has it under `refs`, with
`templates` substituted into URLs and `gen` entries expanded. A value is a metadata document, a
chunk reference `[url, offset, length]` or `[url]` (a whole file), or inline chunk bytes (text,
or base64 after a `base64:` prefix). Keys are grouped by array in one pass over the mapping, then
each array's chunk keys are parsed and its columns filled at once.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vcube.errors import UnsupportedFeatureError, UnsupportedFormatError
from vcube.parsers.kerchunk.common import FileRefs, Grid, PathTable, ReferenceParser, read_json
from vcube.parsers.kerchunk.layout import METADATA_KEYS
from vcube.parsers.kerchunk.templates import STRINGS, dimension, integers, render
from vcube.readers import ReadStats
from vcube.registry import ObjectStoreRegistry, normalize_url

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from vcube.manifests import ManifestStore

__all__ = ["KerchunkJSONParser"]


@dataclass(frozen=True)
class KerchunkJSONParser(ReferenceParser):
    """Parse a Kerchunk JSON reference file (spec version 0 or 1) into a `ManifestStore`.

    Parameters
    ----------
    group
        Path of the group to open (default: the root group); its subgroups are kept.
    fs_root
        Base URL (or local folder) of relative chunk URLs; by default the folder holding the
        reference file. Absolute paths and URLs with a scheme are used as they are.
    drop_variables
        Arrays to leave out, by name or by path below the opened group.
    root_array_name
        Variable name of an array stored at the root of the references (as `kerchunk.tiff`
        writes a single image), since a dataset is a group of named arrays.
    """

    def __call__(self, url: str, registry: ObjectStoreRegistry | None = None) -> ManifestStore:
        url = normalize_url(url)
        registry = registry or ObjectStoreRegistry()
        stats = ReadStats()
        refs, templates, gens = _spec(read_json(url, registry, stats), url)
        docs, buckets = _bucket(refs)
        layout = self._layout(docs, url)
        paths = self._paths(url, templates)
        grids = {path: Grid(array, url) for path, array in layout.selected.items()}
        for prefix, bucket in buckets.items():
            owner = layout.array_of(prefix, bucket.first_name())
            if owner in grids:
                bucket.add_to(grids[owner], prefix, paths)
        for gen in gens:
            for prefix, generated in _expand(gen, templates, url):
                owner = layout.array_of(prefix, str(generated.names[0]))
                if owner in grids:
                    grids[owner].add_files(generated, prefix, paths)
        return self._finish(layout, list(grids.values()), paths, registry, stats)


def _spec(doc: Any, url: str) -> tuple[dict[str, Any], dict[str, str], list[Any]]:
    """The references, templates and generators of a version 0 or 1 document."""
    if not isinstance(doc, dict):
        raise UnsupportedFormatError(
            f"{url}: not Kerchunk references: the JSON is a {type(doc).__name__}, not an object"
        )
    if "record_size" in doc and "metadata" in doc:
        raise UnsupportedFormatError(
            f"{url}: this is the .zmetadata of Kerchunk Parquet references; open the directory "
            f"that holds it with KerchunkParquetParser"
        )
    if "zarr_format" in doc:
        raise UnsupportedFormatError(
            f"{url}: this is a Zarr metadata document, not Kerchunk references; open the Zarr "
            f"store (its directory) instead"
        )
    version = doc.get("version")
    refs: Any = doc  # version 0: the document is the mapping
    templates: Any = {}
    gens: Any = []
    if version == 1 or (version is None and isinstance(doc.get("refs"), dict)):
        refs, templates, gens = doc.get("refs", {}), doc.get("templates", {}), doc.get("gen", [])
    elif version is not None:
        raise UnsupportedFormatError(
            f"{url}: unknown Kerchunk reference spec version {version!r} (vcube reads 0 and 1)"
        )
    if not isinstance(refs, dict) or not isinstance(gens, list) or not isinstance(templates, dict):
        raise UnsupportedFormatError(
            f"{url}: malformed Kerchunk references: 'refs' and 'templates' must be objects and "
            f"'gen' a list"
        )
    for name, value in templates.items():
        if not isinstance(value, str) or "{{" in value:
            raise UnsupportedFeatureError(
                f"{url}: template {name!r} = {value!r} is not a plain string; vcube substitutes "
                f"plain templates only. Expand the references with fsspec's ReferenceFileSystem "
                f"and write them again."
            )
    return refs, templates, gens


# -- references grouped by array ---------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    """The references found under one key prefix: file references and inline values."""

    names: list[str] = field(default_factory=list)
    refs: list[Any] = field(default_factory=list)
    inline_names: list[str] = field(default_factory=list)
    inline: list[Any] = field(default_factory=list)

    def first_name(self) -> str:
        return (self.names or self.inline_names)[0]

    def add_to(self, grid: Grid, prefix: str, paths: PathTable) -> None:
        if self.refs:
            grid.add_files(self._file_refs(grid.where), prefix, paths)
        if self.inline:
            names = self.inline_names
            data = [_inline(v, n, grid.where) for n, v in zip(names, self.inline, strict=True)]
            grid.add_inline(grid.rows(names, prefix), data)

    def _file_refs(self, where: str) -> FileRefs:
        """The columns of `[url, offset, length]` and `[url]` references."""
        refs, names, n = self.refs, self.names, len(self.refs)
        sizes = np.fromiter(map(len, refs), dtype=np.intp, count=n)
        full = sizes == 3
        bad = ~(full | (sizes == 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            _malformed(where, names[i], refs[i])
        offsets = np.zeros(n, dtype=np.int64)
        lengths = np.full(n, -1, dtype=np.int64)
        rows = np.flatnonzero(full)
        picked = refs if rows.size == n else [refs[i] for i in rows.tolist()]
        urls = [r[0] for r in refs]  # comprehensions: several times faster than zip(*refs)
        for k, out in ((1, offsets), (2, lengths)) if rows.size else ():
            column = [r[k] for r in picked]
            values = np.array(column)
            if values.dtype.kind not in "iu" or values.ndim != 1 or (values < 0).any():
                i = next((i for i, v in enumerate(column) if type(v) is not int or v < 0), 0)
                _malformed(where, names[int(rows[i])], picked[i])
            out[rows] = values
        return FileRefs(names, urls, offsets, lengths)


def _bucket(refs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, _Bucket]]:
    """The metadata documents, and the chunk references grouped by key prefix: one pass over the
    keys."""
    docs: dict[str, Any] = {}
    buckets: dict[str, _Bucket] = {}
    for key, value in refs.items():
        prefix, _, name = key.rpartition("/")
        if name in METADATA_KEYS:
            docs[key] = value
            continue
        bucket = buckets.get(prefix)
        if bucket is None:
            bucket = buckets[prefix] = _Bucket()
        if type(value) is list:
            bucket.names.append(name)
            bucket.refs.append(value)
        else:
            bucket.inline_names.append(name)
            bucket.inline.append(value)
    return docs, buckets


def _malformed(where: str, name: str, value: Any) -> None:
    raise UnsupportedFormatError(
        f"{where}: malformed reference at chunk {name!r}: {value!r:.120} (expected "
        f"[url, offset, length] with non-negative integers, [url], or inline text)"
    )


def _inline(value: Any, name: str, where: str) -> bytes:
    """Inline chunk bytes: base64 after a `base64:` prefix, else the text's UTF-8 bytes."""
    if not isinstance(value, str):
        _malformed(where, name, value)
    if value.startswith("base64:"):
        try:
            return base64.b64decode(value[7:], validate=True)
        except ValueError as err:
            raise UnsupportedFormatError(
                f"{where}: inline chunk {name!r} is not valid base64 ({err})"
            ) from err
    text: str = value
    return text.encode()


# -- generated references (spec version 1) -----------------------------------------------------


def _expand(gen: Any, templates: dict[str, str], source: str) -> Iterator[tuple[str, FileRefs]]:
    """The references of one `gen` entry, evaluated with numpy over the cartesian product of its
    dimensions, by key prefix."""
    where = f"{source}: gen entry {gen!r:.100}"
    if (
        not isinstance(gen, dict)
        or not isinstance(gen.get("key"), str)
        or not isinstance(gen.get("url"), str)
        or not isinstance(gen.get("dimensions"), dict)
        or (("offset" in gen) != ("length" in gen))
    ):
        raise UnsupportedFormatError(
            f"{where}: malformed (needs 'key', 'url' and 'dimensions'; 'offset' and 'length' "
            f"together or neither)"
        )
    axes = [dimension(spec, name, where) for name, spec in gen["dimensions"].items()]
    grids = np.meshgrid(*axes, indexing="ij") if axes else []
    env: dict[str, Any] = dict(templates)
    env.update(zip(gen["dimensions"], (g.ravel() for g in grids), strict=True))
    n = math.prod(a.size for a in axes)
    keys, urls = (
        np.broadcast_to(np.asarray(render(gen[f], env, where), dtype=STRINGS), (n,)).copy()
        for f in ("key", "url")
    )
    if "offset" in gen:
        offsets = integers(gen["offset"], env, n, where)
        lengths = integers(gen["length"], env, n, where)
    else:
        offsets, lengths = np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    prefixes, _, names = np.strings.rpartition(keys, np.asarray("/", dtype=STRINGS))
    unique, inverse = np.unique(prefixes, return_inverse=True)
    for k, prefix in enumerate(unique.tolist()):
        pick = inverse == k if unique.size > 1 else slice(None)
        yield prefix, FileRefs(names[pick], urls[pick], offsets[pick], lengths[pick])
