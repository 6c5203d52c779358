"""Benchmark HDF5/NetCDF4 parsing: h5py floor vs VirtualiZarr 2.x vs vcube.

Generates a small NetCDF4 corpus in a temporary directory, then times, per file,
the median of several repeats (after one warm-up) of:

* floor:        h5py opening the file and enumerating every chunk's offset and size;
* virtualizarr: ``virtualizarr.open_virtual_dataset`` with ``HDFParser``;
* vcube:        ``vcube.open_virtual_dataset``;

each with ``loadable_variables=[]`` and with the default (coordinates loaded). It also
measures reference memory per chunk for a 1,000,000-chunk manifest built with
``ChunkManifest.from_arrays`` in both libraries.

Usage: ``python benchmarks/bench_hdf5_parse.py [--quick]``. Results are printed as
markdown and written as JSON to ``benchmarks/out/``. Any library that cannot be
imported is reported and skipped; its columns show ``n/a``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import netCDF4
import numpy as np
from common import fmt, markdown_table, ratio, try_import, utc_stamp, versions, write_report

if TYPE_CHECKING:
    from types import ModuleType

# Corpus (a): 4 float32 variables on time x lat x lon, one chunk per time step.
GRID_SHAPE = (24, 181, 360)
GRID_CHUNKS = (1, 181, 360)
GRID_VARS = ("t2m", "u10", "v10", "msl")

# Corpus (b): 200 variables of 32^3 in 8^3 chunks -> 64 chunks each, 12,800 in total.
MANY_NVARS = 200
MANY_SHAPE = (32, 32, 32)
MANY_CHUNKS = (8, 8, 8)

# Manifest memory: 1000 files x 1000 chunks per file.
MANIFEST_FILES = 1000
MANIFEST_CHUNKS_PER_FILE = 1000


@dataclass(frozen=True)
class OpenStats:
    """What one open found: chunk references, and their in-memory size if reported."""

    refs: int
    ref_nbytes: int | None = None


Opener = Callable[[Path, bool], OpenStats]
"""Opens a file; ``default_loadable`` selects the default loadable_variables."""


@dataclass(frozen=True)
class Settings:
    repeats: int
    n_grid_files: int


@dataclass
class Timing:
    """Per-file medians (ms) of one tool on one case."""

    per_file_ms: list[float] = field(default_factory=list)
    refs_per_file: list[int] = field(default_factory=list)
    ref_nbytes_per_file: list[int | None] = field(default_factory=list)
    error: str | None = None

    @property
    def ms(self) -> float | None:
        return statistics.mean(self.per_file_ms) if self.per_file_ms and not self.error else None


@dataclass
class CaseResult:
    case: str
    files: int
    timings: dict[str, Timing]


@dataclass
class ManifestResult:
    library: str
    chunks: int
    build_s: float | None = None
    nbytes_per_chunk: float | None = None
    traced_peak_per_chunk: float | None = None
    traced_retained_per_chunk: float | None = None
    error: str | None = None


# --------------------------------------------------------------------------- corpus


def _field(
    rng: np.random.Generator, shape: tuple[int, ...], phase: float
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Smooth field plus noise, so zlib has something realistic to compress."""
    grids = np.meshgrid(*(np.linspace(0, 2 * np.pi, n) for n in shape[1:]), indexing="ij")
    base = np.sin(grids[0] + phase) * np.cos(grids[1])
    steps = np.arange(shape[0], dtype=np.float32)[:, None, None] * 0.1
    noise = rng.standard_normal(shape, dtype=np.float32) * 0.05
    values: np.ndarray[Any, np.dtype[np.float32]] = (base[None] + steps + noise).astype(np.float32)
    return values


def write_grid_file(path: Path, seed: int) -> None:
    """Write one "4var" file: time/lat/lon coordinates plus 4 chunked float32 variables."""
    rng = np.random.default_rng(seed)
    nt, nlat, nlon = GRID_SHAPE
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", nlat)
        nc.createDimension("lon", nlon)
        time_var = nc.createVariable("time", "f8", ("time",))
        time_var.units = f"hours since 2000-01-{seed % 28 + 1:02d} 00:00:00"
        time_var[:] = np.arange(nt, dtype="f8")
        nc.createVariable("lat", "f4", ("lat",))[:] = np.linspace(-90, 90, nlat)
        nc.createVariable("lon", "f4", ("lon",))[:] = np.arange(nlon, dtype="f4")
        for i, name in enumerate(GRID_VARS):
            var = nc.createVariable(
                name,
                "f4",
                ("time", "lat", "lon"),
                zlib=True,
                shuffle=True,
                complevel=4,
                chunksizes=GRID_CHUNKS,
            )
            var[:] = _field(rng, GRID_SHAPE, phase=float(i))


def write_many_var_file(path: Path, seed: int = 0) -> None:
    """Write the "200var" file: 200 zlib variables of 64 chunks each, plus coordinates."""
    rng = np.random.default_rng(seed)
    dims = ("z", "y", "x")
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        for dim, size in zip(dims, MANY_SHAPE, strict=True):
            nc.createDimension(dim, size)
            nc.createVariable(dim, "f4", (dim,))[:] = np.arange(size, dtype="f4")
        for i in range(MANY_NVARS):
            var = nc.createVariable(
                f"var{i:03d}", "f4", dims, zlib=True, complevel=4, chunksizes=MANY_CHUNKS
            )
            var[:] = _field(rng, MANY_SHAPE, phase=i * 0.1)


def build_corpus(root: Path, settings: Settings) -> dict[str, list[Path]]:
    grid_files = [root / f"grid_{i:02d}.nc" for i in range(settings.n_grid_files)]
    for seed, path in enumerate(grid_files):
        write_grid_file(path, seed)
    many_file = root / "many_vars.nc"
    write_many_var_file(many_file)
    return {"4var": grid_files, "200var": [many_file]}


# --------------------------------------------------------------------------- openers


def floor_enumerate(path: Path, default_loadable: bool = False) -> OpenStats:
    """Open with h5py and collect (offset, size) of every chunk of every dataset."""
    del default_loadable  # the floor never loads data
    refs: list[tuple[int, int]] = []

    def on_chunk(info: Any) -> None:
        refs.append((info.byte_offset, info.size))

    def visit(_name: str, obj: object) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        if obj.chunks is not None:
            obj.id.chunk_iter(on_chunk)
        else:
            offset = obj.id.get_offset()
            if offset is not None:
                refs.append((offset, obj.id.get_storage_size()))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return OpenStats(refs=len(refs))


def count_refs(ds: Any) -> int:
    """Number of chunk references over the ManifestArray-backed variables of ``ds``."""
    manifests = (getattr(var.data, "manifest", None) for var in ds.variables.values())
    return sum(len(m) for m in manifests if m is not None)


def make_virtualizarr_opener() -> Opener:
    import virtualizarr
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({"file://": LocalStore()})
    parser = HDFParser()

    def open_vz(path: Path, default_loadable: bool = False) -> OpenStats:
        loadable: list[str] | None = None if default_loadable else []
        ds = virtualizarr.open_virtual_dataset(
            path.as_uri(), registry=registry, parser=parser, loadable_variables=loadable
        )
        with ds:
            return OpenStats(refs=count_refs(ds), ref_nbytes=ds.vz.nbytes)

    return open_vz


def make_vcube_opener(vcube: ModuleType) -> Opener:
    def open_vcube(path: Path, default_loadable: bool = False) -> OpenStats:
        if default_loadable:
            ds = vcube.open_virtual_dataset(str(path))
        else:
            ds = vcube.open_virtual_dataset(str(path), loadable_variables=[])
        with ds:
            return OpenStats(refs=count_refs(ds), ref_nbytes=ds.vcube.nbytes)

    return open_vcube


def import_libraries() -> dict[str, ModuleType]:
    found = {name: try_import(name) for name in ("virtualizarr", "vcube")}
    return {name: module for name, module in found.items() if module is not None}


def build_openers(libs: dict[str, ModuleType]) -> dict[str, Opener]:
    openers: dict[str, Opener] = {"floor": floor_enumerate}
    if "virtualizarr" in libs:
        openers["virtualizarr"] = make_virtualizarr_opener()
    if "vcube" in libs:
        openers["vcube"] = make_vcube_opener(libs["vcube"])
    return openers


# --------------------------------------------------------------------------- timing


def median_ms(fn: Callable[[], OpenStats], repeats: int) -> tuple[float, OpenStats]:
    """One warm-up call, then the median of ``repeats`` timed calls, in milliseconds."""
    stats = fn()
    samples = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples), stats


def time_opener(opener: Opener, files: Sequence[Path], default: bool, repeats: int) -> Timing:
    timing = Timing()
    try:
        for path in files:
            ms, stats = median_ms(functools.partial(opener, path, default), repeats)
            timing.per_file_ms.append(ms)
            timing.refs_per_file.append(stats.refs)
            timing.ref_nbytes_per_file.append(stats.ref_nbytes)
    except Exception as exc:  # noqa: BLE001 - a failing tool is reported, not fatal
        timing.error = f"{type(exc).__name__}: {exc}"
        print(f"  error: {timing.error}", file=sys.stderr)
    return timing


def run_cases(
    corpus: dict[str, list[Path]], openers: dict[str, Opener], repeats: int
) -> list[CaseResult]:
    results = []
    for corpus_name, files in corpus.items():
        for default in (False, True):
            case = f"{corpus_name} ({'default loadable' if default else 'loadable=[]'})"
            print(f"timing {case} on {len(files)} file(s) ...", file=sys.stderr)
            timings = {
                tool: time_opener(opener, files, default, repeats)
                for tool, opener in openers.items()
            }
            results.append(CaseResult(case=case, files=len(files), timings=timings))
    return results


# --------------------------------------------------------------------------- manifest memory


def manifest_inputs() -> dict[str, np.ndarray]:
    """Chunk-grid-shaped inputs: row i holds the 1000 chunks of file i."""
    urls = np.array(
        [f"file:///data/archive/era5/2000/file_{i:04d}.nc" for i in range(MANIFEST_FILES)],
        dtype=np.dtypes.StringDType(),
    )
    shape = (MANIFEST_FILES, MANIFEST_CHUNKS_PER_FILE)
    paths = np.repeat(urls, MANIFEST_CHUNKS_PER_FILE).reshape(shape)
    lengths = np.full(shape, 250_000, dtype=np.uint64)
    offsets = np.cumsum(lengths, axis=1, dtype=np.uint64) - lengths + np.uint64(4096)
    return {"paths": paths, "offsets": offsets, "lengths": lengths}


def _build_seconds(from_arrays: Callable[..., Any]) -> float:
    """Wall time of one ``from_arrays`` call, untraced (tracemalloc slows it down)."""
    inputs = manifest_inputs()
    start = time.perf_counter()
    from_arrays(**inputs)
    return time.perf_counter() - start


def _traced_build(from_arrays: Callable[..., Any], result: ManifestResult) -> None:
    """Build a manifest under tracemalloc and record memory per chunk into ``result``.

    peak:     traced peak during ``from_arrays`` above the already-built inputs;
    retained: traced memory still alive once the inputs are dropped (what the manifest
              really keeps, including string storage that ``.nbytes`` does not count).
    """
    gc.collect()
    tracemalloc.start()
    try:
        inputs = manifest_inputs()
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        manifest = from_arrays(**inputs)
        result.traced_peak_per_chunk = (tracemalloc.get_traced_memory()[1] - base) / result.chunks
        del inputs
        gc.collect()
        result.traced_retained_per_chunk = tracemalloc.get_traced_memory()[0] / result.chunks
        result.nbytes_per_chunk = manifest.nbytes / result.chunks
    finally:
        tracemalloc.stop()


def measure_manifest(library: str) -> ManifestResult:
    result = ManifestResult(library=library, chunks=MANIFEST_FILES * MANIFEST_CHUNKS_PER_FILE)
    try:
        from_arrays = importlib.import_module(f"{library}.manifests").ChunkManifest.from_arrays
        result.build_s = _build_seconds(from_arrays)
        _traced_build(from_arrays, result)
    except Exception as exc:  # noqa: BLE001 - a failing library is reported, not fatal
        result.error = f"{type(exc).__name__}: {exc}"
        print(f"  {library} manifest error: {result.error}", file=sys.stderr)
    return result


def run_manifests(libs: Iterable[str]) -> list[ManifestResult]:
    print("measuring 1,000,000-chunk manifests ...", file=sys.stderr)
    return [measure_manifest(lib) for lib in libs]


# --------------------------------------------------------------------------- report


def timing_table(cases: Sequence[CaseResult]) -> str:
    header = ["case", "chunks/file", "floor ms", "virtualizarr ms", "vcube ms"]
    header += ["vz/floor", "vcube/floor", "vz/vcube"]
    rows = []
    for case in cases:
        get = {tool: t.ms for tool, t in case.timings.items()}
        floor, vz, vc = get.get("floor"), get.get("virtualizarr"), get.get("vcube")
        refs = case.timings["floor"].refs_per_file
        chunks = str(refs[0]) if refs else "n/a"
        rows.append(
            [
                case.case,
                chunks,
                *(fmt(ms, ".2f") for ms in (floor, vz, vc)),
                ratio(vz, floor),
                ratio(vc, floor),
                ratio(vz, vc, ".2f"),
            ]
        )
    return markdown_table(header, rows)


def manifest_table(results: Sequence[ManifestResult]) -> str:
    header = ["library", "chunks", "build s", "nbytes/chunk", "peak B/chunk", "retained B/chunk"]
    rows = [
        [
            r.library,
            f"{r.chunks:,}",
            fmt(r.build_s, ".3f"),
            fmt(r.nbytes_per_chunk, ".1f"),
            fmt(r.traced_peak_per_chunk, ".1f"),
            fmt(r.traced_retained_per_chunk, ".1f"),
        ]
        for r in results
    ]
    return markdown_table(header, rows)


def write_json(
    settings: Settings, cases: Sequence[CaseResult], manifests: Sequence[ManifestResult]
) -> Path:
    stamp = utc_stamp()
    libraries = ("vcube", "virtualizarr", "h5py", "netCDF4", "numpy", "xarray", "zarr")
    payload = {
        "timestamp": stamp,
        "settings": asdict(settings),
        "versions": {
            **versions(libraries, with_platform=True),
            "hdf5": h5py.version.hdf5_version,
        },
        "cases": [
            {
                "case": c.case,
                "files": c.files,
                "timings": {
                    tool: {**asdict(t), "mean_of_file_medians_ms": t.ms}
                    for tool, t in c.timings.items()
                },
            }
            for c in cases
        ],
        "manifests": [asdict(m) for m in manifests],
    }
    return write_report("bench_hdf5_parse", payload, stamp)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and files")
    args = parser.parse_args(argv)
    return Settings(repeats=3, n_grid_files=2) if args.quick else Settings(7, 4)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    libs = import_libraries()
    openers = build_openers(libs)
    with tempfile.TemporaryDirectory(prefix="vcube-bench-") as tmp:
        print(f"writing corpus to {tmp} ...", file=sys.stderr)
        corpus = build_corpus(Path(tmp), settings)
        cases = run_cases(corpus, openers, settings.repeats)
    manifests = run_manifests(libs)
    print(f"\n## Open time (ms per file, median of {settings.repeats} after warm-up)\n")
    print(timing_table(cases))
    print("\n## Reference memory (1,000,000-chunk manifest, bytes per chunk)\n")
    print(manifest_table(manifests))
    print(f"\nJSON written to {write_json(settings, cases, manifests)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
