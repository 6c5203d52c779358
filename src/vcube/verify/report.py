"""What `verify` found: per variable the chunks compared and those that differ, and the source
files that could not be compared; a readable table of it all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Index", "Mismatch", "TargetKind", "VariableCheck", "VerifyReport", "error_text"]

TargetKind = Literal["Kerchunk JSON", "Kerchunk Parquet", "Icechunk"]
Index = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A chunk whose values through the references differ from the source files', or that could
    not be read. `index` is the first differing element in the variable's coordinates, where
    `expected` (the source's value) and `actual` (the references') differ."""

    chunk: Index
    sources: tuple[str, ...]
    index: Index | None = None
    expected: object = None
    actual: object = None
    error: str | None = None

    def __str__(self) -> str:
        where = f"chunk {_index_text(self.chunk)} ({', '.join(self.sources)})"
        if self.error is not None:
            return f"{where}: {self.error}"
        return (
            f"{where}: first difference at {_index_text(self.index or ())}: "
            f"source {self.expected!r}, references {self.actual!r}"
        )


@dataclass(frozen=True, slots=True)
class VariableCheck:
    """What was checked of one variable: the chunks compared and those that differ; `note` says
    why nothing was checked."""

    name: str
    chunks: tuple[Index, ...] = ()
    different: tuple[Mismatch, ...] = ()
    note: str | None = None

    @property
    def checked(self) -> int:
        return len(self.chunks)

    @property
    def equal(self) -> int:
        return self.checked - len(self.different)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of `verify`: one `VariableCheck` per array of the target, and `problems` with
    source files that could not be opened or placed in the target."""

    target: str
    kind: TargetKind
    sources: tuple[str, ...]
    variables: tuple[VariableCheck, ...]
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when something was checked, everything checked is equal and every source file
        could be opened and placed."""
        checked = any(v.checked for v in self.variables)
        return checked and not self.problems and not any(v.different for v in self.variables)

    def format(self) -> str:
        """A readable table, then every difference and problem, then the verdict."""
        width = max([len("variable"), *(len(v.name) for v in self.variables)])
        lines = [
            f"{self.kind} {self.target}: {len(self.sources)} source file(s)",
            f"{'variable':<{width}}  {'checked':>7}  {'equal':>7}  {'different':>9}",
        ]
        for v in self.variables:
            note = f"  ({v.note})" if v.note else ""
            row = f"{v.checked:>7}  {v.equal:>7}  {len(v.different):>9}"
            lines.append(f"{v.name:<{width}}  {row}{note}")
        lines += [f"DIFFERENT {v.name}: {m}" for v in self.variables for m in v.different]
        lines += [f"PROBLEM {p}" for p in self.problems]
        lines.append("OK: every chunk checked is equal" if self.ok else "FAILED")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def error_text(err: BaseException) -> str:
    """An exception as one line of the report: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _index_text(index: Index) -> str:
    return "[" + ", ".join(map(str, index)) + "]"
