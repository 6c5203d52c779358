"""A real S3-compatible server on 127.0.0.1 for the tests (a pytest plugin, see conftest.py).

moto's `ThreadedMotoServer` listens on a port the OS picks, once per test session (so once per
pytest-xdist worker, each on its own port), and is stopped at the end of the session. Tests reach it
through obstore exactly as production code reaches S3.

The server runs in a child process, not in a thread of the test process: h5py holds its global
lock while it reads through a file object (vcube's `ObjectReader`), and a garbage collection in a
server thread that finalizes an h5py object waits for that lock, so the request h5py waits for is
never answered (seen as 30 s stalls). The child logs every request it answers to a file before it
answers, so `S3Server.requests` counts the requests that really reached the server.

Fixtures: `s3_server` (session), `s3_bucket` (a fresh, empty bucket per test), `s3_store` (a
factory `s3_store(bucket, *, prefix=None, retries=True) -> S3Store`) and `upload`
(`upload(path, bucket, key) -> "s3://bucket/key"`). Every test that uses them is marked `s3`.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import re
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

import obstore
import pytest
from obstore.store import S3Store

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from multiprocessing.connection import Connection
    from pathlib import Path

    from obstore.store import ClientConfig, RetryConfig

__all__ = ["S3Request", "S3Server", "StoreFactory", "Uploader", "s3_store_for"]

REGION = "us-east-1"
# Test runs must not hang on a broken server: obstore's own retries are kept but bounded.
RETRIES: RetryConfig = {
    "max_retries": 3,
    "backoff": {"init_backoff": timedelta(milliseconds=20), "max_backoff": timedelta(seconds=1)},
    "retry_timeout": timedelta(seconds=10),
}
NO_RETRIES: RetryConfig = {"max_retries": 0, "retry_timeout": timedelta(seconds=5)}
TIMEOUTS: ClientConfig = {"allow_http": True, "connect_timeout": "2s", "timeout": "30s"}
START_TIMEOUT = 60.0  # seconds for the child to import moto and listen

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def s3_store_for(
    endpoint: str, bucket: str, *, prefix: str | None = None, retries: bool = True
) -> S3Store:
    """An obstore `S3Store` for `bucket` (and `prefix`) at `endpoint`: path-style requests, plain
    http, dummy keys.

    With `retries=False` obstore makes exactly one attempt per request (`max_retries=0`), so a
    transient failure reaches the caller: for tests of vcube's own, task-level retries.
    """
    return S3Store(
        bucket,
        prefix=prefix,
        endpoint=endpoint,
        region=REGION,
        access_key_id="testing",
        secret_access_key="testing",
        virtual_hosted_style_request=False,
        client_options=TIMEOUTS,
        retry_config=RETRIES if retries else NO_RETRIES,
    )


@dataclass(frozen=True, slots=True)
class S3Request:
    """One request as the server logged it: method, decoded path (`/bucket/key`) and status."""

    method: str
    path: str
    status: int

    @property
    def bucket(self) -> str:
        return self.path.lstrip("/").split("/", 1)[0]


class StoreFactory(Protocol):
    def __call__(
        self, bucket: str, *, prefix: str | None = None, retries: bool = True
    ) -> S3Store: ...


class Uploader(Protocol):
    def __call__(self, path: Path, bucket: str, key: str) -> str: ...


@dataclass(frozen=True, slots=True)
class S3Server:
    """The running server: its endpoint, stores for its buckets, and its request log."""

    endpoint: str
    log: Path

    def store(self, bucket: str, *, prefix: str | None = None, retries: bool = True) -> S3Store:
        """An obstore store for `bucket` on this server (see `s3_store_for`)."""
        return s3_store_for(self.endpoint, bucket, prefix=prefix, retries=retries)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (S3 `CreateBucket`, a plain `PUT /name`) and return its name."""
        name = name or f"vcube-{uuid.uuid4().hex[:16]}"
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200, response.status
        return name

    def upload(self, path: Path, bucket: str, key: str) -> str:
        """Upload a local file with obstore; return its `s3://bucket/key` URL."""
        obstore.put(self.store(bucket), key, path)
        return f"s3://{bucket}/{key}"

    def requests(self, bucket: str) -> list[S3Request]:
        """Requests the server has answered for `bucket`, oldest first."""
        out = []
        for line in self.log.read_text(encoding="utf-8").splitlines(keepends=True):
            if line.endswith("\n"):  # not a line being written
                method, path, status = line[:-1].split("\t")
                out.append(S3Request(method, path, int(status)))
        return [r for r in out if r.bucket == bucket]


class _RequestLog(logging.Handler):
    """Writes werkzeug's access log lines (`"GET /b/k HTTP/1.1" 206 -`) as `method path status`.

    werkzeug logs a request when it starts the response, so the line is on disk before the client
    has its answer.
    """

    def __init__(self, path: str) -> None:
        super().__init__(logging.INFO)
        self.file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if not isinstance(args, tuple) or len(args) != 3:
            return
        parts = _ANSI.sub("", str(args[0])).split(" ")
        if len(parts) >= 3 and str(args[1]).isdigit():
            path = unquote(urlsplit(" ".join(parts[1:-1])).path)
            self.file.write(f"{parts[0]}\t{path}\t{args[1]}\n")


def _serve(conn: Connection, log: str) -> None:
    """The child process: serve until the parent says stop (or goes away)."""
    from moto.server import ThreadedMotoServer  # only the child needs moto

    logger = logging.getLogger("werkzeug")
    logger.addHandler(_RequestLog(log))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        conn.send(server.get_host_and_port())
        conn.recv()
    except EOFError:
        pass
    finally:
        server.stop()


@contextlib.contextmanager
def child_server(
    target: Callable[[Connection, str], None], arg: str, *, what: str
) -> Iterator[Any]:
    """Run `target(conn, arg)` in a child process; yield the first message it sends (its address)
    and tell it to stop afterwards."""
    # spawn, not fork: the test process has threads (fork would copy their locks, held).
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    process = context.Process(target=target, args=(child_conn, arg), daemon=True)
    process.start()
    child_conn.close()  # the child's end: closed here, so a dead child reads as end of file
    try:
        if not conn.poll(START_TIMEOUT):
            raise RuntimeError(f"{what} did not start in {START_TIMEOUT} s")
        try:
            address = conn.recv()
        except EOFError:
            process.join(10)
            raise RuntimeError(f"{what} exited (code {process.exitcode})") from None
        yield address
    finally:
        with contextlib.suppress(OSError):  # the child may be gone already
            conn.send("stop")
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join()
        conn.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto S3 server on 127.0.0.1, on a free port, for the whole session (or xdist worker)."""
    log = tmp_path_factory.mktemp("s3_server") / "requests.tsv"
    log.touch()
    with child_server(_serve, str(log), what="the moto S3 server") as (host, port):
        yield S3Server(f"http://{host}:{port}", log)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket for one test."""
    return s3_server.create_bucket()


@pytest.fixture
def s3_store(s3_server: S3Server) -> StoreFactory:
    """`s3_store(bucket, *, prefix=None, retries=True)`: an obstore `S3Store` for the server."""
    return s3_server.store


@pytest.fixture
def upload(s3_server: S3Server) -> Uploader:
    """`upload(path, bucket, key) -> "s3://bucket/key"`, through obstore."""
    return s3_server.upload


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the server `s3` (so `-m "not s3"` deselects them all)."""
    for item in items:
        if "s3_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.s3)
