"""Benchmark NetCDF3 parsing: vcube vs VirtualiZarr 2.x (and kerchunk's ``NetCDF3ToZarr``).

The corpus is 200 NETCDF3_64BIT_OFFSET files, each holding 10 float32 record variables of
10 values a record, 1,000 records: 10,000 chunk references a file. netCDF4 writes it once into
``benchmarks/out/netcdf3-corpus/`` and later runs reuse it while its description matches.

Timed serially in one process, all files per run, the best of ``--repeats`` runs after one
untimed warm-up run:

* open:   ``open_virtual_dataset(url, parser=NetCDF3Parser(), loadable_variables=[])`` in vcube
  and in VirtualiZarr (with an ``obspec_utils`` registry holding a ``LocalStore``);
* parse:  the parser call alone, which builds the ``ManifestStore`` but no xarray Dataset;
  kerchunk's ``NetCDF3ToZarr(path).translate()`` (VirtualiZarr 1.x's path) is timed here too.

Before timing, the references of the first file are compared: every variable must have the same
shape, chunk shape, offsets and lengths in every tool.

Usage: ``python benchmarks/bench_netcdf3.py [--quick] [--repeats N] [--profile]``. Results
are printed as markdown and written as JSON to ``benchmarks/out/``. A library that cannot be
imported (kerchunk needs scipy) is reported and its columns show ``n/a``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import netCDF4
import numpy as np
from common import OUT_DIR, markdown_table, ratio, try_import, utc_stamp, versions, write_report

CORPUS_DIR = OUT_DIR / "netcdf3-corpus"
FORMAT: Final = "NETCDF3_64BIT_OFFSET"
NVARS = 10
NRECORDS = 1000
NVALUES = 10  # per record
DTYPE = "float32"
SPEC = {
    "format": FORMAT,
    "variables": NVARS,
    "records": NRECORDS,
    "values_per_record": NVALUES,
    "dtype": DTYPE,
}
TOOLS = ("vcube", "virtualizarr", "kerchunk")

Run = Callable[[Path], Any]


@dataclass
class Row:
    case: str
    files: int
    refs_per_file: int
    best_s: dict[str, float | None]


# --------------------------------------------------------------------------- corpus


def write_file(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with netCDF4.Dataset(path, "w", format=FORMAT) as nc:
        nc.createDimension("time", None)
        nc.createDimension("x", NVALUES)
        nc.title = f"netcdf3 benchmark file {seed}"
        for i in range(NVARS):
            var = nc.createVariable(f"var{i}", DTYPE, ("time", "x"))
            var.units = "K"
            var.long_name = f"variable number {i}"
            var[:] = rng.standard_normal((NRECORDS, NVALUES)).astype(DTYPE)


def corpus(n_files: int) -> list[Path]:
    """The first `n_files` files of the corpus, written unless a matching corpus exists."""
    CORPUS_DIR.mkdir(parents=True, exist_ok=True)
    spec_file = CORPUS_DIR / "spec.json"
    spec = json.dumps(SPEC, sort_keys=True)
    paths = [CORPUS_DIR / f"file_{i:04d}.nc" for i in range(n_files)]
    if spec_file.exists() and spec_file.read_text() == spec and all(p.exists() for p in paths):
        return paths
    print(f"writing {n_files} files to {CORPUS_DIR} ...", file=sys.stderr)
    spec_file.unlink(missing_ok=True)
    for i, path in enumerate(paths):
        write_file(path, seed=i)
    spec_file.write_text(spec)
    return paths


# --------------------------------------------------------------------------- tools


def vcube_runs() -> dict[str, Run] | None:
    vcube = try_import("vcube")
    if vcube is None:
        return None
    from vcube import NetCDF3Parser

    def open_(path: Path) -> Any:
        return vcube.open_virtual_dataset(path, parser=NetCDF3Parser(), loadable_variables=[])

    def parse(path: Path) -> Any:
        return NetCDF3Parser()(str(path))

    return {"open": open_, "parse": parse}


def virtualizarr_runs() -> dict[str, Run] | None:
    virtualizarr = try_import("virtualizarr")
    if virtualizarr is None:
        return None
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr.parsers import NetCDF3Parser

    registry = ObjectStoreRegistry({"file://": LocalStore()})

    def open_(path: Path) -> Any:
        return virtualizarr.open_virtual_dataset(
            path.as_uri(), registry=registry, parser=NetCDF3Parser(), loadable_variables=[]
        )

    def parse(path: Path) -> Any:
        return NetCDF3Parser()(path.as_uri(), registry)

    return {"open": open_, "parse": parse}


def kerchunk_runs() -> dict[str, Run] | None:
    module = try_import("kerchunk.netCDF3")
    if module is None:
        return None

    def parse(path: Path) -> Any:
        return module.NetCDF3ToZarr(str(path)).translate()

    return {"parse": parse}


# --------------------------------------------------------------------------- references


def references(tool: str, result: Any) -> dict[str, tuple[Any, ...]]:
    """Per variable: (shape, chunk shape, offsets, lengths), from a tool's parse result."""
    out: dict[str, tuple[Any, ...]] = {}
    if tool == "vcube":
        for name, array in result.group.arrays.items():
            m = array.manifest
            out[name] = (array.shape, array.chunks, m.offsets.ravel(), m.lengths.ravel())
    elif tool == "virtualizarr":
        for name, array in result._group.arrays.items():
            m = array.manifest
            chunks = array.metadata.chunks
            out[name] = (array.shape, chunks, m._offsets.ravel(), m._lengths.ravel())
    else:
        refs = result["refs"]
        for key in refs:
            if key.endswith("/.zarray"):
                name = key.removesuffix("/.zarray")
                meta = json.loads(refs[key])
                grid = [-(-n // c) for n, c in zip(meta["shape"], meta["chunks"], strict=True)]
                # Chunk keys in C order of the grid, as the manifests ravel their columns.
                entries = [
                    refs[f"{name}/{'.'.join(map(str, i)) or '0'}"] for i in np.ndindex(*grid)
                ]
                offsets = np.array([e[1] for e in entries], dtype=np.uint64)
                lengths = np.array([e[2] for e in entries], dtype=np.uint64)
                out[name] = (tuple(meta["shape"]), tuple(meta["chunks"]), offsets, lengths)
    return out


def check_same_references(path: Path, parses: dict[str, Run]) -> int:
    """Every tool finds the same chunks at the same byte ranges; returns the reference count."""
    found = {tool: references(tool, parse(path)) for tool, parse in parses.items()}
    first_tool, first = next(iter(found.items()))
    for tool, refs in found.items():
        if refs.keys() != first.keys():
            raise AssertionError(f"{tool} and {first_tool} list different variables")
        for name, (shape, chunks, offsets, lengths) in refs.items():
            shape0, chunks0, offsets0, lengths0 = first[name]
            same = (
                tuple(shape) == tuple(shape0)
                and tuple(chunks) == tuple(chunks0)
                and np.array_equal(offsets, offsets0)
                and np.array_equal(lengths, lengths0)
            )
            if not same:
                raise AssertionError(f"{name}: {tool} and {first_tool} differ")
    print(f"same references in {', '.join(found)} for {path.name}", file=sys.stderr)
    return sum(len(refs[2]) for refs in first.values())


# --------------------------------------------------------------------------- timing


def best_seconds(run: Run, files: Sequence[Path], repeats: int) -> float:
    """One untimed warm-up pass over all files, then the best of `repeats` timed passes."""
    for path in files:
        run(path)
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        for path in files:
            run(path)
        best = min(best, time.perf_counter() - start)
    return best


def profile_vcube(run: Run, files: Sequence[Path], top: int = 25) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for path in files:
        run(path)
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(top)
    return stream.getvalue()


# --------------------------------------------------------------------------- report


def _ms(seconds: float | None, files: int) -> str:
    return "n/a" if seconds is None else f"{seconds / files * 1e3:.2f}"


def table(rows: Sequence[Row]) -> str:
    header = ["case", "files", "refs/file"]
    header += [f"{t} ms/file" for t in TOOLS] + [f"{t} total s" for t in TOOLS]
    header += ["virtualizarr/vcube", "kerchunk/vcube"]
    cells_per_row = []
    for r in rows:
        s = r.best_s
        cells = [r.case, str(r.files), f"{r.refs_per_file:,}"]
        cells += [_ms(s.get(t), r.files) for t in TOOLS]
        cells += ["n/a" if s.get(t) is None else f"{s[t]:.2f}" for t in TOOLS]
        cells += [ratio(s.get("virtualizarr"), s["vcube"]), ratio(s.get("kerchunk"), s["vcube"])]
        cells_per_row.append(cells)
    return markdown_table(header, cells_per_row)


def write_json(args: argparse.Namespace, rows: Sequence[Row]) -> Path:
    stamp = utc_stamp()
    libraries = ("vcube", "virtualizarr", "kerchunk", "netCDF4", "numpy", "xarray", "zarr")
    payload = {
        "timestamp": stamp,
        "settings": {"files": args.files, "repeats": args.repeats, "corpus": SPEC},
        "versions": versions(libraries, with_platform=True),
        "rows": [asdict(r) for r in rows],
    }
    return write_report("bench_netcdf3", payload, stamp)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 files, 2 repeats")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile vcube's open path")
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.repeats = 20, 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tools = {
        "vcube": vcube_runs(),
        "virtualizarr": virtualizarr_runs(),
        "kerchunk": kerchunk_runs(),
    }
    if tools["vcube"] is None:
        return 1
    available = {name: runs for name, runs in tools.items() if runs is not None}
    files = corpus(args.files)
    parses = {name: runs["parse"] for name, runs in available.items()}
    refs = check_same_references(files[0], parses)
    rows = []
    for case in ("open", "parse"):
        best: dict[str, float | None] = {}
        for tool in TOOLS:
            run = (tools[tool] or {}).get(case)
            if run is None:
                best[tool] = None
                continue
            print(f"timing {case} with {tool} ...", file=sys.stderr)
            best[tool] = best_seconds(run, files, args.repeats)
        label = "open_virtual_dataset (loadable=[])" if case == "open" else "parser call alone"
        rows.append(Row(label, len(files), refs, best))
    print(f"\n## NetCDF3: {len(files)} files, best of {args.repeats} serial passes\n")
    print(table(rows))
    print(f"\nJSON written to {write_json(args, rows)}")
    if args.profile:
        print("\n## cProfile of vcube open_virtual_dataset over all files\n")
        print(profile_vcube(tools["vcube"]["open"], files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
