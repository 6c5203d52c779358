"""The `vcube` command line: a thin layer over the public Python API."""

from __future__ import annotations

import sys
from pathlib import Path  # noqa: TC003  (typer reads the annotations at run time)
from typing import Annotated

import typer

from vcube.api import open_virtual_dataset
from vcube.demo import run_demo
from vcube.errors import VcubeError

app = typer.Typer(
    help="Turn archival scientific files into one virtual, cloud-optimized Zarr datacube.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def demo(
    directory: Annotated[
        Path | None, typer.Option(help="Where to write the sample archive (default: a temp dir).")
    ] = None,
    files: Annotated[int, typer.Option(min=1, help="Number of hourly NetCDF4 files.")] = 12,
) -> None:
    """Write a small NetCDF4 archive, virtualize and combine it, and check every value."""
    report = run_demo(directory, files)
    typer.echo(f"archive:      {report.files} NetCDF4 files in {report.directory}")
    typer.echo(f"virtualized:  {report.seconds_virtualize:.2f} s (metadata only)")
    typer.echo(f"datacube:     {report.variables} variables, {report.references} chunk references")
    typer.echo(
        f"memory:       {report.reference_bytes:,} bytes of references for "
        f"{report.data_bytes:,} bytes of data"
    )
    verdict = "identical to netCDF4" if report.identical else "DIFFERENT from netCDF4"
    typer.echo(f"read back:    {verdict}")
    if not report.identical:
        raise typer.Exit(code=1)


@app.command()
def info(url: Annotated[str, typer.Argument(help="A file path or URL.")]) -> None:
    """Show the variables, chunk grids, codecs and references of one file."""
    ds = open_virtual_dataset(url, loadable_variables=[])
    typer.echo(str(ds))
    for name, var in ds.variables.items():
        data = var.data
        codecs = ", ".join(c.to_dict()["name"] for c in getattr(data, "codecs", ()))
        chunks = getattr(data, "chunks", None)
        typer.echo(f"{name}: chunks={chunks} codecs=[{codecs}]")
    typer.echo(f"references: {ds.vcube.nrefs}, in memory: {ds.vcube.nbytes:,} bytes")


def main() -> None:
    """Console entry point: vcube errors become a one-line message and exit code 1."""
    try:
        app()
    except VcubeError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)
