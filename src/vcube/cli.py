"""The `vcube` command line: a thin layer over the public Python API.

Every verb parses its arguments and calls one function (`virtualize`, `ingest`, `plan`,
`verify`, `run_demo`); what it prints is that function's report.
"""

from __future__ import annotations

import gc
import os
import re
import sys
from enum import StrEnum
from pathlib import Path  # noqa: TC003  (typer reads the annotations at run time)
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vcube.demo import run_demo
from vcube.errors import VcubeError
from vcube.info import describe
from vcube.ingest import ingest as run_ingest
from vcube.plan import plan
from vcube.registry import expand_urls
from vcube.stores import ObjectStoreOptions, registry_for
from vcube.verify import verify as run_verify
from vcube.virtualize import infer_format
from vcube.virtualize import virtualize as run_virtualize

if TYPE_CHECKING:
    from vcube.parallel import TaskFailure

app = typer.Typer(
    help="Turn archival scientific files into one virtual, cloud-optimized Zarr datacube.",
    no_args_is_help=True,
    add_completion=False,
)


class Format(StrEnum):
    kerchunk_json = "kerchunk-json"
    kerchunk_parquet = "kerchunk-parquet"
    icechunk = "icechunk"


class Executor(StrEnum):
    serial = "serial"
    threads = "threads"
    processes = "processes"
    dask = "dask"
    lithops = "lithops"


class Combine(StrEnum):
    by_coords = "by_coords"
    nested = "nested"


class OnError(StrEnum):
    raise_ = "raise"
    skip = "skip"


Inputs = Annotated[list[str], typer.Argument(help="Files, URLs or globs (quote globs).")]
Endpoint = Annotated[
    str | None, typer.Option(help="S3-compatible endpoint URL (MinIO, Ceph, ...).")
]
Region = Annotated[str | None, typer.Option(help="Object-store region.")]
Anonymous = Annotated[bool, typer.Option(help="Read public buckets without credentials.")]
ParallelOpt = Annotated[Executor, typer.Option("--parallel", help="How files are virtualized.")]
Workers = Annotated[int | None, typer.Option(min=1, help="Workers for threads/processes.")]
Retries = Annotated[int, typer.Option(min=0, help="Retries per file for transient failures.")]
OnErrorOpt = Annotated[
    OnError, typer.Option("--on-error", help="Stop at the first failure, or skip failed files.")
]
Loadable = Annotated[
    list[str] | None,
    typer.Option("--loadable", help="Variable to load as values (repeat; default: coordinates)."),
]
Group = Annotated[str | None, typer.Option(help="Group inside the files to virtualize.")]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Virtualize a sample and print the plan only.")
]
MemoryLimit = Annotated[
    str | None,
    typer.Option(
        help="With --dry-run: memory budget of one batch, e.g. 4GiB (default: a quarter of RAM)."
    ),
]
Progress = Annotated[
    bool | None, typer.Option(help="Progress bar on stderr (default: when it is a terminal).")
]


@app.command()
def virtualize(
    urls: Inputs,
    output: Annotated[
        str, typer.Option("-o", "--output", help="*.json, *.parq or *.icechunk (path or URL).")
    ],
    format: Annotated[
        Format | None, typer.Option(help="Output format (default: from the output's name).")
    ] = None,
    concat_dim: Annotated[
        str | None,
        typer.Option(help="Concatenate along this dimension in the order given (nested)."),
    ] = None,
    combine: Annotated[Combine, typer.Option(help="xarray's combine mode.")] = Combine.by_coords,
    parallel: ParallelOpt = Executor.serial,
    workers: Workers = None,
    retries: Retries = 3,
    on_error: OnErrorOpt = OnError.raise_,
    loadable: Loadable = None,
    group: Group = None,
    endpoint: Endpoint = None,
    region: Region = None,
    anonymous: Anonymous = False,
    dry_run: DryRun = False,
    memory_limit: MemoryLimit = None,
    progress: Progress = None,
) -> None:
    """Virtualize files and write one datacube as Kerchunk JSON / Parquet or into Icechunk."""
    options = ObjectStoreOptions(endpoint, region, anonymous)
    fmt = format.value if format else infer_format(output)
    combine_kwargs = _combine(combine, concat_dim)
    open_kwargs = _open_kwargs(loadable, group)
    if dry_run:
        _print_plan(urls, options, memory_limit, **combine_kwargs, **open_kwargs)
        return
    report = run_virtualize(
        urls,
        output,
        format=fmt,
        options=options,
        parallel=_parallel(parallel),
        max_workers=workers,
        retries=retries,
        on_error=on_error.value,
        progress=_show_progress(progress),
        **combine_kwargs,
        **open_kwargs,
    )
    typer.echo(f"wrote:       {report.output} ({report.format})")
    typer.echo(f"files:       {report.files:,}")
    typer.echo(
        f"references:  {report.references:,} ({report.reference_bytes:,} bytes in memory, "
        f"{report.data_bytes:,} bytes of data)"
    )
    typer.echo(f"time:        {report.seconds:.1f} s")
    _exit_on_failures(report.failures)


@app.command()
def ingest(
    urls: Inputs,
    repo: Annotated[str, typer.Option(help="Icechunk repository: a path or s3://bucket/prefix.")],
    append_dim: Annotated[str, typer.Option(help="Dimension the files follow each other along.")],
    batch_size: Annotated[int, typer.Option(min=1, help="Files per commit.")] = 100,
    branch: Annotated[str, typer.Option(help="Branch to commit to.")] = "main",
    parallel: ParallelOpt = Executor.serial,
    workers: Workers = None,
    retries: Retries = 3,
    on_error: OnErrorOpt = OnError.raise_,
    loadable: Loadable = None,
    group: Group = None,
    endpoint: Endpoint = None,
    region: Region = None,
    anonymous: Anonymous = False,
    dry_run: DryRun = False,
    memory_limit: MemoryLimit = None,
    progress: Progress = None,
) -> None:
    """Append files to an Icechunk repository in batches, one commit each; rerun to resume."""
    options = ObjectStoreOptions(endpoint, region, anonymous)
    open_kwargs = _open_kwargs(loadable, group)
    if dry_run:
        _print_plan(
            urls, options, memory_limit, combine="nested", concat_dim=append_dim, **open_kwargs
        )
        return
    report = run_ingest(
        urls,
        repo,
        append_dim=append_dim,
        batch_size=batch_size,
        branch=branch,
        options=options,
        parallel=_parallel(parallel),
        max_workers=workers,
        retries=retries,
        on_error=on_error.value,
        progress=_show_progress(progress),
        **open_kwargs,
    )
    typer.echo(f"repository:  {report.repo} (branch {report.branch})")
    typer.echo(
        f"files:       {report.files:,} found, {report.skipped:,} already committed, "
        f"{report.ingested:,} ingested in {len(report.commits)} commits"
    )
    typer.echo(f"references:  {report.references:,}")
    typer.echo(f"time:        {report.seconds:.1f} s")
    _exit_on_failures(report.failures)


@app.command()
def verify(
    target: Annotated[
        str, typer.Argument(help="Kerchunk JSON, Kerchunk Parquet or Icechunk repository.")
    ],
    against: Annotated[
        list[str] | None,
        typer.Option(help="Source files or globs to compare with (repeat; default: all)."),
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="Chunks checked per variable.")] = 10,
    all_chunks: Annotated[bool, typer.Option("--all", help="Check every chunk.")] = False,
    branch: Annotated[str, typer.Option(help="Icechunk branch.")] = "main",
    seed: Annotated[int, typer.Option(help="Seed of the random choice of chunks.")] = 0,
    endpoint: Endpoint = None,
    region: Region = None,
    anonymous: Anonymous = False,
) -> None:
    """Read chunks through the references and through the original files; exit 0 only if equal."""
    report = run_verify(
        target,
        against=against or None,
        samples=None if all_chunks else samples,
        options=ObjectStoreOptions(endpoint, region, anonymous),
        seed=seed,
        branch=branch,
    )
    typer.echo(report.format())
    if not report.ok:
        raise typer.Exit(code=1)


@app.command()
def demo(
    directory: Annotated[
        Path | None, typer.Option(help="Where to write the sample archive (default: a temp dir).")
    ] = None,
    files: Annotated[int, typer.Option(min=1, help="Number of hourly NetCDF4 files.")] = 48,
    batch_size: Annotated[int, typer.Option(min=1, help="Files per commit.")] = 12,
) -> None:
    """Write a NetCDF4 archive, ingest it into Icechunk in batches, verify every value."""
    report = run_demo(directory, files, batch_size)
    typer.echo(f"archive:    {report.files} NetCDF4 files in {report.directory / 'archive'}")
    typer.echo(
        f"ingested:   {report.commits} commits of up to {report.batch_size} files into "
        f"{report.repo} in {report.seconds_ingest:.1f} s (metadata only)"
    )
    typer.echo(
        f"datacube:   {report.variables} variables, {report.references:,} chunk references "
        f"to {report.data_bytes:,} bytes of data"
    )
    verdict = "equal" if report.verified else "do NOT equal"
    typer.echo(
        f"verified:   {report.chunks_verified:,} chunks read through Icechunk {verdict} "
        f"what h5py reads from the files"
    )
    same = "identical to netCDF4" if report.identical else "DIFFERENT from netCDF4"
    typer.echo(f"read back:  {same}")
    if not (report.identical and report.verified):
        raise typer.Exit(code=1)


@app.command()
def info(
    target: Annotated[
        str, typer.Argument(help="A file, Kerchunk references or an Icechunk repository.")
    ],
    branch: Annotated[str, typer.Option(help="Icechunk branch.")] = "main",
    endpoint: Endpoint = None,
    region: Region = None,
    anonymous: Anonymous = False,
) -> None:
    """Show variables, dimensions, chunk grids, codecs and references of a file or datacube."""
    options = ObjectStoreOptions(endpoint, region, anonymous)
    typer.echo(describe(target, options=options, branch=branch))


def _combine(combine: Combine, concat_dim: str | None) -> dict[str, Any]:
    if concat_dim and combine is Combine.by_coords:
        return {"combine": "nested", "concat_dim": concat_dim}
    return {"combine": combine.value, "concat_dim": concat_dim}


def _open_kwargs(loadable: list[str] | None, group: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if loadable is not None:
        kwargs["loadable_variables"] = loadable
    if group is not None:
        kwargs["group"] = group
    return kwargs


def _parallel(executor: Executor) -> Any:
    return False if executor is Executor.serial else executor.value


def _show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


def _print_plan(
    urls: list[str], options: ObjectStoreOptions, memory_limit: str | None, **kwargs: Any
) -> None:
    registry = registry_for(urls, options)
    files = expand_urls(urls, registry)
    estimate = plan(
        files,
        registry=registry,
        options=options,
        memory_limit=parse_size(memory_limit) if memory_limit else None,
        **kwargs,
    )
    typer.echo("dry run: nothing written")
    typer.echo(estimate.format())


def _exit_on_failures(failures: tuple[TaskFailure, ...]) -> None:
    if not failures:
        return
    typer.echo(f"failed:      {len(failures)} files", err=True)
    for f in failures:
        typer.echo(f"  {f.url}: {f.error_type}: {f.message} ({f.attempts} attempts)", err=True)
    raise typer.Exit(code=1)


def _quiet_icechunk() -> None:
    """Icechunk logs only errors (not its warning that local storage is not safe for
    concurrent commits: `ingest` serializes them) unless ICECHUNK_LOG says otherwise."""
    if "ICECHUNK_LOG" in os.environ:
        return
    try:
        import icechunk as ic
    except ImportError:
        return
    ic.set_logs_filter("error")


SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*((?:[kmgt]i?)?b?)\s*", re.IGNORECASE)
UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(text: str) -> int:
    """Bytes in `4GiB`, `500MB`, `2g` or `1000000`."""
    match = SIZE.fullmatch(text)
    if not match:
        raise typer.BadParameter(f"{text!r} is not a size such as 4GiB or 500MB")
    number, unit = float(match[1]), match[2].lower().rstrip("b")
    factor = 1024 ** " kmgt".index(unit[0]) if unit.endswith("i") else UNITS[unit]
    return int(number * factor)


def main() -> None:
    """Console entry point: vcube's and Icechunk's errors become a one-line message and exit
    code 1."""
    _quiet_icechunk()
    try:
        app()
    except VcubeError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)
    except Exception as err:
        if type(err).__module__.split(".")[0] != "icechunk":
            raise
        typer.echo(f"error: icechunk: {str(err).splitlines()[0]}", err=True)
        sys.exit(1)
    finally:
        # Icechunk objects left in reference cycles, collected only while the interpreter
        # shuts down, crash it now and then (a segfault after the output): collect them here.
        gc.collect()
