"""Progress of a map over many files: a callback interface and a ready tqdm bar."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from vcube.mapreduce import Outcome

__all__ = ["Callback", "NullCallback", "TqdmCallback", "make_callback"]


class Callback(Protocol):
    """Told when a map starts, each time a task ends (in completion order) and when it ends."""

    def on_start(self, total: int) -> None: ...

    def on_task_end(self, outcome: Outcome) -> None: ...

    def on_end(self) -> None: ...


class NullCallback:
    """Reports nothing."""

    def on_start(self, total: int) -> None:
        pass

    def on_task_end(self, outcome: Outcome) -> None:
        pass

    def on_end(self) -> None:
        pass


class TqdmCallback:
    """A tqdm progress bar on stderr, with the failures counted in its postfix."""

    def __init__(self, description: str = "virtualizing", **tqdm_kwargs: Any) -> None:
        self.description = description
        self.tqdm_kwargs = tqdm_kwargs
        self.failed = 0
        self._bar: Any = None

    def on_start(self, total: int) -> None:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        self._bar = tqdm(
            total=total, desc=self.description, unit="file", file=sys.stderr, **self.tqdm_kwargs
        )

    def on_task_end(self, outcome: Outcome) -> None:
        if outcome.failure is not None:
            self.failed += 1
            self._bar.set_postfix(failed=self.failed)
        self._bar.update(1)

    def on_end(self) -> None:
        self._bar.close()


def make_callback(progress: bool | Callback) -> Callback:
    """`True` gives a tqdm bar, `False` nothing, and a callback is used as it is."""
    if progress is True:
        return TqdmCallback()
    if progress is False:
        return NullCallback()
    return progress
