"""`commit_in_batches`: write a large virtual dataset into Icechunk in a few commits, each holding
a batch of variables, so that Icechunk's memory stays bounded.

Icechunk keeps every uncommitted reference of a session in memory (a few hundred bytes each) and
builds the manifests at commit, so one commit of ten million references needs about 4.6 GB
whoever writes it. Variables are written in batches of at most `max_refs` references, each in a
session of its own and committed before the next: 1.5-1.8 GB for ten million
(`benchmarks/bench_icechunk.py`, `vcube-batched`). Folding the batches into one commit with
`Session.amend` does not help: an amend carries every change of the commit it replaces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vcube.errors import UnsupportedFeatureError
from vcube.manifests import ManifestArray
from vcube.writers.icechunk import to_icechunk

if TYPE_CHECKING:
    from collections.abc import Hashable

    import icechunk as ic
    import xarray as xr

__all__ = ["DEFAULT_MAX_REFS", "commit_in_batches"]

DEFAULT_MAX_REFS = 1_000_000


def commit_in_batches(
    ds: xr.Dataset,
    repo: ic.Repository,
    message: str,
    *,
    branch: str = "main",
    metadata: dict[str, Any] | None = None,
    first_metadata: dict[str, Any] | None = None,
    max_refs: int = DEFAULT_MAX_REFS,
    **to_icechunk_kwargs: Any,
) -> list[str]:
    """Write `ds` into `repo` on `branch`, one commit per batch of variables; the snapshot ids.

    Parameters
    ----------
    message
        Of every commit; a later one also says which variables it adds.
    metadata, first_metadata
        Of the last commit, and of the first (the same one when there is one batch): what
        describes the whole dataset belongs on the last, which exists only if all went well.
    max_refs
        References per commit (whole variables: a larger variable is a commit of its own).
    **to_icechunk_kwargs
        `group`, `mode` (of the first commit; later ones add their arrays with mode "a"),
        `last_updated_at`, `validate_containers`. Appends and regions are one commit: use
        `to_icechunk` (or `vcube ingest`, which appends in batches of files).
    """
    if to_icechunk_kwargs.get("append_dim") or to_icechunk_kwargs.get("region"):
        raise UnsupportedFeatureError(
            "commit_in_batches writes whole arrays; append (append_dim) or write a region with "
            "to_icechunk in one session, in batches of files (see `vcube ingest`)"
        )
    batches = _batches(ds, max_refs)
    snapshots = []
    for i, names in enumerate(batches):
        session = repo.writable_session(branch)
        part = ds[names] if i == 0 else ds[names].drop_vars(_written_coords(ds, batches[:i]))
        kwargs = to_icechunk_kwargs if i == 0 else {**to_icechunk_kwargs, "mode": "a"}
        to_icechunk(part, session.store, **kwargs)
        text = message if i == 0 else f"{message} (adds {', '.join(map(str, names))})"
        extra = {
            **((first_metadata or {}) if i == 0 else {}),
            **((metadata or {}) if i == len(batches) - 1 else {}),
        }
        snapshots.append(session.commit(text, metadata=extra or None))
    return snapshots


def _batches(ds: xr.Dataset, max_refs: int) -> list[list[Hashable]]:
    """Data variables in order, grouped while their references stay under `max_refs`."""
    if max_refs < 1:
        raise ValueError(f"max_refs must be at least 1, not {max_refs}")
    batches: list[list[Hashable]] = [[]]
    count = 0
    for name, var in ds.data_vars.items():
        refs = var.data.manifest.nrefs if isinstance(var.data, ManifestArray) else 0
        if batches[-1] and count + refs > max_refs:
            batches.append([])
            count = 0
        batches[-1].append(name)
        count += refs
    return batches


def _written_coords(ds: xr.Dataset, earlier: list[list[Hashable]]) -> list[Hashable]:
    """Coordinates that the earlier batches brought along (written once, by the first)."""
    return sorted({c for names in earlier for c in ds[names].coords}, key=str)
