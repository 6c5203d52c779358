"""`plan`: what virtualizing a whole collection will cost, estimated from a small sample.

A few files spread over the inputs are virtualized and combined; their references, in-memory
size and the size of every output format (written for real, to memory or a temporary folder)
are scaled to all files. The batch size keeps each batch's combined references under a memory
budget and under Icechunk's limit of references per commit.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from vcube.api import open_virtual_mfdataset
from vcube.ingest import MAX_REFS_PER_COMMIT
from vcube.manifests import ManifestArray
from vcube.registry import normalize_url
from vcube.stores import ObjectStoreOptions, open_repository
from vcube.writers.icechunk import to_icechunk
from vcube.writers.kerchunk import to_kerchunk

if TYPE_CHECKING:
    from collections.abc import Sequence

    import xarray as xr

    from vcube.parsers import Parser
    from vcube.registry import ObjectStoreRegistry

__all__ = ["Plan", "default_memory_limit", "plan"]

MEMORY_FRACTION: Final = 0.25


@dataclass(frozen=True, slots=True)
class Plan:
    """Estimates for all files, from `sampled` of them."""

    files: int
    sampled: int
    references: int
    nbytes: int
    memory_per_file: int
    output_bytes: dict[str, int]
    memory_limit: int
    batch_size: int
    sample_seconds: float

    def format(self) -> str:
        """A readable summary for the command line."""
        lines = [
            f"files:              {self.files:,} (estimates from a sample of {self.sampled})",
            f"references:         ~{self.references:,}",
            (
                f"in memory:          ~{_size(self.nbytes)} of references "
                f"(~{_size(self.memory_per_file)} per file with xarray's overhead)"
            ),
        ]
        lines += [f"{fmt + ':':<19} ~{_size(n)}" for fmt, n in self.output_bytes.items()]
        lines += [
            f"memory limit:       {_size(self.memory_limit)}",
            f"batch size:         {self.batch_size:,} files per batch",
            f"time (serial):      ~{self.sample_seconds / self.sampled * self.files:,.0f} s",
        ]
        return "\n".join(lines)


def default_memory_limit() -> int:
    """A quarter of this machine's physical memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return int(total * MEMORY_FRACTION)


def plan(
    urls: Sequence[str],
    *,
    registry: ObjectStoreRegistry | None = None,
    parser: Parser | None = None,
    sample: int = 3,
    memory_limit: int | None = None,
    options: ObjectStoreOptions | None = None,
    **mfdataset_kwargs: Any,
) -> Plan:
    """Estimate references, memory, output sizes and a batch size for virtualizing `urls`.

    Parameters
    ----------
    urls
        Every input URL (globs already expanded).
    sample
        Files to virtualize, spread evenly over `urls` (first and last included).
    memory_limit
        Bytes one batch's combined references may take; `default_memory_limit()` when None.
    options
        Object-store options of the inputs (for the Icechunk size estimate).
    **mfdataset_kwargs
        How the files combine (`combine`, `concat_dim`, ...), as for `open_virtual_mfdataset`.
    """
    n = len(urls)
    k = max(1, min(sample, n))
    picks = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})
    sampled = [urls[i] for i in picks]
    # Warm up first: imports and caches of the first parse are not memory per file.
    open_virtual_mfdataset(sampled[:1], registry, parser, **mfdataset_kwargs)
    # Garbage collected around the measure: a collection of earlier garbage within it would
    # shrink (or even negate) what the sample retains.
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ds = open_virtual_mfdataset(sampled, registry, parser, **mfdataset_kwargs)
        seconds = time.perf_counter() - start
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    scale = n / len(sampled)
    refs_per_file = ds.vcube.nrefs / len(sampled)
    per_file = max(1, retained // len(sampled))
    limit = memory_limit or default_memory_limit()
    by_memory = limit // per_file
    by_refs = int(MAX_REFS_PER_COMMIT // max(refs_per_file, 1))
    return Plan(
        files=n,
        sampled=len(sampled),
        references=round(ds.vcube.nrefs * scale),
        nbytes=round(ds.vcube.nbytes * scale),
        memory_per_file=per_file,
        output_bytes={
            k: round(v * scale)
            for k, v in _output_sizes(ds, options or ObjectStoreOptions()).items()
        },
        memory_limit=limit,
        batch_size=max(1, min(n, by_memory, by_refs)),
        sample_seconds=seconds,
    )


def _output_sizes(ds: xr.Dataset, options: ObjectStoreOptions) -> dict[str, int]:
    """Bytes of the sample's references in each output format, written for real."""
    sizes = {"kerchunk-json": len(json.dumps(to_kerchunk(ds)).encode())}
    with tempfile.TemporaryDirectory(prefix="vcube-plan-") as tmp:
        to_kerchunk(ds, Path(tmp, "refs.parq"), format="parquet")
        sizes["kerchunk-parquet"] = _du(Path(tmp, "refs.parq"))
        sizes["icechunk"] = _icechunk_size(ds, Path(tmp, "repo"), options)
    return sizes


def _icechunk_size(ds: xr.Dataset, path: Path, options: ObjectStoreOptions) -> int:
    """Bytes an Icechunk commit of `ds` adds to a new repository."""
    sources = {
        normalize_url(p)
        for v in ds.variables.values()
        if isinstance(v.data, ManifestArray)
        for p in v.data.manifest.paths
    }
    repo = open_repository(str(path), options, sources=sources)
    empty = _du(path)
    session = repo.writable_session("main")
    to_icechunk(ds, session.store)
    session.commit("plan")
    return _du(path) - empty


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"
