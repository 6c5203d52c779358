"""A fault-injecting HTTP proxy in front of the S3 server, for tests of vcube's task-level retries
(a pytest plugin: `pytest_plugins = ["faults"]` in a test module).

The proxy is a small threaded HTTP server on 127.0.0.1 (a free port) that forwards every request to
the moto server (method, path, query, headers and body; the response is streamed back) except
`times` requests for an object key given to `FaultProxy.fail` (the first ones, or those after the
first `after`), which fail in one of these ways:

- ``"503"``: HTTP 503 with S3's `SlowDown` XML body (throttling);
- ``"500"``: HTTP 500 with S3's `InternalError` XML body;
- ``"reset"``: the real response's status line, headers and half of its body, then the connection
  is closed (a connection lost mid-body). A response without a body (HEAD) is dropped instead:
  the connection is closed before any byte of the response is sent.

It counts the requests it receives per object key (the path after the bucket; `""` for requests on
the bucket itself, such as listings), the faults it injected and the response body bytes it sent.

Like the S3 server, the proxy runs in a child process: in a thread of the test process, a garbage
collection finalizing an h5py object would wait for the lock h5py holds while it waits for the
proxy's answer. Tests set faults and read counts over HTTP (`/__faults__/...`, a path no bucket can
have), so the counts are the proxy's own, whatever process made the requests (a dask worker, a
lithops function).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import sys
import threading
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

import pytest
from s3_server import child_server

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator
    from multiprocessing.connection import Connection

    from s3_server import S3Server

__all__ = ["FaultMode", "FaultProxy", "KeyCount", "fault_proxy", "run_proxy", "serve_proxy"]

FaultMode = Literal["503", "500", "reset"]
CONTROL = "/__faults__/"
UPSTREAM_TIMEOUT = 30.0  # seconds for the moto server to answer one request
IDLE_TIMEOUT = 60.0  # an idle client connection is closed after this many seconds
BLOCK = 64 * 2**10
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
ERROR_BODIES = {
    "503": (
        503,
        "Slow Down",
        "SlowDown",
        "Please reduce your request rate.",
    ),
    "500": (
        500,
        "Internal Server Error",
        "InternalError",
        "We encountered an internal error. Please try again.",
    ),
}


@dataclass(frozen=True, slots=True)
class KeyCount:
    """Requests the proxy received for one object key, how many of them it made fail, and the
    response body bytes it sent back for them."""

    requests: int = 0
    failed: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class FaultProxy:
    """The running proxy: its endpoint (for `s3_store_for`) and its controls."""

    endpoint: str

    def fail(
        self,
        key: str,
        times: int,
        mode: FaultMode = "503",
        *,
        methods: Collection[str] | None = None,
        after: int = 0,
    ) -> None:
        """Make `times` requests for object `key` (e.g. `"data/a.nc"`) fail with `mode`: the first
        ones, or those that follow the next `after` matching requests (let through); only
        requests with one of `methods` (e.g. `{"GET"}`) match when given. Replaces an earlier rule
        for the same key."""
        rule = {
            "key": key,
            "times": times,
            "mode": mode,
            "methods": sorted(methods or ()),
            "after": after,
        }
        self._control("rules", rule)

    def counts(self) -> dict[str, KeyCount]:
        """Requests received and faults injected, per object key."""
        raw = self._control("counts")
        return {key: KeyCount(**value) for key, value in raw.items()}

    def requests(self, key: str) -> int:
        """Requests received for object `key`."""
        return self.counts().get(key, KeyCount()).requests

    def failed(self, key: str) -> int:
        """Faults injected into requests for object `key`."""
        return self.counts().get(key, KeyCount()).failed

    def clear(self) -> None:
        """Forget every rule and count."""
        self._control("clear", {})

    def _control(self, verb: str, payload: object | None = None) -> dict[str, dict[str, int]]:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.endpoint}{CONTROL}{verb}", data=data, method="GET" if data is None else "POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, dict[str, int]] = json.loads(response.read() or b"{}")
            return result


# --------------------------------------------------------------------------- the child process


@dataclass(slots=True)
class _Rule:
    remaining: int
    mode: FaultMode
    methods: frozenset[str]
    skip: int  # matching requests still to let through before failing


class _State:
    """Rules and counts, shared by the handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: dict[str, _Rule] = {}
        self.requests: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.connections: set[socket.socket] = set()

    def admit(self, method: str, key: str) -> FaultMode | None:
        """Count a request; the fault to inject into it, if any."""
        with self.lock:
            self.requests[key] = self.requests.get(key, 0) + 1
            rule = self.rules.get(key)
            if rule is None or rule.remaining <= 0 or (rule.methods and method not in rule.methods):
                return None
            if rule.skip > 0:
                rule.skip -= 1
                return None
            rule.remaining -= 1
            self.failed[key] = self.failed.get(key, 0) + 1
            return rule.mode

    def sent(self, key: str, nbytes: int) -> None:
        with self.lock:
            self.bytes[key] = self.bytes.get(key, 0) + nbytes

    def counts(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {
                key: {
                    "requests": n,
                    "failed": self.failed.get(key, 0),
                    "bytes": self.bytes.get(key, 0),
                }
                for key, n in self.requests.items()
            }


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler stuck on a client never blocks the shutdown

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.state = _State()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that went away (a cut response, a test that ended)."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Unblock every handler waiting on a client (at shutdown)."""
        with self.state.lock:
            for sock in self.state.connections:
                with contextlib.suppress(OSError):
                    sock.shutdown(2)  # SHUT_RDWR


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect
    timeout = IDLE_TIMEOUT
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Status line, headers and body leave in separate writes: without this, Nagle's algorithm
        # and delayed ACKs add 40 ms to every small response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.state.lock:
            self.server.state.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.state.lock:
            self.server.state.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the tests read the counts instead

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _handle(self) -> None:
        path = unquote(urlsplit(self.path).path)
        if path.startswith(CONTROL):
            self._control(path.removeprefix(CONTROL))
            return
        body = self._request_body()
        if body is None:
            return
        key = _object_key(path)
        fault = self.server.state.admit(self.command, key)
        if fault in ERROR_BODIES:
            self._error(*ERROR_BODIES[fault], resource=path)
            return
        self._forward(body, key, cut=fault == "reset")

    def _request_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.send_error(501, "chunked request bodies are not supported by the fault proxy")
            return None
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes, key: str, *, cut: bool) -> None:
        """Send the request to the S3 server and stream its response back; with `cut`, stop
        half-way through the body and close the connection."""
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=UPSTREAM_TIMEOUT)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.endheaders(body or None)
            response = conn.getresponse()
            length = response.getheader("Content-Length")
            has_body = self.command != "HEAD" and response.status not in (204, 304)
            if cut and (not has_body or not length or int(length) < 2):
                self._drop()
                return
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            if has_body and length is None:
                self.send_header("Connection", "close")  # the body ends when the connection does
                self.close_connection = True
            self.end_headers()
            if not has_body:
                return
            limit = int(length) // 2 if cut and length is not None else None
            self.server.state.sent(key, self._stream(response, limit))
            if cut:
                self._drop()
        finally:
            conn.close()

    def _stream(self, response: http.client.HTTPResponse, limit: int | None) -> int:
        sent = 0
        while limit is None or sent < limit:
            block = response.read(BLOCK if limit is None else min(BLOCK, limit - sent))
            if not block:
                break
            self.wfile.write(block)
            sent += len(block)
        self.wfile.flush()
        return sent

    def _drop(self) -> None:
        """Close the client connection now (whatever part of a response was sent)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(2)  # SHUT_RDWR

    def _error(self, status: int, reason: str, code: str, message: str, *, resource: str) -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<Resource>{resource}</Resource><RequestId>fault-proxy</RequestId></Error>"
        ).encode()
        self.send_response_only(status, reason)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _control(self, verb: str) -> None:
        state = self.server.state
        payload = json.loads(self._request_body() or b"{}")
        if verb == "rules":
            with state.lock:
                state.rules[payload["key"]] = _Rule(
                    payload["times"],
                    payload["mode"],
                    frozenset(payload["methods"]),
                    payload["after"],
                )
        elif verb == "clear":
            with state.lock:
                state.rules.clear()
                state.requests.clear()
                state.failed.clear()
                state.bytes.clear()
        elif verb != "counts":
            self.send_error(404, f"unknown control {verb!r}")
            return
        body = json.dumps(state.counts()).encode()
        self.send_response_only(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _object_key(path: str) -> str:
    """`/bucket/some/key.nc` -> `some/key.nc`; `""` for the bucket itself."""
    parts = path.lstrip("/").split("/", 1)
    return parts[1] if len(parts) == 2 else ""


@contextlib.contextmanager
def serve_proxy(upstream: str) -> Iterator[int]:
    """Serve the proxy from a thread of this process while in the block; yields its port. (The
    fixture runs it in a child process; benchmarks, with no h5py in that process, may not.)"""
    server = _Server(upstream)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(10)


def _serve(conn: Connection, upstream: str) -> None:
    """The child process: serve until the parent says stop (or goes away)."""
    with serve_proxy(upstream) as port:
        try:
            conn.send(port)
            conn.recv()
        except EOFError:
            pass


@contextlib.contextmanager
def run_proxy(upstream: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of `upstream` (e.g. `http://127.0.0.1:5000`) while in the block."""
    with child_server(_serve, upstream, what="the fault proxy") as port:
        yield FaultProxy(f"http://127.0.0.1:{port}")


@pytest.fixture
def fault_proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    """A fault proxy in front of the S3 server, for one test; no faults until `fail` is called."""
    with run_proxy(s3_server.endpoint) as proxy:
        yield proxy
