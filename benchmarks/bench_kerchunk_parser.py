"""Benchmark the Kerchunk reference parsers: vcube vs VirtualiZarr 2.x, Parquet and JSON input.

Inputs are built once per run in a temporary directory (not timed), with the references a
combined dataset holds: one float32 variable `v` (zlib, chunks `(1, 100)`) whose chunk grid is
`(N / 1,000, 1,000)`, 1,000 distinct `s3://` file URLs each holding 1,000 consecutive chunks,
plus `.zgroup` / `.zattrs` / `v/.zarray` / `v/.zattrs`:

* Parquet: fsspec's `LazyReferenceMapper` layout (`.zmetadata` with `record_size` 100,000, then
  `v/refs.<i>.parq` with columns path (dictionary-encoded, as pandas categoricals), offset, size,
  raw), written directly with pyarrow. 10,000,000 references (`--quick`: 1,000,000), and
  1,000,000 for the side-by-side case (see below).
* JSON: spec version 1, `{"version": 1, "refs": {...}}`, 1,000,000 references (`--quick`:
  100,000).

Each case runs in a fresh subprocess: the library is imported, then one
`open_virtual_dataset(url, parser=..., loadable_variables=[])` is timed with
`time.perf_counter`. Memory is the peak resident set size during the open (Linux `VmHWM`, reset
just before it), in total and above the resident size before the open (what the parser needs),
and the in-memory size of the references it returns (`ds.vcube.nbytes`, `ds.vz.nbytes`).

VirtualiZarr's Parquet parser reads every key through fsspec's `LazyReferenceMapper` into a dict
of Python lists before building its manifest, so 10,000,000 references take it minutes and
gigabytes; its 10M case is off by default (`--cases` adds it back: `virtualizarr-parquet-10M`).
The Parquet comparison is at 1,000,000 references, and vcube alone also runs at 10,000,000.

Usage: ``python benchmarks/bench_kerchunk_parser.py [--quick] [--cases vcube-parquet-10M,...]``.
Results are printed as markdown and written as JSON to ``benchmarks/out/``. A library that cannot
be imported is reported and its cases show ``n/a``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from common import case_table, markdown_table, measure, ratio, run_case_worker, write_cases_report

if TYPE_CHECKING:
    from collections.abc import Sequence

NFILES = 1000
COLUMNS = 1000  # chunks along the second axis of the grid
CHUNK = (1, 100)
RECORD_SIZE = 100_000
LIBRARIES = ("vcube", "virtualizarr")
DEFAULT_CASES = (
    "vcube-parquet-10M",
    "vcube-parquet-1M",
    "virtualizarr-parquet-1M",
    "vcube-json-1M",
    "virtualizarr-json-1M",
)
SIZES = {"10M": 10_000_000, "1M": 1_000_000, "100k": 100_000}
QUICK = {"parquet": {"10M": "1M"}, "json": {"1M": "100k"}}  # --quick: sizes by format


@dataclass(frozen=True)
class Result:
    case: str
    nrefs: int
    seconds: float | None = None
    peak_rss_mb: float | None = None
    parser_rss_mb: float | None = None
    refs_mb: float | None = None
    found_refs: int | None = None
    error: str | None = None

    @property
    def refs_per_s(self) -> float | None:
        return self.nrefs / self.seconds if self.seconds else None


# -- the inputs ----------------------------------------------------------------------------------


def urls() -> list[str]:
    return [f"s3://archive/model-output/{i // 100:02d}/run-{i:05d}.nc" for i in range(NFILES)]


def columns(nrefs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Path index, offset and length of every chunk, in C order of the grid."""
    per_file = nrefs // NFILES
    rng = np.random.default_rng(0)
    lengths = rng.integers(20_000, 40_000, size=nrefs, dtype=np.int64)
    by_file = lengths.reshape(NFILES, per_file)
    offsets = (np.cumsum(by_file, axis=1) - by_file + 4096).reshape(-1)
    path_index = np.repeat(np.arange(NFILES, dtype=np.int32), per_file)
    return path_index, offsets, lengths


def metadata(nrefs: int) -> dict[str, Any]:
    rows = nrefs // COLUMNS
    zarray = {
        "zarr_format": 2,
        "shape": [rows * CHUNK[0], COLUMNS * CHUNK[1]],
        "chunks": list(CHUNK),
        "dtype": "<f4",
        "fill_value": "NaN",
        "order": "C",
        "filters": None,
        "compressor": {"id": "zlib", "level": 4},
    }
    return {
        ".zgroup": {"zarr_format": 2},
        ".zattrs": {"title": "benchmark"},
        "v/.zarray": zarray,
        "v/.zattrs": {"_ARRAY_DIMENSIONS": ["time", "x"], "units": "K"},
    }


def write_parquet(path: Path, nrefs: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.mkdir(parents=True)
    (path / "v").mkdir()
    path_index, offsets, lengths = columns(nrefs)
    dictionary = pa.array(urls(), type=pa.string())
    for i, start in enumerate(range(0, nrefs, RECORD_SIZE)):
        rows = slice(start, start + RECORD_SIZE)
        table = pa.table(
            {
                "path": pa.DictionaryArray.from_arrays(pa.array(path_index[rows]), dictionary),
                "offset": pa.array(offsets[rows]),
                "size": pa.array(lengths[rows]),
                "raw": pa.nulls(len(offsets[rows]), type=pa.binary()),
            }
        )
        pq.write_table(table, path / "v" / f"refs.{i}.parq", compression="zstd")
    zmetadata = {"metadata": metadata(nrefs), "record_size": RECORD_SIZE}
    (path / ".zmetadata").write_text(json.dumps(zmetadata))


def write_json(path: Path, nrefs: int) -> None:
    path_index, offsets, lengths = columns(nrefs)
    rows = np.unravel_index(np.arange(nrefs), (nrefs // COLUMNS, COLUMNS))
    names = urls()
    refs: dict[str, Any] = {k: json.dumps(v) for k, v in metadata(nrefs).items()}
    values = (a.tolist() for a in (*rows, path_index, offsets, lengths))
    for i, j, p, o, n in zip(*values, strict=True):
        refs[f"v/{i}.{j}"] = [names[p], o, n]
    path.write_text(json.dumps({"version": 1, "refs": refs}, separators=(",", ":")))


# -- one case, in a subprocess -------------------------------------------------------------------


def worker(library: str, kind: str, path: Path) -> dict[str, Any]:
    from xarray.namedarray.pycompat import array_type

    array_type("dask")  # xarray imports dask on its first duck array: not the parser's cost
    if library == "vcube":
        import vcube
        from vcube.parsers.kerchunk import KerchunkJSONParser, KerchunkParquetParser

        parser = KerchunkParquetParser() if kind == "parquet" else KerchunkJSONParser()

        def open_() -> tuple[int, int]:
            ds = vcube.open_virtual_dataset(path, parser=parser, loadable_variables=[])
            return ds.vcube.nrefs, ds.vcube.nbytes

    else:
        import virtualizarr
        from obspec_utils.registry import ObjectStoreRegistry
        from obstore.store import LocalStore
        from virtualizarr.parsers import KerchunkJSONParser as VzJSON
        from virtualizarr.parsers import KerchunkParquetParser as VzParquet

        vz_parser = VzParquet() if kind == "parquet" else VzJSON()
        registry = ObjectStoreRegistry({"file://": LocalStore()})

        def open_() -> tuple[int, int]:
            ds = virtualizarr.open_virtual_dataset(
                path.as_uri(), registry=registry, parser=vz_parser, loadable_variables=[]
            )
            manifest = ds["v"].data.manifest
            return int(np.count_nonzero(manifest._paths != "")), ds.vz.nbytes

    (found, nbytes), seconds, peak_mb, above_mb = measure(open_)
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_mb,
        "parser_rss_mb": above_mb,
        "refs_mb": nbytes / 1e6,
        "found_refs": found,
    }


def run_case(case: str, inputs: dict[tuple[str, int], Path], timeout: float) -> Result:
    library, fmt_, size = case.split("-")
    nrefs = SIZES[size]
    command = [sys.executable, __file__, "--worker", f"{library}-{fmt_}"]
    command += ["--path", str(inputs[fmt_, nrefs])]
    return run_case_worker(partial(Result, case, nrefs), library, command, timeout)


# -- report --------------------------------------------------------------------------------------


def table(results: Sequence[Result]) -> str:
    header = ["case", "refs", "open s", "refs/s", "peak RSS MB", "parser RSS MB", "refs MB"]
    columns = [("seconds", ".2f"), ("refs_per_s", ",.0f"), ("peak_rss_mb", ",.0f")]
    columns += [("parser_rss_mb", ",.0f"), ("refs_mb", ",.1f")]
    return case_table(header, results, columns)


def ratios(results: Sequence[Result]) -> str:
    """VirtualiZarr / vcube for every input both libraries opened."""
    by_case = {r.case: r for r in results}
    header = ["input", "time vz/vcube", "parser RSS vz/vcube", "refs MB vz/vcube"]
    rows = []
    for r in results:
        _, fmt_, size = r.case.split("-")
        if not r.case.startswith("vcube-"):
            continue
        vz = by_case.get(f"virtualizarr-{fmt_}-{size}")
        if vz is None or vz.seconds is None or r.seconds is None:
            continue
        rows.append(
            [
                f"{fmt_} {r.nrefs:,}",
                ratio(vz.seconds, r.seconds),
                ratio(vz.parser_rss_mb, r.parser_rss_mb),
                ratio(vz.refs_mb, r.refs_mb),
            ]
        )
    return markdown_table(header, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M Parquet and 100k JSON refs")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES), help="comma-separated cases")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per case")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        library, fmt_ = args.worker.split("-")
        print(json.dumps(worker(library, fmt_, args.path)))
        return 0
    cases = []
    for case in args.cases.split(","):
        library, fmt_, size = case.split("-")
        if args.quick:
            size = QUICK[fmt_].get(size, size)
        if f"{library}-{fmt_}-{size}" not in cases:
            cases.append(f"{library}-{fmt_}-{size}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_kerchunk_parser-") as tmp:
        inputs: dict[tuple[str, int], Path] = {}
        for case in cases:
            _, fmt_, size = case.split("-")
            key = (fmt_, SIZES[size])
            if key not in inputs:
                start = time.perf_counter()
                inputs[key] = Path(tmp) / f"refs-{size}.{fmt_}"
                (write_parquet if fmt_ == "parquet" else write_json)(inputs[key], SIZES[size])
                took = time.perf_counter() - start
                print(f"input {fmt_} {size}: built in {took:.1f} s", file=sys.stderr, flush=True)
        for case in cases:
            result = run_case(case, inputs, args.timeout)
            print(f"{case}: {result.seconds or result.error}", file=sys.stderr, flush=True)
            results.append(result)
    print(table(results))
    print()
    print(ratios(results))
    libraries = ("numpy", "pyarrow", "pandas", "xarray", "zarr", "fsspec", "kerchunk")
    settings = {"quick": args.quick, "cases": cases, "record_size": RECORD_SIZE}
    write_cases_report("bench_kerchunk_parser", settings, (*libraries, *LIBRARIES), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
