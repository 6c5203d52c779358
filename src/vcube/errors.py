"""The vcube exception and warning tree.

Every error vcube raises is a `VcubeError`; subclasses also inherit the builtin exception that users
already catch (`ValueError`, `KeyError`, `OSError`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "ChunkNotFoundError",
    "IncompatibleArraysError",
    "NotVirtualizableError",
    "NothingVirtualizedError",
    "ReadOnlyError",
    "SourceChangedError",
    "SourceNotFoundError",
    "StoreNotFoundError",
    "TransientIOError",
    "UnsupportedFeatureError",
    "UnsupportedFormatError",
    "VcubeError",
    "VcubeWarning",
    "VirtualDataError",
]


class VcubeError(Exception):
    """Root of every error raised by vcube."""


class UnsupportedFormatError(VcubeError, ValueError):
    """The file is not in a format the chosen (or any) parser reads, or it is corrupt."""


class UnsupportedFeatureError(VcubeError, ValueError):
    """The file uses a feature (a filter, a data type, a layout) vcube cannot reference virtually."""


class NotVirtualizableError(UnsupportedFeatureError):
    """A variable cannot be expressed as references to byte ranges of the original file."""


class IncompatibleArraysError(VcubeError, ValueError):
    """Virtual arrays cannot be combined (different dtype, codecs, chunks or fill value)."""


class VirtualDataError(VcubeError, TypeError):
    """An operation needs the data values, which a virtual array does not hold."""


class ChunkNotFoundError(VcubeError, KeyError):
    """A chunk key is outside the chunk grid of a manifest."""


class ReadOnlyError(VcubeError, PermissionError):
    """An attempt to write to a read-only vcube store."""


class StoreNotFoundError(VcubeError, ValueError):
    """No object store is registered for a URL."""


class SourceNotFoundError(VcubeError, FileNotFoundError):
    """A source file does not exist."""


class SourceChangedError(VcubeError, OSError):
    """A source file no longer holds the bytes its references point to."""


class TransientIOError(VcubeError, OSError):
    """An I/O failure that may succeed when retried (timeout, connection reset, throttling)."""


class NothingVirtualizedError(VcubeError):
    """Every file of a map failed (with `on_error` "warn" or "skip"); `failures` says why."""

    def __init__(self, message: str, failures: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


class VcubeWarning(UserWarning):
    """Root of every warning emitted by vcube."""
