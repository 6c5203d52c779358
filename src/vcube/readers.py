"""Read-only file objects over an obstore store, for parsers whose library wants a file (h5py).

Three strategies trade requests against memory:

- ``"ranges"``: one exact range request per read (least memory, most requests);
- ``"blocks"``: aligned read-ahead blocks of `block_size`, cached (the default);
- ``"whole"``: download the object once (fewest requests, the whole file in memory).

Every request and byte fetched is counted in a `ReadStats`.
"""

from __future__ import annotations

import io
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import obstore
from obstore.exceptions import BaseError, NotFoundError, PermissionDeniedError

from vcube.errors import SourceNotFoundError, TransientIOError, VcubeError

if TYPE_CHECKING:
    from collections.abc import Buffer, Callable

    from obstore.store import ObjectStore

__all__ = [
    "ObjectReader",
    "ReadOptions",
    "ReadStats",
    "ReadStrategy",
    "is_transient",
    "translate_io_error",
]

ReadStrategy = Literal["ranges", "blocks", "whole"]

_TRANSIENT = re.compile(
    r"timed? ?out|connection|reset|broken pipe|temporar|throttl|slow ?down|too many requests|"
    r"service unavailable|internal ?error|kind: (connect|request|timeout|interrupted)|"
    r"incompletemessage",
    re.IGNORECASE,
)
# An HTTP status, when obstore reports one, decides; only these are worth retrying.
_STATUS = re.compile(r"status(?: code)?:? *(\d{3})", re.IGNORECASE)
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# obstore's report of its own retry budget ("retry_timeout: 180s") is not a symptom.
_RETRY_REPORT = re.compile(r"^\s*(retries|max_retries|elapsed|retry_timeout)\b.*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How a parser reads a remote file's metadata.

    Parameters
    ----------
    strategy
        ``"ranges"``, ``"blocks"`` or ``"whole"``.
    block_size
        Size of a read-ahead block (``"blocks"``).
    max_blocks
        Blocks kept in the cache (``"blocks"``); memory is at most `block_size * max_blocks`.
    max_whole_file
        Refuse ``"whole"`` for larger objects.
    """

    strategy: ReadStrategy = "blocks"
    block_size: int = 2 * 2**20
    max_blocks: int = 32
    max_whole_file: int = 2 * 2**30


@dataclass(slots=True)
class ReadStats:
    """Requests made and bytes fetched."""

    requests: int = 0
    bytes: int = 0
    urls: set[str] = field(default_factory=set)

    def add(self, url: str, nbytes: int) -> None:
        self.requests += 1
        self.bytes += nbytes
        self.urls.add(url)

    def merge(self, other: ReadStats) -> None:
        self.requests += other.requests
        self.bytes += other.bytes
        self.urls |= other.urls


def translate_io_error(err: Exception, url: str) -> Exception:
    """A vcube error for an object-store failure, naming the URL; transient ones are retryable."""
    if isinstance(err, VcubeError):
        return err
    if isinstance(err, FileNotFoundError | NotFoundError):
        return SourceNotFoundError(f"{url}: file not found")
    if isinstance(err, PermissionError | PermissionDeniedError):
        return VcubeError(f"{url}: permission denied ({_first_line(err)})")
    if is_transient(err):
        return TransientIOError(f"{url}: transient I/O error: {_first_line(err)}")
    return VcubeError(f"{url}: I/O error: {_first_line(err)}")


def is_transient(err: BaseException) -> bool:
    """True for failures a retry may cure: timeouts, dropped connections, throttling, 5xx."""
    if isinstance(err, TimeoutError | ConnectionError):
        return True
    if not isinstance(err, BaseError | OSError):
        return False
    text = str(err)
    status = _STATUS.search(text)
    if status:
        return int(status.group(1)) in _TRANSIENT_STATUS
    return bool(_TRANSIENT.search(_RETRY_REPORT.sub("", text)))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class ObjectReader(io.RawIOBase):
    """A seekable, read-only file object over one object of an obstore store."""

    def __init__(
        self,
        store: ObjectStore,
        path: str,
        *,
        url: str,
        options: ReadOptions | None = None,
        stats: ReadStats | None = None,
    ) -> None:
        super().__init__()
        self.url = url
        self.options = options or ReadOptions()
        self.stats = stats if stats is not None else ReadStats()
        self._store = store
        self._path = path
        self._pos = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._whole: bytes | None = None
        self.size = int(self._call(lambda: obstore.head(store, path))["size"])
        self.stats.add(url, 0)
        if self.options.strategy == "whole":
            self._load_whole()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read_range(self._pos, len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read_range(self, start: int, length: int) -> bytes:
        """Bytes `[start, start + length)`, clipped to the end of the object."""
        stop = min(start + length, self.size)
        if stop <= start:
            return b""
        if self._whole is not None:
            return self._whole[start:stop]
        if self.options.strategy == "ranges":
            return self._fetch(start, stop)
        return self._from_blocks(start, stop)

    def cached(self, start: int, stop: int) -> bytes | None:
        """Bytes `[start, stop)` when this reader already holds them all (no request made),
        else None."""
        if stop > self.size or stop <= start:
            return None
        if self._whole is not None:
            return self._whole[start:stop]
        size = self.options.block_size
        blocks = range(start // size, (stop - 1) // size + 1)
        if self.options.strategy == "ranges" or any(b not in self._blocks for b in blocks):
            return None
        joined = b"".join(self._blocks[b] for b in blocks)
        offset = start - blocks.start * size
        return joined[offset : offset + stop - start]

    def _from_blocks(self, start: int, stop: int) -> bytes:
        size = self.options.block_size
        first, last = start // size, (stop - 1) // size
        wanted = [b for b in range(first, last + 1) if b not in self._blocks]
        for run in _runs(wanted):
            # One request per run of adjacent missing blocks, split into blocks afterwards.
            data = self._fetch(run[0] * size, min((run[-1] + 1) * size, self.size))
            for i, b in enumerate(run):
                self._blocks[b] = data[i * size : (i + 1) * size]
        parts = []
        for b in range(first, last + 1):
            self._blocks.move_to_end(b)
            parts.append(self._blocks[b])
        while len(self._blocks) > max(self.options.max_blocks, last - first + 1):
            self._blocks.popitem(last=False)
        joined = parts[0] if len(parts) == 1 else b"".join(parts)
        offset = start - first * size
        return joined[offset : offset + stop - start]

    def _fetch(self, start: int, stop: int) -> bytes:
        data = self._call(lambda: obstore.get_range(self._store, self._path, start=start, end=stop))
        self.stats.add(self.url, stop - start)
        return bytes(data)

    def _load_whole(self) -> None:
        if self.size > self.options.max_whole_file:
            raise VcubeError(
                f"{self.url}: {self.size} bytes is larger than max_whole_file="
                f"{self.options.max_whole_file}; use strategy='blocks' or raise the limit"
            )
        self._whole = self._call(lambda: bytes(obstore.get(self._store, self._path).bytes()))
        self.stats.add(self.url, self.size)

    def _call[T](self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as err:
            raise translate_io_error(err, self.url) from err


def _runs(blocks: list[int]) -> list[list[int]]:
    """Consecutive block numbers grouped: [1, 2, 3, 7, 8] -> [[1, 2, 3], [7, 8]]."""
    runs: list[list[int]] = []
    for b in blocks:
        if runs and runs[-1][-1] == b - 1:
            runs[-1].append(b)
        else:
            runs.append([b])
    return runs
