"""`ingest`: virtualize many files into an Icechunk repository batch by batch, one commit per
batch, so that a run can be stopped at any point and run again to finish.

Every commit records the source URLs it holds in its metadata (`vcube_sources`). A run first
collects those from the branch's history and skips every file already committed, so rerunning
after a crash, a kill, or when new files arrived appends only what is missing. A batch is
committed whole or not at all. Batches are appended in input order along the append
dimension, and a batch whose coordinates would not come after the stored ones is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import xarray as xr

from vcube.api import open_virtual_mfdataset
from vcube.errors import IncompatibleArraysError, NothingVirtualizedError, VcubeError
from vcube.parallel import get_executor
from vcube.progress import NullCallback, TqdmCallback
from vcube.registry import expand_urls, local_path, normalize_url
from vcube.stores import ObjectStoreOptions, open_repository, registry_for
from vcube.writers.icechunk import to_icechunk

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import icechunk as ic

    from vcube.mapreduce import Outcome
    from vcube.parallel import Parallel, TaskFailure
    from vcube.parsers import Parser
    from vcube.progress import Callback
    from vcube.registry import ObjectStoreRegistry

__all__ = ["MAX_REFS_PER_COMMIT", "SOURCES_KEY", "IngestReport", "committed_sources", "ingest"]

SOURCES_KEY: Final = "vcube_sources"
# Icechunk warns past 50 million chunk references in one commit and cannot write many more
# (icechunk/src/change_set.rs, NUM_CHUNKS_LIMIT); stay clearly below it.
MAX_REFS_PER_COMMIT: Final = 40_000_000
DEFAULT_SPLIT: Final = 1_000  # chunks along the append dimension per manifest
CONFLICT_RETRIES: Final = 10


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What a run did: files found, skipped (already in the repository) and committed, the
    commits made, references written, and the files that failed."""

    repo: str
    branch: str
    files: int
    skipped: int
    ingested: int
    commits: tuple[str, ...]
    references: int
    seconds: float
    failures: tuple[TaskFailure, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.failures


def committed_sources(repo: ic.Repository, branch: str = "main") -> list[str]:
    """Source URLs committed to `branch` by `ingest`, oldest first."""
    sources: list[str] = []
    for snapshot in repo.ancestry(branch=branch):
        sources[:0] = snapshot.metadata.get(SOURCES_KEY, ())
    return sources


def ingest(
    urls: str | Path | Sequence[str | Path],
    repo: str,
    *,
    append_dim: str,
    batch_size: int = 100,
    branch: str = "main",
    registry: ObjectStoreRegistry | None = None,
    options: ObjectStoreOptions | None = None,
    parser: Parser | None = None,
    parallel: Parallel = False,
    max_workers: int | None = None,
    retries: int = 3,
    on_error: Literal["raise", "skip"] = "raise",
    progress: bool | Callback = False,
    split_size: int = DEFAULT_SPLIT,
    **open_kwargs: Any,
) -> IngestReport:
    """Virtualize `urls` into the Icechunk repository `repo`, one commit per batch of files.

    Parameters
    ----------
    urls
        Paths, URLs or globs, appended in this order (globs sorted).
    repo
        A local path or ``s3://bucket/prefix``; created when it does not exist, with a virtual
        chunk container for every bucket or directory the inputs live in and manifests split
        every `split_size` chunks along `append_dim`.
    append_dim
        The dimension along which files follow each other (e.g. ``"time"``).
    batch_size
        Files per commit; smaller when a batch would exceed `MAX_REFS_PER_COMMIT` references.
    options
        Object-store endpoint, region and anonymous access, for inputs and the repository.
    on_error
        "raise", or "skip" files that fail (they are reported and left uncommitted; a later
        run retries them only if they still come after everything committed).
    **open_kwargs
        Passed to `open_virtual_mfdataset` (`loadable_variables`, `preprocess`, ...).
    """
    start = time.perf_counter()
    options = options or ObjectStoreOptions()
    patterns = [str(urls)] if isinstance(urls, str | Path) else [str(u) for u in urls]
    registry = registry or registry_for(patterns, options)
    files = expand_urls(patterns, registry)
    repository = open_repository(
        repo, options, sources=files, config=_new_repo_config(append_dim, split_size)
    )
    done = set(committed_sources(repository, branch))
    todo = [f for f in files if f not in done]
    bar = _progress(progress)
    executor, owned = get_executor(parallel, max_workers=max_workers)
    commits: list[str] = []
    failures: list[TaskFailure] = []
    references = ingested = 0
    bar.on_start(len(todo))
    try:
        for batch in _batches(todo, batch_size):
            try:
                ds = open_virtual_mfdataset(
                    batch,
                    registry,
                    parser,
                    combine="nested",
                    concat_dim=append_dim,
                    parallel=executor,
                    retries=retries,
                    on_error=on_error,
                    progress=_Forward(bar),
                    **open_kwargs,
                )
            except NothingVirtualizedError as err:
                failures += err.failures
                continue
            report = ds.vcube.report
            failed = list(report.failures) if report else []
            failures += failed
            succeeded = [u for u in batch if u not in {f.url for f in failed}]
            for part, sources in _within_limit(ds, succeeded, append_dim):
                snapshot = _commit(repository, branch, part, sources, append_dim, repo)
                if snapshot is not None:
                    commits.append(snapshot)
                    ingested += len(sources)
                    references += part.vcube.nrefs
    finally:
        bar.on_end()
        if owned:
            executor.shutdown()
    return IngestReport(
        repo=repo,
        branch=branch,
        files=len(files),
        skipped=len(files) - len(todo),
        ingested=ingested,
        commits=tuple(commits),
        references=references,
        seconds=time.perf_counter() - start,
        failures=tuple(failures),
    )


def _new_repo_config(append_dim: str, split_size: int) -> ic.RepositoryConfig:
    import icechunk as ic

    config = ic.RepositoryConfig.default()
    split: dict[Any, int] = {ic.ManifestSplitDimCondition.DimensionName(append_dim): split_size}
    config.manifest = ic.ManifestConfig(
        splitting=ic.ManifestSplittingConfig.from_dict(
            {ic.ManifestSplitCondition.AnyArray(): split}
        )
    )
    return config


def _batches(files: list[str], size: int) -> Iterator[list[str]]:
    if size < 1:
        raise VcubeError(f"batch size must be at least 1, not {size}")
    for batch in itertools.batched(files, size):
        yield list(batch)


def _within_limit(
    ds: xr.Dataset, sources: list[str], append_dim: str
) -> Iterator[tuple[xr.Dataset, list[str]]]:
    """The batch, or pieces of it along `append_dim` (whole files each) small enough for one
    Icechunk commit."""
    refs = ds.vcube.nrefs
    if refs <= MAX_REFS_PER_COMMIT or len(sources) == 1:
        yield ds, sources
        return
    per_file = ds.sizes[append_dim] // len(sources)
    if per_file * len(sources) != ds.sizes[append_dim]:
        raise VcubeError(
            f"a batch of {len(sources)} files has {refs:,} references, over Icechunk's limit "
            f"of {MAX_REFS_PER_COMMIT:,} per commit; use a smaller batch size"
        )
    files_per_part = max(1, len(sources) * MAX_REFS_PER_COMMIT // refs)
    for first in range(0, len(sources), files_per_part):
        part = slice(first * per_file, (first + files_per_part) * per_file)
        yield ds.isel({append_dim: part}), sources[first : first + files_per_part]


def _commit(
    repo: ic.Repository,
    branch: str,
    ds: xr.Dataset,
    sources: list[str],
    append_dim: str,
    location: str,
) -> str | None:
    """Append `ds` and commit it with its sources; None when another run committed them."""
    import icechunk as ic

    for _ in range(CONFLICT_RETRIES):
        with _local_lock(location):
            done = set(committed_sources(repo, branch))
            if all(s in done for s in sources):
                return None  # a concurrent run committed this batch
            if any(s in done for s in sources):
                raise VcubeError(
                    f"{location}: another run committed part of this batch "
                    f"({', '.join(s for s in sources if s in done)}); run again to continue"
                )
            session = repo.writable_session(branch)
            _check_order(session.store, ds, append_dim, sources, location)
            to_icechunk(ds, session.store, append_dim=append_dim)
            message = f"vcube ingest: {len(sources)} files, {sources[0]} .. {sources[-1]}"
            try:
                snapshot: str = session.commit(
                    message, metadata={SOURCES_KEY: sources, "vcube_append_dim": append_dim}
                )
            except ic.ConflictError:
                continue  # the branch moved: look again at what it holds
            return snapshot
    raise VcubeError(f"{location}: branch {branch!r} kept changing under this run; try again")


def _check_order(
    store: Any, ds: xr.Dataset, append_dim: str, sources: list[str], location: str
) -> None:
    """The batch's coordinates along `append_dim` increase, and come after the stored ones."""
    if append_dim not in ds.coords:
        return
    new = np.asarray(ds[append_dim].values)
    if new.size > 1 and not bool(np.all(new[1:] > new[:-1])):
        raise IncompatibleArraysError(
            f"the {append_dim!r} values of files {sources[0]} .. {sources[-1]} do not increase "
            f"in the order given; sort the inputs along {append_dim!r}"
        )
    try:
        stored = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None)
    except (FileNotFoundError, KeyError, ValueError):
        return  # nothing stored yet
    if append_dim not in stored.coords or stored.sizes[append_dim] == 0 or new.size == 0:
        return
    last = stored[append_dim].values[-1]
    if not bool(new[0] > last):
        raise IncompatibleArraysError(
            f"{sources[0]}: its {append_dim} {new[0]} does not come after the last {append_dim} "
            f"in {location} ({last}); files can only be appended after what is stored"
        )


@contextlib.contextmanager
def _local_lock(location: str) -> Iterator[None]:
    """Serialize commits of concurrent runs on a local repository: Icechunk's local-filesystem
    storage does not make concurrent commits safe (object stores do, with conditional writes)."""
    path = local_path(normalize_url(location))
    if path is None:
        yield
        return
    with Path(path, ".vcube-ingest.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _progress(progress: bool | Callback) -> Callback:
    if progress is True:
        return TqdmCallback(description="ingesting")
    if progress is False:
        return NullCallback()
    return progress


@dataclass(frozen=True, slots=True)
class _Forward:
    """One bar across all batches: each batch's map reports its tasks, not its start and end."""

    target: Callback

    def on_start(self, total: int) -> None:
        pass

    def on_task_end(self, outcome: Outcome) -> None:
        self.target.on_task_end(outcome)

    def on_end(self) -> None:
        pass
