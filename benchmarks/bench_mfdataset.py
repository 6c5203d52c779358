"""Benchmark open_virtual_mfdataset: vcube vs VirtualiZarr 2.x vs the h5py floor.

Three parts, on one generated NetCDF4 corpus (24 time steps x 4 zlib variables on a 16 x 32 grid
per file, one chunk per time step):

* (a) map-reduce of N files (default 1,000; ``--quick`` 100) with ``parallel=False`` and with 2
  worker processes: vcube, VirtualiZarr and the h5py floor (enumerating every chunk of every file
  with ``chunk_iter``, on the same executor);
* (b) the reduce alone: 10,000 single-file virtual datasets (made from one parsed file by renaming
  its chunk paths and shifting its time axis) combined by coords and nested, time and peak memory
  (tracemalloc), vcube's combine vs VirtualiZarr's;
* (c) 200 files on a local S3 server (moto, in a child process, behind a counting proxy): requests
  per file, bytes per file and wall time of vcube's read strategies (ranges, blocks, whole, and
  the default) next to VirtualiZarr's default.

Usage: ``python benchmarks/bench_mfdataset.py [--quick] [--parts abc] [--lithops N]``, in the
benchmark venv (``.venv-bench``: virtualizarr, vcube editable). The S3 server runs under an
interpreter that has moto (``--moto-python``, default: the test venv ``.venv/bin/python``).
Results are printed as markdown and written as JSON to ``benchmarks/out/``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import inspect
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import netCDF4
import numpy as np
import obstore
import xarray as xr
from bench_hdf5_parse import count_refs, floor_enumerate
from common import ROOT, fmt, markdown_table, try_import, utc_stamp, versions, write_report
from obstore.store import S3Store

import vcube
from vcube.combine import combine as vcube_combine
from vcube.parsers import HDFParser
from vcube.readers import ReadOptions

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

SHAPE = (24, 16, 32)  # time, lat, lon
CHUNKS = (1, 16, 32)
VARIABLES = ("t2m", "u10", "v10", "msl")
WORKERS = 2
SMALL_BLOCK = 64 * 1024  # a read-ahead block smaller than a file of the corpus
COMBINE_KEYS = ("compat", "data_vars", "coords", "join", "combine_attrs")


@dataclass(frozen=True)
class Settings:
    files: int = 1000
    reduce_datasets: int = 10_000
    s3_files: int = 200
    lithops_files: int = 0
    parts: str = "abc"
    moto_python: str = str(ROOT / ".venv" / "bin" / "python")


@dataclass
class Run:
    """One timed run: wall seconds, and what the tool reported."""

    tool: str
    case: str
    seconds: float | None = None
    map_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# --------------------------------------------------------------------------- corpus


def write_file(path: Path, index: int) -> None:
    """One file: 24 hourly steps (starting 24 h after the previous file) of 4 variables."""
    rng = np.random.default_rng(index)
    nt, ny, nx = SHAPE
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", ny)
        nc.createDimension("lon", nx)
        time_var = nc.createVariable("time", "f8", ("time",))
        time_var.units = "hours since 2000-01-01 00:00:00"
        time_var[:] = np.arange(nt, dtype="f8") + nt * index
        nc.createVariable("lat", "f4", ("lat",))[:] = np.linspace(-90, 90, ny)
        nc.createVariable("lon", "f4", ("lon",))[:] = np.linspace(0, 360, nx, endpoint=False)
        grid = np.sin(np.linspace(0, np.pi, ny))[:, None] * np.cos(np.linspace(0, np.pi, nx))
        for i, name in enumerate(VARIABLES):
            var = nc.createVariable(
                name, "f4", ("time", "lat", "lon"), zlib=True, shuffle=True, chunksizes=CHUNKS
            )
            noise = rng.standard_normal(SHAPE).astype("f4") * 0.01
            var[:] = (grid[None] * (i + 1) + np.arange(nt)[:, None, None] * 0.1 + noise).astype(
                "f4"
            )


def build_corpus(folder: Path, n: int) -> list[Path]:
    paths = [folder / f"era_{i:05d}.nc" for i in range(n)]
    for i, path in enumerate(paths):
        write_file(path, i)
    return paths


# --------------------------------------------------------------------------- helpers


def vcube_combine_kwargs() -> dict[str, Any]:
    """The combine keywords `vcube.open_virtual_mfdataset` uses by default (read from its
    signature, so the benchmark follows the API), passed to VirtualiZarr too: its own defaults
    (`coords="different"`, `compat="no_conflicts"`) would compare values of coordinates."""
    params = inspect.signature(vcube.open_virtual_mfdataset).parameters
    return {key: params[key].default for key in COMBINE_KEYS}


def forkserver_pool() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("forkserver"))


def timed(run: Run, fn: Callable[[], Any]) -> Any:
    """Time `fn` into `run` (errors are recorded, not raised)."""
    gc.collect()
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - a failing tool is reported, not fatal
        run.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        print(f"  {run.tool} {run.case}: {run.error}", file=sys.stderr)
        return None
    run.seconds = time.perf_counter() - start
    print(f"  {run.tool} {run.case}: {run.seconds:.2f} s", file=sys.stderr)
    return result


class MapClock:
    """A vcube progress callback: when the last task ended (so map and reduce can be split)."""

    def __init__(self) -> None:
        self.start = self.end = 0.0

    def on_start(self, total: int) -> None:
        self.start = time.perf_counter()

    def on_task_end(self, outcome: Any) -> None:
        pass

    def on_end(self) -> None:
        self.end = time.perf_counter()


def vz_local_registry() -> Any:
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore

    return ObjectStoreRegistry({"file://": LocalStore()})


def vz_parser() -> Any:
    from virtualizarr.parsers import HDFParser as VzHDFParser

    return VzHDFParser()


# --------------------------------------------------------------------------- (a) map-reduce


def floor_all(paths: Sequence[Path], executor: Executor | None) -> int:
    """Every chunk of every file enumerated with h5py; the number of chunks."""
    if executor is None:
        return sum(floor_enumerate(p).refs for p in paths)
    return sum(s.refs for s in executor.map(floor_enumerate, paths))


def run_floor(paths: Sequence[Path], case: str, processes: bool) -> Run:
    run = Run("h5py floor", case)

    def go() -> int:
        if not processes:
            return floor_all(paths, None)
        with forkserver_pool() as pool:
            return floor_all(paths, pool)

    run.extra["chunks"] = timed(run, go)
    return run


def run_vcube(paths: Sequence[Path], case: str, parallel: Any, **kwargs: Any) -> Run:
    run = Run("vcube", case)
    clock = MapClock()
    urls = [str(p) for p in paths]
    ds = timed(
        run,
        lambda: vcube.open_virtual_mfdataset(urls, parallel=parallel, progress=clock, **kwargs),
    )
    if ds is not None:
        run.map_seconds = clock.end - clock.start
        run.extra |= {"refs": ds.vcube.nrefs, "nbytes": ds.vcube.nbytes, "sizes": dict(ds.sizes)}
    return run


def run_virtualizarr(vz: Any, paths: Sequence[Path], case: str, processes: bool) -> Run:
    run = Run("virtualizarr", case)
    urls = [p.as_uri() for p in paths]
    registry, parser = vz_local_registry(), vz_parser()

    def go() -> Any:
        kwargs = {"registry": registry, "parser": parser, **vcube_combine_kwargs()}
        if not processes:
            return vz.open_virtual_mfdataset(urls, parallel=False, **kwargs)
        with forkserver_pool() as pool:
            return vz.open_virtual_mfdataset(urls, parallel=pool, **kwargs)

    ds = timed(run, go)
    if ds is not None:
        run.extra |= {"refs": count_refs(ds), "nbytes": ds.vz.nbytes, "sizes": dict(ds.sizes)}
    return run


def part_a(paths: Sequence[Path], vz: Any, settings: Settings) -> list[Run]:
    print(f"(a) map-reduce of {len(paths)} files", file=sys.stderr)
    # Warm the page cache and every tool (imports, first-call set-up), as the floor's h5py.
    floor_all(paths, None)
    vcube.open_virtual_mfdataset([str(p) for p in paths[:2]])
    if vz is not None:
        run_virtualizarr(vz, paths[:2], "warm-up", processes=False)
    runs = []
    for processes in (False, True):
        case = f"{len(paths)} files, " + (f"{WORKERS} processes" if processes else "serial")
        runs.append(run_floor(paths, case, processes))
        parallel: Any = "processes" if processes else False
        runs.append(run_vcube(paths, case, parallel, max_workers=WORKERS if processes else None))
        if vz is not None:
            runs.append(run_virtualizarr(vz, paths, case, processes))
    if settings.lithops_files:
        runs += lithops_runs(paths[: settings.lithops_files])
    return runs


def fixed_lithops_executor(config: dict[str, Any]) -> Executor:
    """vcube's `LithopsEagerFunctionExecutor` with the fix proposed for its `map`: each item
    wrapped in a 1-tuple, as lithops unpacks tuple items into parameters (see the README)."""
    from vcube.parallel import LithopsEagerFunctionExecutor, _star

    class Fixed(LithopsEagerFunctionExecutor):
        def map(
            self, fn: Callable[..., Any], *iterables: Iterable[Any], **kwargs: Any
        ) -> Iterator[Any]:
            items = [(args,) for args in zip(*iterables, strict=True)]
            return iter(self._lithops.get_result(self._lithops.map(_star(fn), items)))

    return Fixed(config=config)


def lithops_runs(paths: Sequence[Path]) -> list[Run]:
    """vcube on lithops' localhost backend vs serial on the same few files: the overhead."""
    print(f"  lithops localhost on {len(paths)} files", file=sys.stderr)
    config = {
        "lithops": {"backend": "localhost", "storage": "localhost"},
        "localhost": {"runtime": sys.executable},
    }
    case = f"{len(paths)} files, lithops localhost"
    serial = run_vcube(paths, f"{len(paths)} files, serial", False)
    run = Run("vcube", case)
    try:
        executor = fixed_lithops_executor(config)
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        run.error = f"{type(exc).__name__}: {exc}"
        return [serial, run]
    try:
        urls = [str(p) for p in paths]
        ds = timed(run, lambda: vcube.open_virtual_mfdataset(urls, parallel=executor))
        if ds is not None and serial.seconds is not None and run.seconds is not None:
            run.extra["overhead_s"] = run.seconds - serial.seconds
    finally:
        executor.shutdown()
    return [serial, run]


# --------------------------------------------------------------------------- (b) reduce


def vcube_copies(path: Path, n: int) -> list[xr.Dataset]:
    base = vcube.open_virtual_dataset(str(path))
    step = np.timedelta64(SHAPE[0], "h")
    return [
        base.vcube.rename_paths(f"file:///archive/era_{i:06d}.nc").assign_coords(
            time=base["time"] + i * step
        )
        for i in range(n)
    ]


def vz_copies(vz: Any, path: Path, n: int) -> list[xr.Dataset]:
    base = vz.open_virtual_dataset(path.as_uri(), registry=vz_local_registry(), parser=vz_parser())
    step = np.timedelta64(SHAPE[0], "h")
    return [
        base.vz.rename_paths(f"file:///archive/era_{i:06d}.nc").assign_coords(
            time=base["time"] + i * step
        )
        for i in range(n)
    ]


def combine(tool: str, datasets: list[xr.Dataset], how: str) -> xr.Dataset:
    """The reduce each library's `open_virtual_mfdataset` does: vcube's own combine (direct
    when the files agree, else xarray's), VirtualiZarr's xarray combine."""
    kwargs = vcube_combine_kwargs()
    if tool == "vcube":
        concat_dim = "time" if how == "nested" else None
        return vcube_combine(datasets, concat_dim=concat_dim, by_coords=how != "nested", **kwargs)
    if how == "nested":
        return xr.combine_nested(datasets, concat_dim="time", **kwargs)
    result = xr.combine_by_coords(datasets, **kwargs)
    assert isinstance(result, xr.Dataset)
    return result


def measure_reduce(tool: str, datasets: list[xr.Dataset], how: str) -> Run:
    run = Run(tool, f"{len(datasets)} datasets, {how}")
    ds = timed(run, lambda: combine(tool, datasets, how))
    if ds is None:
        return run
    nbytes = ds.vcube.nbytes if tool == "vcube" else ds.vz.nbytes
    run.extra |= {"refs": count_refs(ds), "nbytes": nbytes, "sizes": dict(ds.sizes)}
    del ds
    gc.collect()
    tracemalloc.start()
    try:
        combine(tool, datasets, how)
        run.extra["peak_bytes"] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return run


def part_b(path: Path, vz: Any, n: int) -> list[Run]:
    print(f"(b) reduce of {n} single-file datasets", file=sys.stderr)
    runs = []
    makers: dict[str, Callable[[], list[xr.Dataset]]] = {"vcube": lambda: vcube_copies(path, n)}
    if vz is not None:
        makers["virtualizarr"] = lambda: vz_copies(vz, path, n)
    for tool, make in makers.items():
        datasets = make()
        runs += [measure_reduce(tool, datasets, how) for how in ("by_coords", "nested")]
        del datasets
        gc.collect()
    return runs


# --------------------------------------------------------------------------- (c) S3

SERVER = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from moto.server import ThreadedMotoServer
from faults import serve_proxy
moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
moto.start()
host, port = moto.get_host_and_port()
with serve_proxy(f"http://{host}:{port}") as proxy_port:
    print(f"http://{host}:{port} http://127.0.0.1:{proxy_port}", flush=True)
    sys.stdin.read()  # until the benchmark closes stdin
moto.stop()
"""


@contextlib.contextmanager
def s3_server(python: str) -> Iterator[tuple[str, str]]:
    """moto and the counting proxy (tests/faults.py) in a child process: (moto, proxy) URLs."""
    with tempfile.TemporaryFile() as log:
        child = subprocess.Popen(
            [python, "-c", SERVER, str(ROOT / "tests")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            assert child.stdout is not None
            line = child.stdout.readline().split()
            if len(line) != 2:
                log.seek(0)
                raise RuntimeError(f"the S3 server did not start: {log.read().decode()[-2000:]}")
            yield line[0], line[1]
        finally:
            assert child.stdin is not None
            child.stdin.close()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def s3_store(endpoint: str, bucket: str) -> S3Store:
    return S3Store(
        bucket,
        endpoint=endpoint,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


def create_bucket(endpoint: str, name: str) -> None:
    request = urllib.request.Request(f"{endpoint}/{name}", method="PUT")
    with urllib.request.urlopen(request, timeout=30):
        pass


def proxy_counts(proxy: str, verb: str = "counts") -> dict[str, dict[str, int]]:
    data = b"{}" if verb == "clear" else None
    with urllib.request.urlopen(f"{proxy}/__faults__/{verb}", data=data, timeout=30) as r:
        counts: dict[str, dict[str, int]] = json.loads(r.read())
        return counts


def s3_openers(vz: Any, bucket: str) -> dict[str, Callable[[str, list[str]], Any]]:
    """Each configuration: a function of (endpoint, urls) that virtualizes and combines."""

    def vcube_with(parser: HDFParser | None) -> Callable[[str, list[str]], Any]:
        def go(endpoint: str, urls: list[str]) -> Any:
            registry = vcube.ObjectStoreRegistry({f"s3://{bucket}": s3_store(endpoint, bucket)})
            return vcube.open_virtual_mfdataset(urls, registry=registry, parser=parser)

        return go

    openers: dict[str, Callable[[str, list[str]], Any]] = {
        f"vcube {s}": vcube_with(HDFParser(read_options=ReadOptions(strategy=s)))
        for s in ("ranges", "blocks", "whole")
    }
    small_blocks = ReadOptions(strategy="blocks", block_size=SMALL_BLOCK)
    openers[f"vcube blocks {SMALL_BLOCK // 1024} KiB"] = vcube_with(
        HDFParser(read_options=small_blocks)
    )
    openers["vcube default (detected)"] = vcube_with(None)
    if vz is not None:

        def vz_default(endpoint: str, urls: list[str]) -> Any:
            from obspec_utils.registry import ObjectStoreRegistry

            registry = ObjectStoreRegistry({f"s3://{bucket}": s3_store(endpoint, bucket)})
            return vz.open_virtual_mfdataset(
                urls, registry=registry, parser=vz_parser(), **vcube_combine_kwargs()
            )

        openers["virtualizarr default"] = vz_default
    return openers


def part_c(paths: Sequence[Path], vz: Any, settings: Settings) -> list[Run]:
    print(f"(c) {len(paths)} files on the S3 server", file=sys.stderr)
    try:
        return s3_runs(paths, vz, settings)
    except (OSError, RuntimeError) as exc:  # no moto, or the server died: reported, not fatal
        print(f"  S3 server: {exc}", file=sys.stderr)
        return [Run("S3 server", f"{len(paths)} files on S3", error=str(exc)[:300])]


def s3_runs(paths: Sequence[Path], vz: Any, settings: Settings) -> list[Run]:
    runs = []
    with s3_server(settings.moto_python) as (moto, proxy):
        bucket = "bench"
        create_bucket(moto, bucket)
        store = s3_store(moto, bucket)
        for path in paths:
            obstore.put(store, f"corpus/{path.name}", path)
        urls = [f"s3://{bucket}/corpus/{p.name}" for p in paths]
        file_bytes = sum(p.stat().st_size for p in paths)
        for name, opener in s3_openers(vz, bucket).items():
            run = Run(name, f"{len(paths)} files on S3")
            ds = timed(run, functools.partial(opener, moto, urls))
            if ds is None:
                runs.append(run)
                continue
            report = ds.vcube.report  # None for VirtualiZarr's datasets
            if report is not None and getattr(report, "read_stats", None) is not None:
                run.extra["vcube_parser_requests"] = report.read_stats.requests / len(paths)
                run.extra["vcube_parser_bytes"] = report.read_stats.bytes / len(paths)
            proxy_counts(proxy, "clear")
            start = time.perf_counter()
            opener(proxy, urls)
            run.extra["seconds_through_proxy"] = time.perf_counter() - start
            counts = proxy_counts(proxy)
            per_file = [counts.get(f"corpus/{p.name}", {}) for p in paths]
            run.extra["requests_per_file"] = sum(c.get("requests", 0) for c in per_file) / len(
                paths
            )
            run.extra["bytes_per_file"] = sum(c.get("bytes", 0) for c in per_file) / len(paths)
            run.extra["file_bytes"] = file_bytes / len(paths)
            runs.append(run)
    return runs


# --------------------------------------------------------------------------- report


def table_a(runs: Sequence[Run]) -> str:
    floors = {r.case: r.seconds for r in runs if r.tool == "h5py floor"}
    rows = []
    for r in runs:
        floor = floors.get(r.case)
        ratio = (
            f"{r.seconds / floor:.1f}x"
            if r.seconds is not None and floor and r.tool != "h5py floor"
            else ""
        )
        per_file = None if r.seconds is None else 1e3 * r.seconds / int(r.case.split()[0])
        reduce_s = None if r.map_seconds is None or r.seconds is None else r.seconds - r.map_seconds
        rows.append(
            [
                r.case,
                r.tool,
                fmt(r.seconds, ".2f"),
                fmt(per_file, ".2f"),
                fmt(r.map_seconds, ".2f"),
                fmt(reduce_s, ".2f"),
                ratio,
                r.error or "",
            ]
        )
    header = ["case", "tool", "wall s", "ms/file", "map s", "reduce s", "vs floor", "error"]
    return markdown_table(header, rows)


def table_b(runs: Sequence[Run]) -> str:
    rows = [
        [
            r.case,
            r.tool,
            fmt(r.seconds, ".2f"),
            fmt(r.extra.get("peak_bytes", 0) / 1e6, ".0f") if "peak_bytes" in r.extra else "n/a",
            fmt(r.extra.get("nbytes", 0) / 1e6, ".1f") if "nbytes" in r.extra else "n/a",
            f"{r.extra['refs']:,}" if "refs" in r.extra else "n/a",
            r.error or "",
        ]
        for r in runs
    ]
    header = ["case", "tool", "combine s", "peak MB", "result nbytes MB", "refs", "error"]
    return markdown_table(header, rows)


def table_c(runs: Sequence[Run]) -> str:
    rows = [
        [
            r.tool,
            fmt(r.extra.get("requests_per_file"), ".1f"),
            fmt(r.extra.get("vcube_parser_requests"), ".1f"),
            fmt(r.extra.get("bytes_per_file", 0) / 1e3, ".1f") if r.extra else "n/a",
            fmt(r.extra.get("file_bytes", 0) / 1e3, ".1f") if r.extra else "n/a",
            fmt(r.seconds, ".2f"),
            fmt(r.extra.get("seconds_through_proxy"), ".2f"),
            r.error or "",
        ]
        for r in runs
    ]
    header = ["strategy", "requests/file", "in report", "kB/file", "file kB", "wall s"]
    header += ["via proxy s", "error"]
    return markdown_table(header, rows)


def write_json(settings: Settings, parts: dict[str, list[Run]]) -> Path:
    stamp = utc_stamp()
    libraries = ("vcube", "virtualizarr", "h5py", "netCDF4", "numpy", "xarray", "zarr", "obstore")
    found = versions(libraries, with_platform=True)
    found |= {"hdf5": h5py.version.hdf5_version, "cpus": str(os.cpu_count())}
    payload = {
        "timestamp": stamp,
        "settings": asdict(settings),
        "versions": found,
        "parts": {k: [asdict(r) for r in runs] for k, runs in parts.items()},
    }
    return write_report("bench_mfdataset", payload, stamp)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 files, 2,000 datasets, 50 on S3")
    parser.add_argument("--files", type=int, help="files for (a)")
    parser.add_argument("--parts", default="abc", help="which parts to run, e.g. 'ac'")
    parser.add_argument("--lithops", type=int, default=0, help="also time N files on lithops")
    parser.add_argument("--moto-python", default=Settings.moto_python, help="has moto[server]")
    args = parser.parse_args(argv)
    base = Settings(100, 2000, 50) if args.quick else Settings()
    return Settings(
        files=args.files or base.files,
        reduce_datasets=base.reduce_datasets,
        s3_files=min(base.s3_files, args.files or base.s3_files),
        lithops_files=args.lithops,
        parts=args.parts,
        moto_python=args.moto_python,
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    vz = try_import("virtualizarr")
    parts: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="vcube-bench-mf-") as tmp:
        count = max(settings.files if "a" in settings.parts else 1, settings.s3_files)
        print(f"writing {count} files to {tmp} ...", file=sys.stderr)
        paths = build_corpus(Path(tmp), count)
        if "a" in settings.parts:
            parts["a"] = part_a(paths[: settings.files], vz, settings)
        if "b" in settings.parts:
            parts["b"] = part_b(paths[0], vz, settings.reduce_datasets)
        if "c" in settings.parts:
            parts["c"] = part_c(paths[: settings.s3_files], vz, settings)
    if "a" in parts:
        print("\n## (a) map-reduce (wall time; vs floor on the same executor)\n")
        print(table_a(parts["a"]))
    if "b" in parts:
        print("\n## (b) reduce alone\n")
        print(table_b(parts["b"]))
    if "c" in parts:
        print("\n## (c) S3: requests and bytes per file (server side, through a proxy)\n")
        print(table_c(parts["c"]))
    print(f"\nJSON written to {write_json(settings, parts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
