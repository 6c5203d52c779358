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
from vcube.progress import TqdmCallback, make_callback
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

__all__ = [
    "MAX_REFS_PER_COMMIT",
    "REPLACES_KEY",
    "SOURCES_KEY",
    "IngestReport",
    "committed_sources",
    "ingest",
]

SOURCES_KEY: Final = "vcube_sources"
# A commit that replaced the whole group: the sources of earlier commits are gone.
REPLACES_KEY: Final = "vcube_replaces"
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
    """Source URLs that `branch` holds, oldest first: those of the commits since the last one
    that replaced the whole group (`vcube virtualize`), that one included."""
    return _History(repo, branch).sources


class _History:
    """The sources a branch holds, brought up to date by reading only the newer commits."""

    def __init__(self, repo: ic.Repository, branch: str) -> None:
        self.repo, self.branch = repo, branch
        self.tip: str | None = None
        self.sources: list[str] = []
        self.refresh()

    def refresh(self) -> set[str]:
        newer: list[list[str]] = []
        replaced = False
        tip = None
        for snapshot in self.repo.ancestry(branch=self.branch):
            tip = tip or snapshot.id
            if snapshot.id == self.tip:
                break
            newer.append(list(snapshot.metadata.get(SOURCES_KEY, ())))
            if snapshot.metadata.get(REPLACES_KEY):
                replaced = True
                break
        if replaced:
            self.sources = []
        self.sources += [s for batch in reversed(newer) for s in batch]
        self.tip = tip
        return set(self.sources)


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
    _ensure_branch(repository, branch, repo)
    history = _History(repository, branch)
    done = set(history.sources)
    last = max((i for i, f in enumerate(files) if f in done), default=-1)
    failures: list[TaskFailure] = [
        _stranded(f, repo) for f in files[: max(last, 0)] if f not in done
    ]
    if failures and on_error == "raise":
        raise IncompatibleArraysError(failures[0].message)
    todo = [f for f in files[last + 1 :] if f not in done]
    bar = _progress(progress)
    executor, owned = get_executor(parallel, max_workers=max_workers)
    commits: list[str] = []
    references = ingested = 0
    bar.on_start(len(todo))
    queue = list(_batches(todo, batch_size))
    try:
        while queue:
            batch = queue.pop(0)
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
            except VcubeError:
                raise
            except ValueError as err:  # xarray cannot combine them
                raise IncompatibleArraysError(
                    f"files {batch[0]} .. {batch[-1]} cannot be joined along {append_dim!r}: {err}"
                ) from err
            if ds.vcube.nrefs > MAX_REFS_PER_COMMIT and len(batch) > 1:
                half = len(batch) // 2  # too many references for one commit: two smaller ones
                queue[:0] = [batch[:half], batch[half:]]
                continue
            report = ds.vcube.report
            failed = list(report.failures) if report else []
            failures += failed
            sources = [u for u in batch if u not in {f.url for f in failed}]
            snapshot = _commit(repository, history, ds, sources, append_dim, repo)
            if snapshot is not None:
                commits.append(snapshot)
                ingested += len(sources)
                references += ds.vcube.nrefs
    finally:
        bar.on_end()
        if owned:
            executor.shutdown()
    return IngestReport(
        repo=repo,
        branch=branch,
        files=len(files),
        skipped=sum(f in done for f in files),
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


def _stranded(url: str, location: str) -> TaskFailure:
    """A file left out of an earlier run that now comes before committed files."""
    from vcube.parallel import TaskFailure

    message = (
        f"{url} comes before files already committed to {location}, so it cannot be appended "
        f"in order (an earlier run failed on it or skipped it); ingest it into a new "
        f"repository, or write it with to_icechunk(region=...)"
    )
    return TaskFailure(url, "IncompatibleArraysError", message, 0)


def _ensure_branch(repo: ic.Repository, branch: str, location: str) -> None:
    """`branch`, created from `main`'s tip when the repository does not have it yet."""
    branches = repo.list_branches()
    if branch in branches:
        return
    if "main" not in branches:
        raise VcubeError(f"{location}: no branch {branch!r} and no 'main' to start it from")
    repo.create_branch(branch, repo.lookup_branch("main"))


def _commit(
    repo: ic.Repository,
    history: _History,
    ds: xr.Dataset,
    sources: list[str],
    append_dim: str,
    location: str,
) -> str | None:
    """Append `ds` and commit it with its sources; None when another run committed them."""
    import icechunk as ic

    for _ in range(CONFLICT_RETRIES):
        with _local_lock(location):
            done = history.refresh()
            if all(s in done for s in sources):
                return None  # a concurrent run committed this batch
            if any(s in done for s in sources):
                raise VcubeError(
                    f"{location}: another run committed part of this batch "
                    f"({', '.join(s for s in sources if s in done)}); run again to continue"
                )
            session = repo.writable_session(history.branch)
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
    raise VcubeError(
        f"{location}: branch {history.branch!r} kept changing under this run; try again"
    )


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
    return TqdmCallback(description="ingesting") if progress is True else make_callback(progress)


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
