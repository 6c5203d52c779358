"""Benchmark writing virtual references into an Icechunk repository: vcube vs VirtualiZarr 2.x.

A synthetic combined dataset (default 10 variables x 1,000 files x 1,000 chunks per file =
10,000,000 references; ``--quick``: 10 x 100 x 1,000 = 1,000,000) is built in memory from
per-file manifests, the way the reduce step of a real run builds it, and written into a new
Icechunk repository on local disk: ``to_icechunk`` then ``session.commit``. Every case runs in a
subprocess of its own so that its peak memory (``ru_maxrss``) is its own.

Cases, each with the repository's default configuration (one manifest per array) and with
manifest splitting (one manifest per 100,000 references):

* ``floor``: Icechunk alone, given ready-made columns: the array documents and one
  ``set_virtual_refs_arr`` call per array. No writer can do less.
* ``vcube``: ``vcube.writers.icechunk.to_icechunk(ds, session.store)``, one commit.
* ``vcube-batched``: ``vcube.writers.icechunk_commit.commit_in_batches(ds, repo, ...,
  max_refs=1_000_000)`` (what ``vcube virtualize`` does for an Icechunk output): a session and
  a commit per batch of variables, so that Icechunk holds one batch's changes at a time. Its
  write and commit times are reported together, as commit.
* ``virtualizarr``: ``ds.vz.to_icechunk(session.store)``, one commit, in the interpreter given by
  ``--vz-python`` (default ``.venv-bench/bin/python``, where it is installed).

vcube runs in this interpreter (``PYTHONPATH=src`` is added, for when it is not installed).

Usage: ``python benchmarks/bench_icechunk.py [--quick]``. Results are printed as markdown and
written as JSON to ``benchmarks/out/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, disk_bytes, markdown_table, run_worker, write_report

DEFAULT_VZ_PYTHON = ROOT / ".venv-bench" / "bin" / "python"

STEPS_PER_FILE = 10  # time steps per file; one chunk per step and x-block
X_CHUNKS = 100  # chunks along x, so a file holds 10 x 100 = 1,000 chunks per variable
X_CHUNK = 100
CHUNK_BYTES = 40_000
SPLIT_REFS = 100_000  # manifest splitting: references per manifest
URL = "file:///data/archive/model-run/output/{:05d}.nc"
CONTAINER = "file:///data/archive/"
LIBRARIES = ("floor", "vcube", "vcube-batched", "virtualizarr")


# --------------------------------------------------------------------------- child process


def cpu_s() -> float:
    """CPU time (user + system, all threads) of this process so far, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def file_columns() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Offsets and lengths of the 1,000 chunks of one variable in one file."""
    lengths = np.full((STEPS_PER_FILE, X_CHUNKS), CHUNK_BYTES, dtype=np.uint64)
    ends = np.cumsum(lengths.reshape(-1), dtype=np.uint64).reshape(lengths.shape)
    return ends - lengths + np.uint64(8192), lengths


def build_vcube(variables: int, files: int) -> Any:
    import xarray as xr

    from vcube.manifests import ChunkManifest, ManifestArray
    from vcube.manifests.manifest import concatenate
    from vcube.manifests.metadata import array_metadata

    offsets, lengths = file_columns()
    data = {}
    for v in range(variables):
        per_file = [
            ChunkManifest.from_file(URL.format(f), offsets=offsets, lengths=lengths + v)
            for f in range(files)
        ]
        manifest = concatenate(per_file, axis=0)
        info = array_metadata(
            shape=(files * STEPS_PER_FILE, X_CHUNKS * X_CHUNK),
            dtype=np.dtype("float32"),
            chunks=(1, X_CHUNK),
            dimension_names=("time", "x"),
        )
        data[f"var{v:02d}"] = xr.Variable(("time", "x"), ManifestArray(info, manifest))
    return xr.Dataset(data)


def build_virtualizarr(variables: int, files: int) -> Any:
    import xarray as xr
    from virtualizarr.manifests import ChunkManifest, ManifestArray
    from virtualizarr.manifests.utils import create_v3_array_metadata

    offsets, lengths = file_columns()
    urls = np.array([URL.format(f) for f in range(files)], dtype=np.dtypes.StringDType())
    paths = np.repeat(urls, offsets.size).reshape(files * STEPS_PER_FILE, X_CHUNKS)
    data = {}
    for v in range(variables):
        manifest = ChunkManifest.from_arrays(
            paths=paths,
            offsets=np.tile(offsets, (files, 1)),
            lengths=np.tile(lengths + v, (files, 1)),
            validate_paths=False,
        )
        metadata = create_v3_array_metadata(
            shape=(files * STEPS_PER_FILE, X_CHUNKS * X_CHUNK),
            data_type=np.dtype("float32"),
            chunk_shape=(1, X_CHUNK),
            fill_value=0.0,
            dimension_names=("time", "x"),
        )
        data[f"var{v:02d}"] = xr.Variable(("time", "x"), ManifestArray(metadata, manifest))
    return xr.Dataset(data)


def repository(path: Path, *, split: bool, files: int) -> Any:
    import icechunk as ic

    config = ic.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        ic.VirtualChunkContainer(CONTAINER, ic.local_filesystem_store("/data/archive"))
    )
    if split:
        steps = max(SPLIT_REFS // X_CHUNKS, 1)  # rows of the chunk grid per manifest
        config.manifest = ic.ManifestConfig(
            splitting=ic.ManifestSplittingConfig.from_dict(
                {
                    ic.ManifestSplitCondition.AnyArray(): {
                        ic.ManifestSplitDimCondition.Axis(0): steps
                    }
                }
            )
        )
    return ic.Repository.create(ic.local_filesystem_storage(str(path)), config=config)


def build_floor(variables: int, files: int) -> list[tuple[list[str], Any, Any]]:
    """The columns icechunk takes, ready-made: what no library can avoid building."""
    offsets, lengths = file_columns()
    locations = [URL.format(f) for f in range(files) for _ in range(offsets.size)]
    return [
        (locations, np.tile(offsets, files).reshape(-1), np.tile(lengths + v, files).reshape(-1))
        for v in range(variables)
    ]


def write_floor(store: Any, columns: list[tuple[list[str], Any, Any]], files: int) -> None:
    """Icechunk alone: the group and array documents, then one bulk call per array."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buffer = default_buffer_prototype().buffer.from_bytes
    grid = (files * STEPS_PER_FILE, X_CHUNKS)
    document = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [grid[0], X_CHUNKS * X_CHUNK],
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, X_CHUNK]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {},
        "dimension_names": ["time", "x"],
    }
    group = {"zarr_format": 3, "node_type": "group", "attributes": {}}
    sync(store.set("zarr.json", buffer(json.dumps(group).encode())))
    for v, (locations, offsets, lengths) in enumerate(columns):
        name = f"var{v:02d}"
        sync(store.set(f"{name}/zarr.json", buffer(json.dumps(document).encode())))
        store.set_virtual_refs_arr(
            name, grid, locations, offsets, lengths, validate_containers=False
        )


def child(library: str, variables: int, files: int, split: bool) -> dict[str, Any]:
    """Build the dataset, write it into a new repository and commit; the timings and memory.

    `vcube-batched` commits once per batch of variables (`commit_in_batches`), so that Icechunk
    holds the changes of one batch at a time.
    """
    import icechunk as ic

    ic.set_logs_filter("error")
    start = time.perf_counter()
    builders = {"floor": build_floor, "virtualizarr": build_virtualizarr}
    data = builders.get(library, build_vcube)(variables, files)
    build_s = time.perf_counter() - start
    build_mb = rss_mb()
    directory = Path(tempfile.mkdtemp(prefix="bench_icechunk-"))
    write_s = commit_s = 0.0
    cpu_start = cpu_s()
    try:
        repo = repository(directory / "repo", split=split, files=files)
        if library == "vcube-batched":
            from vcube.writers.icechunk_commit import commit_in_batches

            start = time.perf_counter()
            commit_in_batches(data, repo, "benchmark", max_refs=1_000_000)
            commit_s = time.perf_counter() - start
        else:
            session = repo.writable_session("main")
            start = time.perf_counter()
            if library == "floor":
                write_floor(session.store, data, files)
            elif library == "vcube":
                from vcube.writers.icechunk import to_icechunk

                to_icechunk(data, session.store)
            else:
                data.vz.to_icechunk(session.store)
            written = time.perf_counter()
            session.commit("benchmark")
            write_s, commit_s = written - start, time.perf_counter() - written
        cpu = cpu_s() - cpu_start
        size = disk_bytes(directory / "repo")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "build_s": build_s,
        "build_mb": build_mb,
        "write_s": write_s,
        "commit_s": commit_s,
        "total_s": write_s + commit_s,
        "cpu_s": cpu,
        "peak_mb": rss_mb(),
        "repo_bytes": size,
    }


# --------------------------------------------------------------------------- parent


def run_case(
    python: str, library: str, variables: int, files: int, split: bool, repeats: int
) -> dict[str, Any]:
    """The fastest of `repeats` runs: on a shared machine, the others measure the neighbours."""
    runs = [run_once(python, library, variables, files, split) for _ in range(repeats)]
    good = [r for r in runs if "error" not in r]
    best = min(good, key=lambda r: float(r["total_s"])) if good else runs[0]
    return {**best, "total_s_runs": [r.get("total_s") for r in runs]}


def run_once(python: str, library: str, variables: int, files: int, split: bool) -> dict[str, Any]:
    env = dict(os.environ)
    if library.startswith("vcube"):
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])
        )
    command = [python, __file__, "--child", library, str(variables), str(files), str(int(split))]
    result: dict[str, Any] = {"library": library, "split": split}
    found = run_worker(command, env=env)
    if isinstance(found, str):
        result["error"] = found
        print(f"  {library}: {found}", file=sys.stderr)
        return result
    return result | found


def versions(python: str) -> dict[str, str]:
    """Versions in the interpreter `python` (common.py is standard library only)."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from common import versions\n"
        "names = ('icechunk', 'zarr', 'xarray', 'numpy', 'virtualizarr')\n"
        "print(json.dumps(versions(names, missing=None)))"
    )
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def table(results: list[dict[str, Any]], refs: int) -> str:
    header = ["library", "manifests", "write s", "commit s", "total s", "cpu s", "refs/s"]
    header += ["peak MB"]
    header += ["build MB", "repo MB"]
    rows = []
    for r in results:
        split = f"split {SPLIT_REFS:,}" if r["split"] else "one per array"
        if "error" in r:
            rows.append([r["library"], split, *["n/a"] * 8])
            continue
        cells = [
            r["library"],
            split,
            f"{r['write_s']:.1f}",
            f"{r['commit_s']:.1f}",
            f"{r['total_s']:.1f}",
            f"{r['cpu_s']:.1f}",
            f"{refs / r['total_s']:,.0f}",
            f"{r['peak_mb']:,.0f}",
            f"{r['build_mb']:,.0f}",
            f"{r['repo_bytes'] / 1e6:,.1f}",
        ]
        rows.append(cells)
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000,000 references, not 10M")
    parser.add_argument("--variables", type=int, default=10)
    parser.add_argument("--files", type=int, default=None, help="default 1000 (--quick: 100)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (the fastest)")
    parser.add_argument("--vz-python", default=str(DEFAULT_VZ_PYTHON))
    parser.add_argument("--only", choices=LIBRARIES, nargs="+", default=None)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        library, variables, files, split = args.child
        print(json.dumps(child(library, int(variables), int(files), split == "1")))
        return
    files = args.files or (100 if args.quick else 1000)
    refs = args.variables * files * STEPS_PER_FILE * X_CHUNKS
    vz_python = args.vz_python if Path(args.vz_python).exists() else sys.executable
    pythons = dict.fromkeys(LIBRARIES, sys.executable) | {"virtualizarr": vz_python}
    libraries = args.only or list(LIBRARIES)
    results = []
    for split in (False, True):
        for library in libraries:
            print(
                f"{library}, {'split' if split else 'default'}: {refs:,} refs ...", file=sys.stderr
            )
            case = run_case(pythons[library], library, args.variables, files, split, args.repeats)
            results.append(case)
    print(
        f"\n{refs:,} references ({args.variables} variables x {files} files x 1,000 chunks), "
        f"fastest of {args.repeats} runs\n"
    )
    print(table(results, refs))
    report = {
        "refs": refs,
        "variables": args.variables,
        "files": files,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": {"vcube": versions(sys.executable), "virtualizarr": versions(vz_python)},
        "results": results,
    }
    out = write_report("bench_icechunk", report)
    print(f"\nwritten to {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
