"""Benchmark the Kerchunk writers: vcube vs VirtualiZarr 2.x on a synthetic combined dataset.

The dataset is what combining many files gives: NVARS float32 variables on time x y x x, each
the concatenation along time of NFILES per-file chunk grids, plus a loaded `time` coordinate.
Full size: 10 variables x 1,000 files x 1,000 chunks per file = 10,000,000 chunk references
(`--quick`: 100 chunks per file, 1,000,000 references). Both libraries get the same references:
vcube builds each variable with `ChunkManifest.from_file` per file and `concatenate`, VirtualiZarr
with `ChunkManifest.from_arrays` over the combined columns.

Each case (library x format) runs in a fresh subprocess: the dataset is built (not timed), then
one write is timed with `time.perf_counter`. Memory is the process's peak resident set size
during the write (Linux `VmHWM`, reset just before the write), in total and above the resident
size before the write (what the writer itself needs). Output sizes are those of the JSON file
and of the Parquet directory.

Usage: ``python benchmarks/bench_writers.py [--quick] [--cases vcube-json,...]``. Results are
printed as markdown and written as JSON to ``benchmarks/out/``. A library that cannot be
imported is reported and its cases show ``n/a``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from common import case_table, disk_bytes, measure, run_case_worker, write_cases_report

if TYPE_CHECKING:
    from collections.abc import Sequence

NVARS = 10
NFILES = 1000
GRID_YX = (10, 10)  # chunks per file along y and x
CHUNK = (1, 100, 100)  # chunk shape (time, y, x)
CASES = ("vcube-json", "vcube-parquet", "virtualizarr-json", "virtualizarr-parquet")
RECORD_SIZE = 100_000


@dataclass(frozen=True)
class Result:
    case: str
    nrefs: int
    seconds: float | None = None
    peak_rss_mb: float | None = None
    writer_rss_mb: float | None = None
    output_mb: float | None = None
    error: str | None = None

    @property
    def refs_per_s(self) -> float | None:
        return self.nrefs / self.seconds if self.seconds else None


# -- the dataset ---------------------------------------------------------------------------------


def columns(var: int, nfiles: int, ntime: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """URLs of the files, and the offsets and lengths of one variable, shaped like its combined
    chunk grid `(nfiles * ntime, *GRID_YX)`."""
    urls = [f"s3://archive/model-output/{i // 100:02d}/run-{i:05d}.nc" for i in range(nfiles)]
    rng = np.random.default_rng(var)
    shape = (nfiles * ntime, *GRID_YX)
    lengths = rng.integers(20_000, 40_000, size=shape, dtype=np.uint64)
    per_file = lengths.reshape(nfiles, -1)
    offsets = (np.cumsum(per_file, axis=1) - per_file + 4096 + var * 10**9).reshape(shape)
    return urls, offsets.astype(np.uint64), lengths


def time_values(nfiles: int, ntime: int) -> tuple[np.ndarray, dict[str, str]]:
    return np.arange(nfiles * ntime, dtype="f8"), {"units": "hours since 2000-01-01"}


def shape_of(nfiles: int, ntime: int) -> tuple[int, int, int]:
    return (nfiles * ntime, GRID_YX[0] * CHUNK[1], GRID_YX[1] * CHUNK[2])


def vcube_dataset(nfiles: int, ntime: int) -> Any:
    import xarray as xr
    from zarr.codecs.numcodecs import Shuffle, Zlib

    from vcube.manifests import ChunkManifest, ManifestArray
    from vcube.manifests.manifest import concatenate
    from vcube.manifests.metadata import array_metadata

    variables = {}
    for v in range(NVARS):
        urls, offsets, lengths = columns(v, nfiles, ntime)
        per_file = [
            ChunkManifest.from_file(
                url,
                offsets=offsets[i * ntime : (i + 1) * ntime],
                lengths=lengths[i * ntime : (i + 1) * ntime],
            )
            for i, url in enumerate(urls)
        ]
        info = array_metadata(
            shape=shape_of(nfiles, ntime),
            dtype=np.dtype("<f4"),
            chunks=CHUNK,
            codecs=[Shuffle(elementsize=4), Zlib(level=4)],
            fill_value=np.float32("nan"),
            dimension_names=("time", "y", "x"),
            attributes={"units": "K"},
        )
        manifest = concatenate(per_file, axis=0)
        variables[f"var{v}"] = xr.Variable(("time", "y", "x"), ManifestArray(info, manifest))
    values, attrs = time_values(nfiles, ntime)
    return xr.Dataset(variables, coords={"time": ("time", values, attrs)})


def virtualizarr_dataset(nfiles: int, ntime: int) -> Any:
    import xarray as xr
    from virtualizarr.manifests import ChunkManifest, ManifestArray
    from virtualizarr.manifests.utils import create_v3_array_metadata

    variables = {}
    for v in range(NVARS):
        urls, offsets, lengths = columns(v, nfiles, ntime)
        paths = np.repeat(np.array(urls, dtype=np.dtypes.StringDType()), ntime * np.prod(GRID_YX))
        manifest = ChunkManifest.from_arrays(
            paths=paths.reshape(offsets.shape), offsets=offsets, lengths=lengths
        )
        metadata = create_v3_array_metadata(
            shape=shape_of(nfiles, ntime),
            data_type=np.dtype("<f4"),
            chunk_shape=CHUNK,
            fill_value=np.float32("nan"),
            codecs=[
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "numcodecs.shuffle", "configuration": {"elementsize": 4}},
                {"name": "numcodecs.zlib", "configuration": {"level": 4}},
            ],
            attributes={"units": "K"},
            dimension_names=("time", "y", "x"),
        )
        variables[f"var{v}"] = xr.Variable(("time", "y", "x"), ManifestArray(metadata, manifest))
    values, attrs = time_values(nfiles, ntime)
    return xr.Dataset(variables, coords={"time": ("time", values, attrs)})


# -- one case, in a subprocess -------------------------------------------------------------------


def worker(case: str, nfiles: int, ntime: int, out: Path) -> dict[str, Any]:
    library, kind = case.rsplit("-", 1)
    target = out / f"refs.{kind}"
    if library == "vcube":
        from vcube.writers import to_kerchunk

        ds = vcube_dataset(nfiles, ntime)

        def write() -> None:
            to_kerchunk(ds, target, format=kind, record_size=RECORD_SIZE)  # type: ignore[call-overload]

    else:
        ds = virtualizarr_dataset(nfiles, ntime)

        def write() -> None:
            if kind == "parquet":
                ds.vz.to_kerchunk(target, format="parquet", record_size=RECORD_SIZE)
            else:
                ds.vz.to_kerchunk(target, format="json")

    _, seconds, peak_mb, above_mb = measure(write)
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_mb,
        "writer_rss_mb": above_mb,
        "output_mb": disk_bytes(target) / 1e6,
    }


def run_case(case: str, nfiles: int, ntime: int, timeout: float) -> Result:
    nrefs = NVARS * nfiles * ntime * int(np.prod(GRID_YX))
    library = case.rsplit("-", 1)[0]
    with tempfile.TemporaryDirectory(prefix="bench_writers-") as tmp:
        command = [sys.executable, __file__, "--worker", case, "--nfiles", str(nfiles)]
        command += ["--ntime", str(ntime), "--out", tmp]
        return run_case_worker(partial(Result, case, nrefs), library, command, timeout)


# -- report --------------------------------------------------------------------------------------


def table(results: Sequence[Result]) -> str:
    header = ["case", "refs", "write s", "refs/s", "peak RSS MB", "writer RSS MB", "output MB"]
    columns = [("seconds", ".2f"), ("refs_per_s", ",.0f"), ("peak_rss_mb", ",.0f")]
    columns += [("writer_rss_mb", ",.0f"), ("output_mb", ",.1f")]
    return case_table(header, results, columns)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000,000 references, not 10M")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--nfiles", type=int, default=NFILES, help=argparse.SUPPRESS)
    parser.add_argument("--ntime", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.nfiles, args.ntime, args.out)))
        return 0
    ntime = 1 if args.quick else 10
    results = []
    for case in args.cases.split(","):
        result = run_case(case, NFILES, ntime, args.timeout)
        print(f"{case}: {result.seconds or result.error}", file=sys.stderr, flush=True)
        results.append(result)
    print(table(results))
    libraries = ("numpy", "pyarrow", "pandas", "xarray", "zarr", "fsspec", "kerchunk")
    settings = {"quick": args.quick, "nvars": NVARS, "nfiles": NFILES, "ntime": ntime}
    write_cases_report("bench_writers", settings, (*libraries, "virtualizarr", "vcube"), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
