"""The map step of `open_virtual_mfdataset`: one task per file on any executor.

Tasks are plain picklable values, so the same code runs in a thread, a process, a dask worker or
a lithops function; results come back in input order, whatever order they finish in.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from vcube.errors import VcubeError, VcubeWarning
from vcube.parallel import RetryPolicy, SerialExecutor, TaskFailure, run_with_retries
from vcube.readers import ReadStats

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from concurrent.futures import Executor, Future

    import xarray as xr

    from vcube.parsers import Parser
    from vcube.progress import Callback
    from vcube.registry import ObjectStoreRegistry

__all__ = ["READ_STATS_KEY", "MapReport", "Outcome", "PartialFailureWarning", "Task", "run_tasks"]

MAX_BATCH = 32  # files per job of a process pool

READ_STATS_KEY = "vcube_read_stats"  # where open_virtual_dataset leaves what a parse fetched

OnError = Literal["raise", "warn", "skip"]


class PartialFailureWarning(VcubeWarning):
    """Some files failed and were left out of the result (`on_error="warn"`)."""


@dataclass(frozen=True, slots=True)
class Task:
    """Virtualize one file (the index keeps the input order)."""

    index: int
    url: str
    opener: Callable[..., xr.Dataset]
    registry: ObjectStoreRegistry | None
    parser: Parser | None
    open_kwargs: dict[str, Any]
    preprocess: Callable[[xr.Dataset], xr.Dataset] | None
    retry: RetryPolicy

    def __call__(self) -> Outcome:
        ds, err, attempts = run_with_retries(self._open, self.retry)
        failure = None if err is None else _failure(self.url, err, attempts)
        stats = ds.encoding.pop(READ_STATS_KEY, None) if ds is not None else None
        return Outcome(self.index, self.url, ds, failure, attempts, stats)

    def _open(self) -> xr.Dataset:
        ds = self.opener(self.url, registry=self.registry, parser=self.parser, **self.open_kwargs)
        return self.preprocess(ds) if self.preprocess is not None else ds


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one task produced: a virtual dataset, or a failure."""

    index: int
    url: str
    dataset: xr.Dataset | None
    failure: TaskFailure | None
    attempts: int
    read_stats: ReadStats | None = None


@dataclass(slots=True)
class MapReport:
    """Files virtualized, files that failed (with why), attempts made, and what the parsers
    fetched (requests and bytes of the successful attempts)."""

    succeeded: list[str] = field(default_factory=list)
    failures: list[TaskFailure] = field(default_factory=list)
    attempts: int = 0
    read_stats: ReadStats = field(default_factory=ReadStats)
    attempts_by_url: dict[str, int] = field(default_factory=dict)

    @property
    def retried(self) -> int:
        """Attempts beyond the first, summed over all files."""
        return self.attempts - len(self.succeeded) - len(self.failures)


def _run(task: Task) -> Outcome:
    return task()


def _run_batch(tasks: Sequence[Task]) -> list[Outcome]:
    return [task() for task in tasks]


def _batch_size(executor: Executor, n: int) -> int:
    """Tasks per job: a process pool pays ~1.5 ms of the parent's time per job, which on a small
    machine takes a core from the workers, so its jobs hold several files (still at least eight
    jobs per worker, for balance and progress). Other executors run one file per job."""
    if not isinstance(executor, ProcessPoolExecutor):
        return 1
    workers = getattr(executor, "_max_workers", None) or os.cpu_count() or 1
    return max(1, min(MAX_BATCH, n // (workers * 8)))


def run_tasks(
    tasks: Sequence[Task], executor: Executor, *, on_error: OnError, progress: Callback
) -> tuple[list[xr.Dataset], MapReport]:
    """Run every task; the datasets of those that succeeded, in input order, and a report."""
    progress.on_start(len(tasks))
    outcomes: list[Outcome] = []

    def done(outcome: Outcome) -> None:
        outcomes.append(outcome)
        progress.on_task_end(outcome)
        if on_error == "raise" and outcome.failure is not None:
            _handle_failures(MapReport(failures=[outcome.failure]), on_error)  # stop now

    try:
        if isinstance(executor, SerialExecutor):
            for task in tasks:
                done(task())
        elif not getattr(executor, "supports_submit", True):
            for outcome in executor.map(_run, tasks):
                done(outcome)
        else:
            size = _batch_size(executor, len(tasks))
            batches = [tasks[i : i + size] for i in range(0, len(tasks), size)]
            futures = {executor.submit(_run_batch, batch): batch for batch in batches}
            for future in as_completed(futures):
                for outcome in _outcomes(future, futures[future]):
                    done(outcome)
    finally:
        progress.on_end()
    outcomes.sort(key=lambda o: o.index)
    report = MapReport(
        succeeded=[o.url for o in outcomes if o.failure is None],
        failures=[o.failure for o in outcomes if o.failure is not None],
        attempts=sum(o.attempts for o in outcomes),
        attempts_by_url={o.url: o.attempts for o in outcomes},
    )
    for outcome in outcomes:
        if outcome.read_stats is not None:
            report.read_stats.merge(outcome.read_stats)
    _handle_failures(report, on_error)
    return [o.dataset for o in outcomes if o.dataset is not None], report


def _handle_failures(report: MapReport, on_error: OnError) -> None:
    if not report.failures:
        return
    first = report.failures[0]
    if on_error == "raise":
        if isinstance(first.exception, VcubeError):
            raise first.exception  # already names the file
        raise VcubeError(f"{first.url}: {first.error_type}: {first.message}") from first.exception
    if on_error == "warn":
        listed = "; ".join(f"{f.url}: {f.error_type}: {f.message}" for f in report.failures[:5])
        more = f" (+{len(report.failures) - 5} more)" if len(report.failures) > 5 else ""
        warnings.warn(
            f"{len(report.failures)} of {len(report.failures) + len(report.succeeded)} files "
            f"failed and were left out: {listed}{more}",
            PartialFailureWarning,
            stacklevel=3,
        )


def _outcomes(future: Future[list[Outcome]], batch: Sequence[Task]) -> list[Outcome]:
    """The batch's outcomes, or failures naming its files when the worker itself was lost."""
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001  (a lost worker, reported with the files' URLs)
        return [Outcome(t.index, t.url, None, _failure(t.url, err, 1), 1) for t in batch]


def _failure(url: str, err: BaseException, attempts: int) -> TaskFailure:
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    return TaskFailure(url, type(err).__name__, message, attempts, exception=err)
