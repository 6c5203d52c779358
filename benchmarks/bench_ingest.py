"""Benchmark `vcube ingest`: NetCDF4 files appended in batches to a local Icechunk repository.

The corpus is `vcube.demo.write_sample_archive`: hourly NetCDF4 files (default 2,000;
``--quick`` 200), each with 4 zlib variables of 1 x 73 x 144 in chunks of (1, 37, 72). It is
written once into ``<tmp>/vcube-bench-ingest/<files>/`` and reused by later runs.

Timed, serially (no worker processes) and in this interpreter:

* ``vcube``: ``vcube.ingest.ingest(glob, repo, append_dim="time", batch_size=200)`` into a new
  repository (``--quick``: batches of 20), the total and its phases (measured by wrapping the
  functions `ingest` calls by name);
* the resume that has nothing to do: the same call again, in this process (best of
  ``--repeats``) and as a user runs it, ``vcube ingest 'dir/*.nc' --repo R --append-dim time
  --batch-size 200`` in a subprocess (interpreter start included), next to ``vcube --help``
  (the start-up floor). The target is under 2 s. When it is missed, or with ``--profile``, the
  in-process resume is profiled (cProfile) and the top functions are printed;
* ``virtualizarr``: the same batched job by hand with VirtualiZarr 2.x, which cannot resume:
  per batch, ``open_virtual_mfdataset(batch, combine="nested", concat_dim="time")`` with the
  HDF parser and the no-load combine keywords, ``ds.vz.to_icechunk(session.store,
  append_dim="time")`` (not for the first batch) and ``session.commit``, into a new repository
  with a virtual chunk container for the corpus directory (``--vz-config vcube``: also with
  vcube's manifest splitting). ``--vz-files`` runs it on the first files only.

Both repositories are then read back with xarray and compared, time coordinate in full and
every variable at a few time steps, with each other and with the source files.

Usage: ``python benchmarks/bench_ingest.py [--quick]``, in the benchmark venv (``.venv-bench``:
virtualizarr, icechunk, vcube editable). Results are printed as markdown and written as JSON to
``benchmarks/out/``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import importlib
import io
import itertools
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from common import ROOT, disk_bytes, markdown_table, versions, write_report

import vcube.ingest
from vcube.combine import (
    NO_LOAD_COMBINE,  # spelled out for VirtualiZarr, whose defaults compare values
)
from vcube.demo import write_sample_archive
from vcube.stores import ObjectStoreOptions, open_repository

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import icechunk as ic

CACHE = Path(tempfile.gettempdir()) / "vcube-bench-ingest"
VARIABLES = ("air", "uwnd", "vwnd", "rhum")
APPEND_DIM = "time"
RESUME_TARGET_S = 2.0
# vcube.ingest's functions whose time is a phase of a run: name -> label.
PHASES = {
    "expand_urls": "list",
    "open_repository": "open repo",
    "committed_sources": "history",
    "open_virtual_mfdataset": "parse+combine",
    "_check_order": "order check",
    "to_icechunk": "write",
    "_commit": "commit call",
}


# --------------------------------------------------------------------------- corpus


def corpus(files: int) -> tuple[Path, float | None]:
    """The corpus directory of `files` files, and the seconds it took to write (None: cached)."""
    directory = CACHE / str(files)
    complete = directory / ".complete"  # written last: a run killed mid-way is redone
    if complete.exists():
        return directory, None
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    start = time.perf_counter()
    write_sample_archive(directory, files)
    seconds = time.perf_counter() - start
    complete.write_text(f"{files} files in {seconds:.1f} s\n")
    return directory, seconds


def warm(paths: Sequence[Path]) -> None:
    """Read every file once so that neither tool pays for a cold page cache."""
    for path in paths:
        path.read_bytes()


def repo_mb(path: Path) -> float:
    return disk_bytes(path) / 1e6


# --------------------------------------------------------------------------- vcube


@contextlib.contextmanager
def phase_clock() -> Iterator[dict[str, list[float]]]:
    """Seconds of every call, per phase, of the functions `vcube.ingest` calls by name."""
    calls: dict[str, list[float]] = {label: [] for label in PHASES.values()}
    originals = {name: getattr(vcube.ingest, name) for name in PHASES}

    def timed(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                calls[label].append(time.perf_counter() - start)

        return wrapper

    for name, label in PHASES.items():
        setattr(vcube.ingest, name, timed(originals[name], label))
    try:
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(vcube.ingest, name, fn)


def phases(calls: dict[str, list[float]]) -> dict[str, float]:
    """Per-phase totals; `commit` is what `_commit` spends beyond its history look-up, order
    check and write (the lock, the session, `session.commit`)."""
    history = calls["history"]
    inside = sum(history[1:]) + sum(calls["order check"]) + sum(calls["write"])
    totals = {label: sum(seconds) for label, seconds in calls.items() if label != "commit call"}
    totals["history"] = history[0] if history else 0.0  # the scan that decides what to skip
    totals["commit"] = sum(calls["commit call"]) - inside
    totals["re-check"] = sum(history[1:])  # before each commit, under the lock
    return totals


def run_vcube(pattern: str, repo: Path, batch_size: int) -> dict[str, Any]:
    with phase_clock() as calls:
        report = vcube.ingest.ingest(
            pattern, str(repo), append_dim=APPEND_DIM, batch_size=batch_size
        )
    if not report.ok or report.skipped:
        raise RuntimeError(f"vcube ingest did not ingest everything: {report}")
    return {
        "seconds": report.seconds,
        "files": report.ingested,
        "commits": len(report.commits),
        "references": report.references,
        "phases": phases(calls),
        "repo_mb": repo_mb(repo),
    }


def resume_in_process(pattern: str, repo: Path, batch_size: int, repeats: int) -> dict[str, Any]:
    runs, split = [], {}
    for _ in range(repeats):
        with phase_clock() as calls:
            start = time.perf_counter()
            report = vcube.ingest.ingest(
                pattern, str(repo), append_dim=APPEND_DIM, batch_size=batch_size
            )
            runs.append(time.perf_counter() - start)
        if report.ingested or report.commits or report.skipped != report.files:
            raise RuntimeError(f"the resume was not a no-op: {report}")
        if runs[-1] == min(runs):
            split = {k: v for k, v in phases(calls).items() if v}
    return {"runs": runs, "phases": split}


def vcube_command() -> list[str]:
    script = Path(sys.executable).with_name("vcube")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vcube.cli"]


def timed_command(command: list[str]) -> tuple[float, str]:
    """Wall seconds of `command` in a subprocess (interpreter start included), and its output."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    return seconds, done.stdout


def resume_cli(pattern: str, repo: Path, batch_size: int, repeats: int) -> dict[str, Any]:
    """The no-op resume as a user runs it, each run followed by `vcube --help` so that both see
    the same load on a shared machine."""
    command = [*vcube_command(), "ingest", pattern, "--repo", str(repo)]
    command += ["--append-dim", APPEND_DIM, "--batch-size", str(batch_size)]
    runs, floor, output = [], [], ""
    for _ in range(repeats):
        seconds, output = timed_command(command)
        if " 0 ingested" not in output:
            raise RuntimeError(f"the CLI resume was not a no-op:\n{output}")
        runs.append(seconds)
        floor.append(timed_command([*vcube_command(), "--help"])[0])
    return {"command": command, "runs": runs, "output": output.strip(), "help_runs": floor}


def import_breakdown(top: int = 12) -> dict[str, Any]:
    """What importing the CLI (and icechunk, which it imports to quiet its logs) costs in a
    fresh interpreter (``python -X importtime``): the total and the self time per top-level
    package, largest first, in seconds."""
    code = "import vcube.cli, icechunk"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    packages: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _, name = line.removeprefix("import time:").split("|")
        package = name.strip().split(".")[0]
        packages[package] = packages.get(package, 0.0) + int(own) / 1e6
    ranked = sorted(packages.items(), key=lambda item: -item[1])
    return {"total_s": sum(packages.values()), "top": dict(ranked[:top])}


def profile_resume(pattern: str, repo: Path, batch_size: int, top: int = 25) -> str:
    """cProfile of one in-process no-op resume: the top functions by cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    vcube.ingest.ingest(pattern, str(repo), append_dim=APPEND_DIM, batch_size=batch_size)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
    return text.getvalue()


# --------------------------------------------------------------------------- VirtualiZarr


def vz_repository(data_dir: Path, repo: Path, config_name: str) -> ic.Repository:
    """A new local repository with a virtual chunk container for `data_dir`; with vcube's
    manifest splitting when `config_name` is "vcube"."""
    import icechunk as ic

    if config_name == "vcube":
        config = vcube.ingest._new_repo_config(APPEND_DIM, vcube.ingest.DEFAULT_SPLIT)
    else:
        config = ic.RepositoryConfig.default()
    prefix = data_dir.resolve().as_uri() + "/"
    config.set_virtual_chunk_container(
        ic.VirtualChunkContainer(prefix, ic.local_filesystem_store(str(data_dir.resolve())))
    )
    return ic.Repository.create(
        ic.local_filesystem_storage(str(repo)),
        config=config,
        authorize_virtual_chunk_access={prefix: ic.credentials.LocalFileSystemAccess},
    )


def run_virtualizarr(
    paths: Sequence[Path], repo: Path, batch_size: int, config_name: str
) -> dict[str, Any]:
    import virtualizarr
    from obstore.store import LocalStore
    from virtualizarr.parsers import HDFParser

    # VirtualiZarr's registry class lives in obspec_utils, which only the benchmark venv has.
    ObjectStoreRegistry = importlib.import_module("obspec_utils.registry").ObjectStoreRegistry

    start = time.perf_counter()
    repository = vz_repository(paths[0].parent, repo, config_name)
    registry, parser = ObjectStoreRegistry({"file://": LocalStore()}), HDFParser()
    split = dict.fromkeys(("parse+combine", "write", "commit"), 0.0)
    commits = 0
    for batch in itertools.batched([p.as_uri() for p in paths], batch_size):
        t0 = time.perf_counter()
        ds = virtualizarr.open_virtual_mfdataset(
            list(batch),
            registry=registry,
            parser=parser,
            combine="nested",
            concat_dim=APPEND_DIM,
            **NO_LOAD_COMBINE,
        )
        t1 = time.perf_counter()
        session = repository.writable_session("main")
        ds.vz.to_icechunk(session.store, append_dim=APPEND_DIM if commits else None)
        t2 = time.perf_counter()
        session.commit(f"virtualizarr: {len(batch)} files, {batch[0]} .. {batch[-1]}")
        t3 = time.perf_counter()
        split["parse+combine"] += t1 - t0
        split["write"] += t2 - t1
        split["commit"] += t3 - t2
        commits += 1
    return {
        "seconds": time.perf_counter() - start,
        "files": len(paths),
        "commits": commits,
        "phases": split,
        "repo_mb": repo_mb(repo),
    }


# --------------------------------------------------------------------------- read-back check


def read_repo(repository: ic.Repository) -> xr.Dataset:
    store = repository.readonly_session("main").store
    ds: xr.Dataset = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None)
    return ds


def check_readback(paths: Sequence[Path], vcube_repo: Path, vz_repo: Path | None) -> dict[str, Any]:
    """Time in full and every variable at a few steps: vcube's repository against the source
    files (netCDF4) and against VirtualiZarr's (over the files it holds)."""
    import icechunk as ic

    ours = read_repo(open_repository(str(vcube_repo), ObjectStoreOptions()))
    theirs = None
    if vz_repo is not None:
        prefix = paths[0].parent.resolve().as_uri() + "/"
        credentials: dict[str, Any] = {prefix: ic.credentials.LocalFileSystemAccess}
        storage = ic.local_filesystem_storage(str(vz_repo))
        theirs = read_repo(ic.Repository.open(storage, authorize_virtual_chunk_access=credentials))
    n = ours.sizes[APPEND_DIM]
    vz_n = theirs.sizes[APPEND_DIM] if theirs is not None else 0
    problems = [] if n == len(paths) else [f"vcube holds {n} steps, not {len(paths)}"]
    if theirs is not None and not ours[APPEND_DIM][:vz_n].equals(theirs[APPEND_DIM]):
        problems.append("time coordinates differ")
    steps = sorted({0, 1, n // 2, vz_n - 1, n - 1} - {-1})
    for step in steps:
        with xr.open_dataset(paths[step], engine="netcdf4") as source:
            for name in VARIABLES:
                value = ours[name].isel(time=step).values
                expected = source[name].isel(time=0).values
                if value.dtype != expected.dtype or not np.array_equal(value, expected):
                    problems.append(f"vcube {name}[{step}] differs from the file")
                if theirs is not None and step < vz_n:
                    other = theirs[name].isel(time=step).values
                    if not np.array_equal(value, other, equal_nan=True):
                        problems.append(f"{name}[{step}] differs between the repositories")
    return {"steps": steps, "vz_steps": vz_n, "identical": not problems, "problems": problems}


# --------------------------------------------------------------------------- report


def phase_cells(result: dict[str, Any]) -> list[str]:
    p = result["phases"]
    rest = result["seconds"] - p["parse+combine"] - p["write"] - p["commit"]
    return [f"{p['parse+combine']:.1f}", f"{p['write']:.1f}", f"{p['commit']:.1f}", f"{rest:.1f}"]


def ingest_table(results: dict[str, dict[str, Any]], batch_size: int) -> str:
    header = ["tool", "files", "commits", "total s", "files/s", "parse+combine s", "write s"]
    header += ["commit s", "other s", "repo MB"]
    rows = []
    for tool, r in results.items():
        cells = [tool, f"{r['files']:,}", str(r["commits"]), f"{r['seconds']:.1f}"]
        cells += [f"{r['files'] / r['seconds']:,.0f}", *phase_cells(r), f"{r['repo_mb']:.1f}"]
        rows.append(cells)
    lines = [markdown_table(header, rows)]
    ours, theirs = results.get("vcube"), results.get("virtualizarr")
    if ours and theirs:
        same = ours["files"] == theirs["files"]
        ratio = ours["seconds"] / theirs["seconds"]
        rate = (ours["seconds"] / ours["files"]) / (theirs["seconds"] / theirs["files"])
        lines.append(
            f"\nvcube/virtualizarr: {ratio:.2f}x total time"
            if same
            else f"\nvcube/virtualizarr: {rate:.2f}x time per file "
            f"(virtualizarr ran on {theirs['files']:,} files only)"
        )
    lines.append(f"batches of {batch_size} files, serial; 'other' = total - the three phases")
    return "\n".join(lines)


def resume_table(in_process: dict[str, Any], cli: dict[str, Any] | None) -> str:
    rows = []

    def row(label: str, runs: list[float], target: bool) -> None:
        verdict = ("met" if min(runs) < RESUME_TARGET_S else "MISSED") if target else ""
        cells = [label, str(len(runs)), f"{min(runs):.2f}", f"{statistics.median(runs):.2f}"]
        rows.append([*cells, verdict])

    row("in process (`ingest(...)`)", in_process["runs"], True)
    if cli is not None:
        row("CLI (`vcube ingest ...`, subprocess)", cli["runs"], True)
        row("CLI start-up floor (`vcube --help`)", cli["help_runs"], False)
    split = ", ".join(f"{k} {v:.3f} s" for k, v in in_process["phases"].items())
    header = ["no-op resume", "runs", "best s", "median s", "target"]
    return f"{markdown_table(header, rows)}\n\nin-process phases (best run): {split}"


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 files in batches of 20")
    parser.add_argument("--files", type=int, default=None, help="default 2000 (--quick: 200)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 200 (--quick: 20)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each no-op resume")
    parser.add_argument("--vz-files", type=int, default=None, help="VirtualiZarr on these only")
    parser.add_argument("--vz-config", choices=("default", "vcube"), default="default")
    parser.add_argument("--only", choices=("vcube", "virtualizarr"), default=None)
    parser.add_argument("--profile", action="store_true", help="profile the no-op resume")
    parser.add_argument("--keep", action="store_true", help="keep the repositories")
    args = parser.parse_args()
    files = args.files or (200 if args.quick else 2000)
    batch_size = args.batch_size or (20 if args.quick else 200)
    os.environ.setdefault("ICECHUNK_LOG", "error")
    import icechunk as ic

    ic.set_logs_filter(os.environ["ICECHUNK_LOG"])

    data_dir, generated = corpus(files)
    paths = sorted(data_dir.glob("*.nc"))
    pattern = str(data_dir / "*.nc")
    print(f"corpus: {len(paths)} files in {data_dir}", file=sys.stderr)
    warm(paths)
    work = Path(tempfile.mkdtemp(prefix="bench_ingest-"))
    report: dict[str, Any] = {"files": files, "batch_size": batch_size, "corpus_s": generated}
    results: dict[str, dict[str, Any]] = {}
    try:
        vcube_repo, vz_repo = work / "vcube", work / "virtualizarr"
        if args.only != "virtualizarr":
            print("vcube ingest ...", file=sys.stderr)
            results["vcube"] = run_vcube(pattern, vcube_repo, batch_size)
            print("no-op resume ...", file=sys.stderr)
            report["resume"] = resume_in_process(pattern, vcube_repo, batch_size, args.repeats)
            report["resume_cli"] = resume_cli(pattern, vcube_repo, batch_size, args.repeats)
            if args.profile or min(report["resume"]["runs"]) >= RESUME_TARGET_S:
                report["profile"] = profile_resume(pattern, vcube_repo, batch_size)
            if args.profile or min(report["resume_cli"]["runs"]) >= RESUME_TARGET_S:
                report["imports"] = import_breakdown()
        if args.only != "vcube":
            vz_paths = paths[: args.vz_files] if args.vz_files else paths
            print(f"virtualizarr on {len(vz_paths)} files ...", file=sys.stderr)
            results["virtualizarr"] = run_virtualizarr(
                vz_paths, vz_repo, batch_size, args.vz_config
            )
            results["virtualizarr"]["config"] = args.vz_config
        if "vcube" in results:
            report["readback"] = check_readback(
                paths, vcube_repo, vz_repo if "virtualizarr" in results else None
            )
    finally:
        if args.keep:
            print(f"repositories kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report["results"] = results

    made = "cached" if generated is None else f"written in {generated:.1f} s"
    print(f"\n{files:,} NetCDF4 files ({made}), batches of {batch_size}\n")
    print(ingest_table(results, batch_size))
    if "resume" in report:
        print()
        print(resume_table(report["resume"], report.get("resume_cli")))
    if "readback" in report:
        check = report["readback"]
        verdict = (
            "identical" if check["identical"] else "DIFFERENT: " + "; ".join(check["problems"])
        )
        print(f"\nread-back, time in full and all variables at steps {check['steps']}: {verdict}")
    if "imports" in report:
        imports = report["imports"]
        split = ", ".join(f"{k} {v:.2f}" for k, v in imports["top"].items())
        print(f"\nCLI imports ({imports['total_s']:.2f} s, self time per package, s): {split}")
    if "profile" in report:
        print("\nprofile of the in-process no-op resume:\n", file=sys.stderr)
        print(report["profile"], file=sys.stderr)
    report["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    libraries = ("vcube", "virtualizarr", "icechunk", "zarr", "xarray", "numpy", "netCDF4")
    report["versions"] = versions(libraries, missing=None)
    out = write_report("bench_ingest", report)
    print(f"\nwritten to {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
