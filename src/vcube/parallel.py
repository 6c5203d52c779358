"""Executors for the map step, and per-task retries that work on every one of them.

Each task virtualizes one file. Retries live inside the task, so only the failed file is retried
and the retry runs where the task runs (a thread, a process, a dask worker, a lithops function).
Only transient failures are retried: timeouts, dropped connections, throttling and HTTP 5xx.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from vcube.errors import TransientIOError, VcubeError
from vcube.readers import is_transient

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

__all__ = [
    "DaskDelayedExecutor",
    "LithopsEagerFunctionExecutor",
    "Parallel",
    "RetryPolicy",
    "SerialExecutor",
    "TaskFailure",
    "get_executor",
    "is_retryable",
    "run_with_retries",
]

Parallel = (
    Literal[False, "serial", "threads", "processes", "dask", "lithops"] | type[Executor] | Executor
)


class SerialExecutor(Executor):
    """Runs each task in the calling thread, when it is submitted."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001  (handed to the caller through the future)
            future.set_exception(err)
        return future


class DaskDelayedExecutor(Executor):
    """Runs tasks with dask: on the active `dask.distributed` client when there is one (tasks
    report as they finish), otherwise with `dask.delayed` on dask's default scheduler."""

    def __init__(self) -> None:
        self._client_executor: Executor | None = None
        try:
            from distributed import get_client

            self._client_executor = get_client().get_executor()  # type: ignore[no-untyped-call]
        except (ImportError, ValueError):
            self._client_executor = None
        # Without a client, tasks run through dask.delayed all at once, in `map`.
        self.supports_submit = self._client_executor is not None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._client_executor is not None:
            return self._client_executor.submit(fn, *args, **kwargs)
        return SerialExecutor().submit(fn, *args, **kwargs)

    def map(
        self, fn: Callable[..., Any], *iterables: Iterable[Any], **kwargs: Any
    ) -> Iterator[Any]:
        if self._client_executor is not None:
            return self._client_executor.map(fn, *iterables)
        from dask import compute, delayed  # type: ignore[attr-defined]

        tasks = [delayed(fn)(*args) for args in zip(*iterables, strict=True)]
        return iter(compute(*tasks))  # type: ignore[no-untyped-call]


class LithopsEagerFunctionExecutor(Executor):
    """Runs tasks as lithops functions (serverless or lithops' localhost backend).

    Parameters
    ----------
    **config
        Passed to `lithops.FunctionExecutor` (e.g. `config=...`, `backend=...`); lithops' own
        configuration file is used otherwise.
    """

    supports_submit = False

    def __init__(self, **config: Any) -> None:
        import lithops

        config.setdefault("log_level", None)  # lithops' default logging leaks a /dev/null handle
        self._lithops = lithops.FunctionExecutor(**config)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(self._lithops.call_async(fn, args).result())
        except BaseException as err:  # noqa: BLE001  (handed to the caller through the future)
            future.set_exception(err)
        return future

    def map(
        self, fn: Callable[..., Any], *iterables: Iterable[Any], **kwargs: Any
    ) -> Iterator[Any]:
        # lithops unpacks a tuple item into the function's parameters: wrap each in a 1-tuple.
        items = [(args,) for args in zip(*iterables, strict=True)]
        futures = self._lithops.map(_star(fn), items)
        return iter(self._lithops.get_result(futures))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._lithops.clean()


@dataclass(frozen=True, slots=True)
class _star:
    fn: Callable[..., Any]

    def __call__(self, args: tuple[Any, ...]) -> Any:
        return self.fn(*args)


def get_executor(parallel: Parallel, *, max_workers: int | None = None) -> tuple[Executor, bool]:
    """The executor for `parallel`, and whether the caller owns it (and must shut it down)."""
    if isinstance(parallel, Executor):
        return parallel, False
    if parallel is False or parallel == "serial":
        return SerialExecutor(), True
    if parallel == "threads" or parallel is ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=max_workers), True
    if parallel == "processes" or parallel is ProcessPoolExecutor:
        # Forked children inherit HDF5's global state and can crash; start them fresh.
        context = multiprocessing.get_context("forkserver")
        return ProcessPoolExecutor(max_workers=max_workers, mp_context=context), True
    if parallel == "dask":
        return DaskDelayedExecutor(), True
    if parallel == "lithops":
        return LithopsEagerFunctionExecutor(), True
    if isinstance(parallel, type):
        return parallel(), True
    raise VcubeError(
        f"unknown parallel={parallel!r}: use False, 'threads', 'processes', 'dask', 'lithops', "
        f"an Executor class or an Executor instance"
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry a task up to `retries` times on transient failures, waiting `backoff * 2**n`
    seconds (capped at `max_backoff`, with full jitter) before retry n."""

    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """A task that failed for good: its URL, the error and how many attempts were made."""

    url: str
    error_type: str
    message: str
    attempts: int
    exception: BaseException | None = field(default=None, compare=False, repr=False)


def is_retryable(err: BaseException) -> bool:
    """True for failures worth retrying; deterministic ones (corrupt file, unsupported
    feature, missing file) are not."""
    if isinstance(err, TransientIOError):
        return True
    if isinstance(err, VcubeError):
        return False
    return is_transient(err)


def run_with_retries[T](
    fn: Callable[[], T], policy: RetryPolicy, *, sleep: Callable[[float], None] = time.sleep
) -> tuple[T | None, Exception | None, int]:
    """`(fn(), None, attempts)`, or `(None, last error, attempts)` once retrying stops."""
    attempt = 1
    while True:
        try:
            return fn(), None, attempt
        except Exception as err:  # noqa: BLE001  (returned: the caller reports it)
            if attempt > policy.retries or not is_retryable(err):
                return None, err, attempt
            sleep(policy.delay(attempt))
            attempt += 1
