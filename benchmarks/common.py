"""Helpers shared by the benchmark scripts: versions, formatting, markdown tables, peak memory,
worker subprocesses and the JSON report.

Standard library only, so that any interpreter can import it (a script runs it as
``from common import ...``: its own folder is on ``sys.path``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "benchmarks" / "out"


# --------------------------------------------------------------------------- environment


def version(name: str) -> str | None:
    """The installed version of distribution `name`, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(
    names: Iterable[str], *, missing: str | None = "not installed", with_platform: bool = False
) -> dict[str, str]:
    """Python's version (and the platform), then each distribution's; one not installed shows
    `missing`, or is left out when `missing` is None."""
    found = {"python": platform.python_version()}
    if with_platform:
        found["platform"] = platform.platform()
    for name in names:
        value = version(name)
        if value is not None or missing is not None:
            found[name] = value if value is not None else str(missing)
    return found


def try_import(name: str) -> ModuleType | None:
    """The module, or None (reported on stderr) when importing it fails in any way."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any failure (even a half-written module) skips it
        print(f"{name}: not importable ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None


# --------------------------------------------------------------------------- formatting


def fmt(value: float | None, spec: str) -> str:
    """`value` formatted with `spec`, or "n/a"."""
    return "n/a" if value is None else format(value, spec)


def ratio(num: float | None, den: float | None, spec: str = ".1f") -> str:
    """`num / den` as "1.5x", or "n/a" when either is missing or `den` is zero."""
    return "n/a" if num is None or not den else f"{num / den:{spec}}x"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def case_table(
    header: Sequence[str], results: Iterable[Any], columns: Sequence[tuple[str, str]]
) -> str:
    """A markdown table with a row per case result (`case`, `nrefs`, `error` attributes): the
    case, its references, then each `(attribute, format spec)` of `columns`; a failed case shows
    its error in place of the first of these."""
    rows = []
    for r in results:
        cells = [r.case, f"{r.nrefs:,}", *(fmt(getattr(r, name), spec) for name, spec in columns)]
        if r.error:
            cells[2] = r.error
        rows.append(cells)
    return markdown_table(header, rows)


def disk_bytes(path: Path) -> int:
    """Size of a file, or of all files under a directory."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)


# --------------------------------------------------------------------------- peak memory (Linux)


def rss_kb(field: str) -> int:
    """A memory field of this process from /proc/self/status (VmRSS, VmHWM, ...), in KiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """Reset this process's VmHWM (peak resident size) to its current resident size."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def measure[T](fn: Callable[[], T]) -> tuple[T, float, float, float]:
    """Call `fn` once: its result, wall seconds, peak resident MB during the call, and that
    peak above the resident size before the call (what `fn` itself needed)."""
    before = rss_kb("VmRSS")
    reset_peak_rss()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = rss_kb("VmHWM")
    return result, seconds, peak / 1024, (peak - before) / 1024


# --------------------------------------------------------------------------- subprocesses


def run_worker(
    command: Sequence[str], *, timeout: float | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any] | str:
    """Run a worker that prints its result as JSON on its last stdout line: that result, or
    an error string (time-out, or the last stderr line of a failure)."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    if done.returncode:
        return f"failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_case_worker[R](
    make: Callable[..., R], library: str, command: Sequence[str], timeout: float | None
) -> R:
    """One case in a worker subprocess: `make(**result)`, or `make(error=...)` when `library`
    is not installed (the worker is not started) or the worker fails."""
    if version(library) is None:
        return make(error=f"{library}: not importable")
    found = run_worker(command, timeout=timeout)
    return make(error=found) if isinstance(found, str) else make(**found)


# --------------------------------------------------------------------------- report


def utc_stamp() -> str:
    """The current UTC time as in the report names: 20250101T120000Z."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def write_report(name: str, payload: Mapping[str, Any], stamp: str | None = None) -> Path:
    """Write `payload` to ``benchmarks/out/<name>-<stamp>.json`` (stamp: now) and return the
    path."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}-{stamp or utc_stamp()}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def write_cases_report(
    name: str, settings: Mapping[str, Any], libraries: Iterable[str], results: Iterable[Any]
) -> None:
    """Write the report of a script whose results are dataclasses with a `refs_per_s`
    property: settings, machine, versions (a library not installed shows "not importable")
    and results; say where on stderr."""
    report = {
        "settings": settings,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions(libraries, missing="not importable"),
        "results": [{**dataclasses.asdict(r), "refs_per_s": r.refs_per_s} for r in results],
    }
    path = write_report(name, report)
    print(f"\nwritten to {path}", file=sys.stderr)
