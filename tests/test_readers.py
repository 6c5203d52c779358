"""`ObjectReader` over local files and the S3 server behaves like a local file; `translate_io_error`
classifies real obstore failures."""

from __future__ import annotations

import http.server
import io
import random
import socket
import socketserver
import threading
from typing import TYPE_CHECKING, Any, get_args

import obstore
import pytest
from obstore.exceptions import BaseError
from obstore.store import LocalStore
from s3_server import s3_store_for

from vcube.errors import SourceNotFoundError, TransientIOError, VcubeError
from vcube.readers import ObjectReader, ReadOptions, ReadStats, ReadStrategy, translate_io_error

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from obstore.store import ObjectStore
    from s3_server import S3Server

SIZE = 50_003  # not a multiple of any block size used here
DATA = random.Random(0).randbytes(SIZE)
STRATEGIES: tuple[ReadStrategy, ...] = get_args(ReadStrategy)
BACKENDS = ["local", pytest.param("s3", marks=pytest.mark.s3)]


class Source:
    """One object, reachable as a local file and through an obstore store."""

    def __init__(self, local: Path, store: ObjectStore, path: str, url: str) -> None:
        self.local, self.store, self.path, self.url = local, store, path, url

    def reader(self, **options: Any) -> ObjectReader:
        return ObjectReader(self.store, self.path, url=self.url, options=ReadOptions(**options))

    def missing(self) -> tuple[ObjectStore, str, str]:
        return self.store, self.path + ".missing", self.url + ".missing"


@pytest.fixture(params=BACKENDS)
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Source:
    local = tmp_path / "data.bin"
    local.write_bytes(DATA)
    if request.param == "local":
        return Source(local, LocalStore(tmp_path), "data.bin", local.as_uri())
    server: S3Server = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    url = server.upload(local, bucket, "dir/data.bin")
    return Source(local, server.store(bucket), "dir/data.bin", url)


# -- file semantics ------------------------------------------------------------------------------


def random_operations(seed: int, count: int = 150) -> Iterator[tuple[str, int, int]]:
    rng = random.Random(seed)
    for _ in range(count):
        op = rng.choice(["seek", "seek", "read", "read", "readinto", "tell"])
        whence = rng.choice([io.SEEK_SET, io.SEEK_CUR, io.SEEK_END])
        yield op, rng.randrange(-3000, SIZE + 3000), whence


def apply(file: io.RawIOBase, op: str, n: int, whence: int) -> object:
    if op == "seek":
        base = {io.SEEK_SET: 0, io.SEEK_CUR: file.tell(), io.SEEK_END: SIZE}[whence]
        # Not before the start: a file raises OSError there, ObjectReader goes to 0.
        return file.seek(max(n, -base), whence)
    if op == "read":
        return file.read(abs(n) % 9000)
    if op == "readinto":
        buffer = bytearray(abs(n) % 9000)
        return file.readinto(buffer), bytes(buffer)
    return file.tell()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reads_like_a_local_file(source: Source, strategy: ReadStrategy) -> None:
    reader = source.reader(strategy=strategy, block_size=4096, max_blocks=4)
    with open(source.local, "rb", buffering=0) as expected, reader:
        assert (reader.readable(), reader.seekable()) == (True, True)
        for op, n, whence in random_operations(seed=len(strategy)):
            assert apply(reader, op, n, whence) == apply(expected, op, n, whence), (op, n, whence)
        assert reader.seek(SIZE - 10) == expected.seek(SIZE - 10)
        assert reader.read() == expected.read()
        assert reader.read(5) == expected.read(5) == b""
        assert reader.seek(SIZE + 100) == expected.seek(SIZE + 100)
        assert reader.read(10) == expected.read(10) == b""
        assert reader.seek(0) == 0
        assert reader.readall() == DATA
        assert reader.size == SIZE


# -- strategies and the block cache --------------------------------------------------------------


def test_block_cache_keeps_the_most_recently_used_blocks(source: Source) -> None:
    reader = source.reader(strategy="blocks", block_size=1000, max_blocks=3)
    assert reader.stats.bytes == 0  # the HEAD

    def cost(block: int, span: int = 1) -> int:
        """Blocks fetched to read inside blocks `block` to `block + span - 1`."""
        start, fetched = block * 1000 + 10, reader.stats.bytes
        assert reader.read_range(start, span * 1000 - 20) == DATA[start : start + span * 1000 - 20]
        return (reader.stats.bytes - fetched) // 1000

    assert [cost(b) for b in (0, 1, 2)] == [1, 1, 1]
    assert cost(0) == 0  # cached, and now the most recently used
    assert cost(3) == 1  # evicts block 1, the least recently used
    assert [cost(0), cost(2), cost(3)] == [0, 0, 0]
    assert cost(1) == 1
    # One read wider than the cache still returns every byte; it fetches only missing blocks.
    assert cost(0, span=6) == 3  # 0, 1 and 3 are cached
    assert [cost(b) for b in (3, 4, 5)] == [0, 0, 0]
    assert cost(0) == 1


def test_whole_reads_the_object_once(source: Source) -> None:
    reader = source.reader(strategy="whole", max_whole_file=SIZE)
    assert (reader.stats.requests, reader.stats.bytes) == (2, SIZE)  # HEAD, GET
    for start in range(0, SIZE, 7919):
        assert reader.read_range(start, 5000) == DATA[start : start + 5000]
    assert (reader.stats.requests, reader.stats.bytes) == (2, SIZE)


def test_whole_refuses_objects_above_max_whole_file(source: Source) -> None:
    with pytest.raises(VcubeError, match="max_whole_file") as info:
        source.reader(strategy="whole", max_whole_file=SIZE - 1)
    assert source.url in str(info.value)
    assert not isinstance(info.value, TransientIOError)


@pytest.mark.s3
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_stats_count_the_requests_the_server_answers(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, strategy: ReadStrategy
) -> None:
    local = tmp_path / "data.bin"
    local.write_bytes(DATA)
    url = s3_server.upload(local, s3_bucket, "data.bin")
    before = len(s3_server.requests(s3_bucket))
    stats = ReadStats()
    options = ReadOptions(strategy=strategy, block_size=8192)
    reader = ObjectReader(
        s3_server.store(s3_bucket), "data.bin", url=url, options=options, stats=stats
    )
    for start in range(0, SIZE, 5000):  # one block at a time: no two blocks in one request
        assert reader.read_range(start, 100) == DATA[start : start + 100]
    answered = [(r.method, r.status) for r in s3_server.requests(s3_bucket)[before:]]
    assert answered[0] == ("HEAD", 200)
    assert stats.requests == len(answered)
    assert stats.urls == {url}
    expected_gets = {"ranges": 11, "blocks": 7, "whole": 1}[strategy]
    assert [m for m, _ in answered[1:]] == ["GET"] * expected_gets


@pytest.mark.s3
def test_stats_count_one_request_for_a_read_across_blocks(
    s3_server: S3Server, s3_bucket: str
) -> None:
    store = s3_server.store(s3_bucket)
    obstore.put(store, "data.bin", DATA)
    before = len(s3_server.requests(s3_bucket))
    reader = ObjectReader(
        store, "data.bin", url="s3://b/data.bin", options=ReadOptions(block_size=1000)
    )
    assert reader.read_range(0, 5500) == DATA[:5500]
    answered = [r.method for r in s3_server.requests(s3_bucket)[before:]]
    assert answered == ["HEAD", "GET"]
    assert reader.stats.requests == len(answered)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_missing_object_raises_source_not_found_naming_the_url(
    source: Source, strategy: ReadStrategy
) -> None:
    store, path, url = source.missing()
    with pytest.raises(SourceNotFoundError) as info:
        ObjectReader(store, path, url=url, options=ReadOptions(strategy=strategy))
    assert url in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


# -- error classification ------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _SlowDown(http.server.BaseHTTPRequestHandler):
    """Answers every request as throttled S3 does: 503 SlowDown."""

    def _answer(self) -> None:
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HangUp(socketserver.BaseRequestHandler):
    """Reads the request, then closes the connection without an answer."""

    def handle(self) -> None:
        self.request.recv(65536)


class _ThreadingTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True


@pytest.fixture(scope="module")
def misbehaving() -> Iterator[dict[str, str]]:
    """Endpoints of real servers that fail: 503 SlowDown, or hang up without an answer."""
    servers: list[socketserver.TCPServer] = [
        http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowDown),  # daemon_threads
        _ThreadingTCPServer(("127.0.0.1", 0), _HangUp),
    ]
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield {
        name: f"http://127.0.0.1:{server.server_address[1]}"
        for name, server in zip(["slow_down", "hang_up"], servers, strict=True)
    }
    for server in servers:
        server.shutdown()
        server.server_close()


def provoke(fn: Callable[[], object]) -> Exception:
    """The error obstore raises when calling `fn`."""
    try:
        fn()
    except (BaseError, OSError) as err:
        return err
    raise AssertionError("no error")


@pytest.mark.parametrize("endpoint", ["closed_port", "slow_down", "hang_up"])
def test_unreachable_or_throttling_servers_are_transient(
    endpoint: str, misbehaving: dict[str, str]
) -> None:
    url = f"s3://bucket/{endpoint}.nc"
    target = misbehaving.get(endpoint) or f"http://127.0.0.1:{closed_port()}"
    store = s3_store_for(target, "bucket", retries=False)
    err = provoke(lambda: obstore.get_range(store, "k.nc", start=0, end=10))
    assert isinstance(translate_io_error(err, url), TransientIOError)
    with pytest.raises(TransientIOError) as info:
        ObjectReader(store, "k.nc", url=url)
    assert url in str(info.value)
    assert isinstance(info.value, OSError)


@pytest.mark.s3
def test_not_found_is_source_not_found(s3_server: S3Server, s3_bucket: str) -> None:
    for bucket in (s3_bucket, s3_bucket + "-missing"):
        store = s3_server.store(bucket, retries=False)
        err = provoke(lambda: obstore.head(store, "k.nc"))  # noqa: B023 (called at once)
        translated = translate_io_error(err, f"s3://{bucket}/k.nc")
        assert isinstance(translated, SourceNotFoundError)
        assert f"s3://{bucket}/k.nc" in str(translated)


@pytest.mark.s3
def test_range_not_satisfiable_is_not_transient(s3_server: S3Server, s3_bucket: str) -> None:
    store = s3_server.store(s3_bucket, retries=False)
    obstore.put(store, "k.nc", b"0123456789")
    err = provoke(lambda: obstore.get_range(store, "k.nc", start=100, end=200))
    translated = translate_io_error(err, f"s3://{s3_bucket}/k.nc")
    assert isinstance(translated, VcubeError)
    assert not isinstance(translated, TransientIOError), translated


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (TimeoutError("read timed out"), TransientIOError),
        (ConnectionResetError("peer reset"), TransientIOError),
        (FileNotFoundError("x"), SourceNotFoundError),
        (ValueError("Invalid range requested, start: 5 end: 2"), VcubeError),
        (OSError("Is a directory"), VcubeError),
    ],
)
def test_builtin_errors_are_classified(err: Exception, expected: type[VcubeError]) -> None:
    translated = translate_io_error(err, "s3://b/k.nc")
    assert type(translated) is expected
    assert "s3://b/k.nc" in str(translated)


def test_vcube_errors_pass_through() -> None:
    err = SourceNotFoundError("s3://b/k.nc: file not found")
    assert translate_io_error(err, "s3://other") is err
