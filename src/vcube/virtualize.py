"""`virtualize`: files in, one persisted virtual datacube out (Kerchunk JSON or Parquet, or an
Icechunk commit), in one call: the `vcube virtualize` command."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from vcube.api import open_virtual_mfdataset
from vcube.errors import VcubeError
from vcube.ingest import REPLACES_KEY, SOURCES_KEY
from vcube.registry import expand_urls
from vcube.stores import ObjectStoreOptions, open_repository, registry_for
from vcube.writers.icechunk_commit import commit_in_batches
from vcube.writers.kerchunk import to_kerchunk

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vcube.parallel import Parallel, TaskFailure
    from vcube.parsers import Parser
    from vcube.progress import Callback
    from vcube.registry import ObjectStoreRegistry

__all__ = ["FORMATS", "OutputFormat", "VirtualizeReport", "infer_format", "virtualize"]

type OutputFormat = Literal["kerchunk-json", "kerchunk-parquet", "icechunk"]
FORMATS: Final[tuple[OutputFormat, ...]] = ("kerchunk-json", "kerchunk-parquet", "icechunk")
SUFFIXES: Final[dict[str, OutputFormat]] = {
    ".json": "kerchunk-json",
    ".parq": "kerchunk-parquet",
    ".parquet": "kerchunk-parquet",
    ".icechunk": "icechunk",
}


@dataclass(frozen=True, slots=True)
class VirtualizeReport:
    """What `virtualize` wrote: where, in which format, from how many files, and what failed."""

    output: str
    format: OutputFormat
    files: int
    references: int
    reference_bytes: int
    data_bytes: int
    seconds: float
    failures: tuple[TaskFailure, ...] = field(default=())
    snapshot: str | None = None


def infer_format(output: str) -> OutputFormat:
    """The output format named by `output`'s suffix (`.json`, `.parq`/`.parquet`,
    `.icechunk`)."""
    name = output.rstrip("/")
    for suffix, fmt in SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise VcubeError(
        f"{output}: cannot tell the output format from the name; name it *.json, *.parq or "
        f"*.icechunk, or pass the format ({', '.join(FORMATS)})"
    )


def virtualize(
    urls: str | Path | Sequence[str | Path],
    output: str,
    *,
    format: OutputFormat | None = None,
    registry: ObjectStoreRegistry | None = None,
    options: ObjectStoreOptions | None = None,
    parser: Parser | None = None,
    branch: str = "main",
    parallel: Parallel = False,
    max_workers: int | None = None,
    retries: int = 3,
    on_error: Literal["raise", "skip"] = "raise",
    progress: bool | Callback = False,
    **mfdataset_kwargs: Any,
) -> VirtualizeReport:
    """Virtualize and combine `urls`, and write the result to `output`.

    Parameters
    ----------
    urls
        Paths, URLs or globs.
    output
        A Kerchunk JSON file, a Kerchunk Parquet directory, or an Icechunk repository (a path
        or ``s3://bucket/prefix``; created when missing, else its `branch` gets a new commit
        that replaces the root group; past a million references, a commit per batch of
        variables, which bounds Icechunk's memory).
    format
        Inferred from `output`'s suffix when None.
    options
        Object-store endpoint, region and anonymous access, for inputs and output.
    **mfdataset_kwargs
        How the files combine (`combine`, `concat_dim`, `loadable_variables`, `group`, ...), as
        for `open_virtual_mfdataset`.
    """
    start = time.perf_counter()
    fmt = format or infer_format(output)
    options = options or ObjectStoreOptions()
    patterns = [str(urls)] if isinstance(urls, str | Path) else [str(u) for u in urls]
    registry = registry or registry_for([*patterns, output], options)
    files = expand_urls(patterns, registry)
    ds = open_virtual_mfdataset(
        files,
        registry,
        parser,
        parallel=parallel,
        max_workers=max_workers,
        retries=retries,
        on_error=on_error,
        progress=progress,
        **mfdataset_kwargs,
    )
    report = ds.vcube.report
    failures = tuple(report.failures) if report else ()
    snapshot = None
    if fmt == "icechunk":
        repo = open_repository(output, options, sources=files)
        failed = {f.url for f in failures}
        sources = [f for f in files if f not in failed]
        snapshot = commit_in_batches(
            ds,
            repo,
            f"vcube virtualize: {len(sources)} files",
            branch=branch,
            metadata={SOURCES_KEY: sources},
            first_metadata={REPLACES_KEY: True},
            mode="w",
        )[-1]
    else:
        kind: Literal["json", "parquet"] = "json" if fmt == "kerchunk-json" else "parquet"
        to_kerchunk(ds, output, format=kind, registry=registry)
    return VirtualizeReport(
        output=output,
        format=fmt,
        files=len(files) - len(failures),
        references=ds.vcube.nrefs,
        reference_bytes=ds.vcube.nbytes,
        data_bytes=int(ds.nbytes),
        seconds=time.perf_counter() - start,
        failures=failures,
        snapshot=snapshot,
    )
