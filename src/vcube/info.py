"""`describe`: what a file or a persisted datacube holds, as text: variables, dimensions, chunk
grids, codecs, and the number and in-memory size of its references (`vcube info`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import zarr
from zarr.core.sync import sync

from vcube.api import open_virtual_dataset
from vcube.errors import VcubeError
from vcube.manifests import ManifestArray
from vcube.stores import ObjectStoreOptions, open_repository, registry_for, repository_exists

if TYPE_CHECKING:
    import xarray as xr

    from vcube.registry import ObjectStoreRegistry

__all__ = ["describe"]


def describe(
    target: str,
    *,
    registry: ObjectStoreRegistry | None = None,
    options: ObjectStoreOptions | None = None,
    branch: str = "main",
) -> str:
    """Describe a file (any format vcube reads, Kerchunk references included) or an Icechunk
    repository."""
    options = options or ObjectStoreOptions()
    if repository_exists(target, options):
        return _describe_repository(target, options, branch)
    registry = registry or registry_for([target], options)
    return _describe_virtual(open_virtual_dataset(target, registry, loadable_variables=[]))


def _describe_virtual(ds: xr.Dataset) -> str:
    lines = [str(ds)]
    for name, var in ds.variables.items():
        data = var.data
        if isinstance(data, ManifestArray):
            lines.append(
                f"{name}: chunks={data.chunks} codecs=[{_codecs(data.codecs)}] "
                f"references={data.manifest.nrefs}"
            )
    lines.append(f"references: {ds.vcube.nrefs}, in memory: {ds.vcube.nbytes:,} bytes")
    return "\n".join(lines)


def _describe_repository(target: str, options: ObjectStoreOptions, branch: str) -> str:
    repo = open_repository(target, options)
    branches = sorted(repo.list_branches())
    if branch not in branches:
        raise VcubeError(f"{target}: no branch {branch!r} (branches: {', '.join(branches)})")
    snapshot = next(iter(repo.ancestry(branch=branch)))
    session = repo.readonly_session(branch)
    root = zarr.open_group(session.store, mode="r", zarr_format=3)
    when = f"{snapshot.written_at:%Y-%m-%d %H:%M:%S}"
    head = f"Icechunk repository {target}, branch {branch}: {snapshot.id} ({when} UTC)"
    lines = [f"{head} {snapshot.message!r}"]
    total = 0
    for path, array in sorted(root.arrays(), key=lambda item: item[0]):
        stored = sync(_count_chunks(session.store, path))
        total += stored
        dims = ", ".join(f"{d}: {n}" for d, n in zip(_dims(array), array.shape, strict=True))
        lines.append(
            f"{path} ({dims}) {array.dtype}: chunks={array.chunks} "
            f"codecs=[{_codecs(array.metadata.codecs)}] stored chunks={stored}"  # type: ignore[union-attr]
        )
    lines.append(f"stored chunks: {total} (virtual references and native chunks)")
    return "\n".join(lines)


def _dims(array: zarr.Array[Any]) -> list[str]:
    names = getattr(array.metadata, "dimension_names", None)
    return [str(n) for n in names] if names else [f"dim_{i}" for i in range(array.ndim)]


def _codecs(codecs: Any) -> str:
    return ", ".join(c.to_dict()["name"] for c in codecs)


async def _count_chunks(store: Any, path: str) -> int:
    """Chunk keys stored for the array at `path` (Icechunk lists only whole nodes)."""
    return sum([1 async for key in store.list_prefix(path) if not key.endswith("zarr.json")])
