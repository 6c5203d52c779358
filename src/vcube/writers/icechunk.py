"""Write a virtual dataset into an Icechunk repository: one bulk call of references per array.

Every variable takes one path: `ManifestGroup.from_virtual_dataset` turns loaded variables into
CF-encoded one-chunk inline arrays, so the writer sees only `ManifestArray`s. Their `zarr.json`
is written as it is (attributes spelled as strict JSON, which Icechunk's parser needs), file
references go to `IcechunkStore.set_virtual_refs_arr` as whole numpy columns, and inline chunks
are written as native chunks at their chunk keys.

All checks (arguments, containers, the existing group and arrays) run before the first write. If
writing still fails and the session had no uncommitted changes before the call, its changes are
discarded, so the session is as it was.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

import numpy as np
import zarr.api.asynchronous
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from vcube.errors import (
    IncompatibleArraysError,
    ReadOnlyError,
    StoreNotFoundError,
    UnsupportedFeatureError,
    VcubeError,
    VcubeWarning,
)
from vcube.manifests.array import ManifestArray
from vcube.manifests.group import ManifestGroup
from vcube.manifests.manifest import INLINE, MISSING
from vcube.manifests.store import ManifestStore
from vcube.registry import normalize_url
from vcube.stores import container_prefix
from vcube.writers.icechunk_steps import (
    LAYOUT_KEYS,
    ZARR_JSON,
    Json,
    Step,
    append_step,
    chunk_key,
    document,
    first_difference,
    group_document,
    metadata_key,
    region_step,
    with_stored_encoding,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import xarray as xr
    from icechunk import IcechunkStore

    from vcube.manifests.manifest import ChunkManifest

__all__ = ["to_icechunk"]

Mode = Literal["w", "w-", "a", "r+"]

_PACKAGE = str(Path(__file__).resolve().parents[1])  # src/vcube: no warning points inside it


def to_icechunk(
    ds: xr.Dataset,
    store: IcechunkStore,
    *,
    group: str | None = None,
    mode: Mode | None = None,
    append_dim: str | None = None,
    region: Mapping[str, slice] | None = None,
    last_updated_at: datetime | None = None,
    validate_containers: bool = True,
) -> None:
    """Write a virtual dataset into the session of an Icechunk store (commit it afterwards).

    Parameters
    ----------
    ds
        Virtual dataset: `ManifestArray` variables are written as virtual references, loaded
        variables as native chunks (CF-encoded as xarray writes them).
    store
        `session.store` of a writable Icechunk session.
    group
        Group to write into (slash-separated); the root group when None.
    mode
        `"w-"` create the group, failing if it exists; `"w"` replace the group; `"a"` create
        or update it, replacing the arrays `ds` names and keeping the others; `"r+"` rewrite the
        references of existing arrays whose metadata does not change. None means `"w-"`, or
        `"a"` with `append_dim`.
    append_dim
        Append along this dimension: arrays that have it grow; the others must match the stored
        ones (metadata, and values of loaded ones) and are left unchanged. A missing group is
        created (mode `"a"`).
    region
        Rewrite only this part of existing arrays, e.g. ``{"time": slice(24, 48)}``: every
        variable must have at least one of its dimensions, and match the stored array (layout,
        and shape outside the region). Virtual variables must start on a chunk boundary (and
        end on one, or at the array's end); their missing chunks clear the stored ones.
    last_updated_at
        Stored with every reference as its checksum: reading a chunk whose file was modified
        after this time fails. Icechunk keeps whole seconds, so it is rounded up to one.
        None stores no checksum.
    validate_containers
        Check every referenced URL against the repository's virtual chunk containers first.

    Raises
    ------
    ReadOnlyError
        The store belongs to a read-only session.
    StoreNotFoundError
        A referenced URL matches no virtual chunk container (the message names the prefix).
    IncompatibleArraysError
        An append or a rewrite does not fit the stored arrays.
    VcubeError
        The group exists (mode `"w-"`) or does not (mode `"r+"`).
    """
    _check_store(store)
    region = _check_region(region, ds, mode, append_dim)
    open_mode = _resolve_mode(mode, append_dim) if region is None else "r+"
    if append_dim is not None and append_dim not in ds.dims:
        raise IncompatibleArraysError(
            f"append_dim {append_dim!r} is not a dimension of the dataset "
            f"(dimensions: {', '.join(map(str, ds.dims)) or 'none'})"
        )
    virtual = {str(k) for k, v in ds.variables.items() if isinstance(v.data, ManifestArray)}
    if not virtual:
        warnings.warn(
            "the dataset has no virtual variables: every variable is written as native chunks "
            "(open the files with vcube.open_virtual_dataset to write references)",
            VcubeWarning,
            skip_file_prefixes=(_PACKAGE,),  # point at the caller, also through ds.vcube
        )
    if validate_containers:
        arrays = [v.data for v in ds.variables.values() if isinstance(v.data, ManifestArray)]
        _check_containers(arrays, store.session.config.virtual_chunk_containers or {})
    writer = _Writer(
        store,
        prefix="/".join(p for p in (group or "").split("/") if p),
        mode=open_mode,
        append_dim=append_dim,
        region=region,
        checksum=_checksum(last_updated_at),
    )
    session = store.session
    clean = not session.has_uncommitted_changes
    try:
        writer.write(ds, loaded={str(k) for k in ds.variables} - virtual)
    except BaseException:
        if clean:
            session.discard_changes()
        raise


# -- argument checks ---------------------------------------------------------------------------


def _check_store(store: object) -> None:
    from icechunk import IcechunkStore  # optional dependency, imported where it is used

    if not isinstance(store, IcechunkStore):
        raise TypeError(f"store must be an icechunk.IcechunkStore, not {type(store).__name__}")
    if store.read_only:
        raise ReadOnlyError(
            "the Icechunk store is read-only (a readonly_session, or a store opened read-only): "
            "write to repo.writable_session('main').store and commit the session"
        )


def _resolve_mode(mode: Mode | None, append_dim: str | None) -> Mode:
    if mode not in (None, "w", "w-", "a", "r+"):
        raise ValueError(f"mode must be one of 'w', 'w-', 'a', 'r+' or None, not {mode!r}")
    if append_dim is not None:
        if mode in ("w", "w-"):
            raise ValueError(f"mode={mode!r} replaces the group; append_dim needs 'a' or 'r+'")
        return mode or "a"
    return mode or "w-"


def _check_region(
    region: object, ds: xr.Dataset, mode: Mode | None, append_dim: str | None
) -> dict[str, slice] | None:
    if region is None:
        return None
    if not isinstance(region, Mapping) or not all(isinstance(v, slice) for v in region.values()):
        raise UnsupportedFeatureError(
            f"region must map dimension names to slices, e.g. {{'time': slice(0, 24)}}, not "
            f"{region!r}"
        )
    if append_dim is not None:
        raise ValueError("region and append_dim cannot be combined")
    if mode not in (None, "r+", "a"):
        raise ValueError(f"mode={mode!r} replaces the group; a region write needs 'r+' or None")
    unknown = [d for d in region if d not in ds.dims]
    if unknown:
        raise IncompatibleArraysError(
            f"region dimensions {unknown} are not dimensions of the dataset "
            f"({', '.join(map(str, ds.dims))})"
        )
    return {str(k): v for k, v in region.items()}


def _checksum(last_updated_at: datetime | None) -> datetime | None:
    """`last_updated_at` in UTC, rounded up to a whole second (Icechunk drops the fraction and
    refuses a file modified after the stored second)."""
    if last_updated_at is None:
        return None
    if not isinstance(last_updated_at, datetime):
        raise TypeError(f"last_updated_at must be a datetime, not {type(last_updated_at)}")
    when = last_updated_at.astimezone(UTC)  # a naive datetime is local time, as in Python
    if when.microsecond:
        when = when.replace(microsecond=0) + timedelta(seconds=1)
    return when


def _check_containers(arrays: Iterable[ManifestArray], containers: Mapping[str, Any]) -> None:
    """Every URL the arrays reference starts with the prefix of a virtual chunk container."""
    prefixes = tuple(containers)
    unquoted = tuple(unquote(p) for p in prefixes)
    unmatched: dict[str, None] = {}
    for array in arrays:
        for url in _used_urls(array.manifest):
            # Icechunk percent-encodes locations: "a b" and "a%20b" name the same file.
            if not (url.startswith(prefixes) or unquote(url).startswith(unquoted)):
                unmatched.setdefault(url)
    if not unmatched:
        return
    url = next(iter(unmatched))
    more = f" (and {len(unmatched) - 1} more URLs)" if len(unmatched) > 1 else ""
    suggested = container_prefix(url)
    raise StoreNotFoundError(
        f"no virtual chunk container of the repository matches {url!r}{more}; configured "
        f"prefixes: {', '.join(map(repr, prefixes)) or 'none'}. Add a container for "
        f"{suggested!r} to the repository config (config.set_virtual_chunk_container("
        f"icechunk.VirtualChunkContainer({suggested!r}, store)); repo.reopen(config=config); "
        f"repo.save_config()) and authorize it when opening the repository "
        f"(authorize_virtual_chunk_access={{{suggested!r}: credentials}}). "
        f"Nothing was written."
    )


def _urls(manifest: ChunkManifest) -> tuple[str, ...]:
    """The manifest's path table as absolute URLs (local paths become `file://` URLs)."""
    return tuple(normalize_url(p) for p in manifest.paths)


def _used_urls(manifest: ChunkManifest) -> list[str]:
    ids = manifest.path_ids
    used = np.bincount(ids[ids >= 0].ravel(), minlength=len(manifest.paths)) > 0
    return [normalize_url(p) for p, u in zip(manifest.paths, used.tolist(), strict=True) if u]


# -- the writer --------------------------------------------------------------------------------


class _Writer:
    def __init__(
        self,
        store: IcechunkStore,
        *,
        prefix: str,
        mode: Mode,
        append_dim: str | None,
        region: dict[str, slice] | None,
        checksum: datetime | None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.mode = mode
        self.append_dim = append_dim
        self.region = region
        self.checksum = checksum

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def write(self, ds: xr.Dataset, *, loaded: set[str]) -> None:
        names = [str(k) for k in ds.variables]
        stored_group, docs = sync(self.read_state(names))
        if self.mode == "w-" and stored_group is not None:
            raise VcubeError(
                f"the group {self.prefix or '/'!r} already exists in the Icechunk store; "
                f"use mode='w' to replace it, 'a' to add to it, or append_dim to append"
            )
        if self.mode == "r+" and stored_group is None:
            raise VcubeError(f"the group {self.prefix or '/'!r} does not exist (mode='r+')")
        stored = dict(zip(names, docs, strict=True))
        appending = self.append_dim is not None and stored_group is not None
        if appending or self.region:
            dims = set(self.region or ()) | ({self.append_dim} if self.append_dim else set())
            ds = with_stored_encoding(ds, stored, loaded, dims)
        tree = ManifestGroup.from_virtual_dataset(ds)  # encodes loaded variables (sync zarr)
        steps = sync(self.plan_and_write(tree, stored_group, stored, loaded, appending))
        for step in steps:  # icechunk inserts the references of one call in Rust, GIL released
            if step.chunk_offset is not None and step.value_region is None:
                self.write_references(step.key, step.array.manifest, step.chunk_offset)

    async def read_state(self, names: Sequence[str]) -> tuple[Json | None, list[Json | None]]:
        """The stored group document and the stored document of each of `names`."""
        await self.check_ancestors()
        stored_group = await self.read_json(metadata_key(self.prefix))
        if stored_group is not None and stored_group.get("node_type") != "group":
            raise VcubeError(f"{self.prefix!r} is an array in the Icechunk store, not a group")
        return stored_group, await self.read_docs(names)

    async def plan_and_write(
        self,
        tree: ManifestGroup,
        stored_group: Json | None,
        stored: dict[str, Json | None],
        loaded: set[str],
        appending: bool,
    ) -> list[Step]:
        """Check everything, then write the metadata, loaded values and inline chunks; the steps
        whose references are still to be written are returned."""
        if appending:
            steps = await self.plan_append(tree, stored, loaded)
        elif self.region is not None:
            region = self.region
            steps = [
                region_step(n, self.key(n), a, stored[n], region, loaded=n in loaded)
                for n, a in tree.arrays.items()
            ]
        elif self.mode == "r+":
            steps = [self.plan_rewrite(n, a, stored[n]) for n, a in tree.arrays.items()]
        else:
            fresh = self.mode == "w" or stored_group is None
            steps = [
                Step(n, self.key(n), a, document(a), delete=not fresh and stored[n] is not None)
                for n, a in tree.arrays.items()
            ]
        # -- every check passed: write --
        if self.mode == "w" and stored_group is not None:
            await self.store.delete_dir(self.prefix)
        if stored_group is None or self.mode == "w":
            await self.create_ancestors()
            await self.write_json(metadata_key(self.prefix), group_document(tree.attributes))
        elif self.mode == "a" and not appending and self.region is None:
            merged = {**stored_group.get("attributes", {}), **tree.attributes}
            await self.write_json(metadata_key(self.prefix), group_document(merged))
        source = ManifestStore(tree)
        await asyncio.gather(*(self.apply(step, source) for step in steps))
        return steps

    # -- plans -------------------------------------------------------------------------------

    async def plan_append(
        self, tree: ManifestGroup, stored: dict[str, Json | None], loaded: set[str]
    ) -> list[Step]:
        assert self.append_dim is not None
        dim = self.append_dim
        steps = []
        for name, array in tree.arrays.items():
            doc, key = stored[name], self.key(name)
            dims = array.info.dimension_names or ()
            if dim not in dims:
                if doc is None:
                    steps.append(Step(name, key, array, document(array)))
                    continue
                new = document(array)
                difference = first_difference(
                    new, doc, keys=(*LAYOUT_KEYS, "shape", "dimension_names")
                )
                # Loaded values are compared; virtual ones cannot be without reading the files
                # (their references name other files), so their metadata must do.
                same = name not in loaded or await self.same_values(key, array.manifest)
                if difference is None and not same:
                    difference = "values"
                if difference is not None:
                    raise IncompatibleArraysError(
                        f"variable {name!r} has no dimension {dim!r}, so appending leaves it "
                        f"unchanged, but it differs from the stored one: {difference}"
                    )
                steps.append(Step(name, key, array, None, chunk_offset=None))
                continue
            if doc is None:
                raise IncompatibleArraysError(
                    f"cannot append variable {name!r} along {dim!r}: the group "
                    f"{self.prefix or '/'!r} has no such array (write it without append_dim)"
                )
            steps.append(append_step(name, key, array, doc, dim, loaded=name in loaded))
        await self.check_stored_arrays_grow(set(tree.arrays))
        return steps

    def plan_rewrite(self, name: str, array: ManifestArray, doc: Json | None) -> Step:
        if doc is None:
            raise IncompatibleArraysError(f"variable {name!r} does not exist (mode='r+')")
        difference = first_difference(
            document(array), doc, keys=(*LAYOUT_KEYS, "shape", "dimension_names")
        )
        if difference is not None:
            raise IncompatibleArraysError(
                f"mode='r+' rewrites references only, but variable {name!r} changes: "
                f"{difference}; use mode='a' to replace the array"
            )
        return Step(name, self.key(name), array, doc, delete=True)

    async def check_stored_arrays_grow(self, names: set[str]) -> None:
        """Every stored array along the append dimension must be appended to."""
        children = [c async for c in self.store.list_dir(self.prefix)]
        others = [c for c in children if c != ZARR_JSON and c not in names]
        for child, doc in zip(others, await self.read_docs(others), strict=True):
            if doc is not None and self.append_dim in (doc.get("dimension_names") or ()):
                raise IncompatibleArraysError(
                    f"the stored array {child!r} has dimension {self.append_dim!r} but the "
                    f"dataset has no variable {child!r}: appending would leave it shorter"
                )

    async def same_values(self, key: str, manifest: ChunkManifest) -> bool:
        """True when the stored chunks of a loaded (in-memory) array are its chunks, byte for
        byte (both encoded by the same encoder)."""
        present = np.argwhere(manifest.path_ids != MISSING).tolist()
        stored = await asyncio.gather(*(self.read_bytes(chunk_key(key, i)) for i in present))
        new = [manifest.inline[int(manifest.offsets[tuple(i)])] for i in present]
        return stored == new

    # -- writes ------------------------------------------------------------------------------

    async def apply(self, step: Step, source: ManifestStore) -> None:
        if step.delete:
            await self.store.delete_dir(step.key)
        if step.document is not None:
            await self.write_json(metadata_key(step.key), step.document)
        if step.value_region is not None:
            values = await _read_values(source, step.name)
            target = await zarr.api.asynchronous.open_array(
                store=self.store, path=step.key, zarr_format=3, mode="r+"
            )
            await target.setitem(step.value_region, values)
        elif step.chunk_offset is not None:
            await self.write_inline(step.key, step.array.manifest, step.chunk_offset)
            if step.clear_missing:
                await self.delete_missing(step.key, step.array.manifest, step.chunk_offset)

    def write_references(self, key: str, manifest: ChunkManifest, offset: tuple[int, ...]) -> None:
        """All file references of one array in one bulk call, as numpy columns."""
        ids = manifest.path_ids
        if not bool(np.any(ids >= 0)):
            return
        urls = _urls(manifest)
        table = np.array([*urls, ""], dtype=object)  # "" marks what icechunk skips
        locations = table[np.where(ids >= 0, ids, len(urls)).reshape(-1)].tolist()
        self.store.set_virtual_refs_arr(
            key,
            manifest.grid_shape,
            locations,
            np.ascontiguousarray(manifest.offsets).reshape(-1),
            np.ascontiguousarray(manifest.lengths).reshape(-1),
            validate_containers=False,  # checked once per URL before writing (`_check_containers`)
            arr_offset=offset if any(offset) else None,
            checksum=self.checksum,
        )

    async def write_inline(
        self, key: str, manifest: ChunkManifest, offset: tuple[int, ...]
    ) -> None:
        """The in-memory chunks of one array as native chunks at their (shifted) chunk keys."""
        inline, shifted = _positions(manifest, INLINE, offset)
        prototype = default_buffer_prototype()
        await asyncio.gather(
            *(
                self.store.set(
                    chunk_key(key, new),
                    prototype.buffer.from_bytes(manifest.inline[int(manifest.offsets[old])]),
                )
                for old, new in zip(map(tuple, inline), shifted, strict=True)
            )
        )

    async def delete_missing(
        self, key: str, manifest: ChunkManifest, offset: tuple[int, ...]
    ) -> None:
        """Delete the stored chunks where the new manifest has none (they read as fill)."""
        _, shifted = _positions(manifest, MISSING, offset)
        await asyncio.gather(*(self.store.delete(chunk_key(key, i)) for i in shifted))

    async def check_ancestors(self) -> None:
        parts = self.prefix.split("/") if self.prefix else []
        for i in range(1, len(parts)):
            doc = await self.read_json(metadata_key("/".join(parts[:i])))
            if doc is not None and doc.get("node_type") != "group":
                raise VcubeError(f"{'/'.join(parts[:i])!r} is an array, not a group")

    async def create_ancestors(self) -> None:
        parts = self.prefix.split("/") if self.prefix else []
        for i in range(len(parts)):
            key = metadata_key("/".join(parts[:i]))
            if await self.read_json(key) is None:
                await self.write_json(key, group_document({}))

    async def read_docs(self, names: Sequence[str]) -> list[Json | None]:
        return list(
            await asyncio.gather(*(self.read_json(metadata_key(self.key(n))) for n in names))
        )

    async def read_bytes(self, key: str) -> bytes | None:
        buffer = await self.store.get(key, default_buffer_prototype())
        return None if buffer is None else buffer.to_bytes()

    async def read_json(self, key: str) -> Json | None:
        data = await self.read_bytes(key)
        if data is None:
            return None
        doc: Json = json.loads(data)
        return doc

    async def write_json(self, key: str, doc: Json) -> None:
        data = json.dumps(doc, allow_nan=False).encode()
        await self.store.set(key, default_buffer_prototype().buffer.from_bytes(data))


def _positions(
    manifest: ChunkManifest, path_id: int, offset: tuple[int, ...]
) -> tuple[list[list[int]], list[list[int]]]:
    """The chunk indices whose path id is `path_id`, and the same shifted by `offset`."""
    found = np.argwhere(manifest.path_ids == path_id)
    shifted = found + np.asarray(offset or (0,) * found.shape[1], dtype=np.intp)
    return found.tolist(), shifted.tolist()


async def _read_values(source: ManifestStore, name: str) -> Any:
    array = await zarr.api.asynchronous.open_array(store=source, path=name, zarr_format=3)
    return await array.getitem(...)
