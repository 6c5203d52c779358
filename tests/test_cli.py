"""The `vcube` command, run as a user runs it: a subprocess of the installed console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np


def vcube(*args: str) -> subprocess.CompletedProcess[str]:
    # The console script installed beside this interpreter (the project's venv).
    exe = str(Path(sys.executable).with_name("vcube"))
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, check=False)


def test_demo_verifies_the_datacube(tmp_path: Path) -> None:
    result = vcube("demo", "--directory", str(tmp_path), "--files", "3")
    assert result.returncode == 0, result.stderr
    assert "3 NetCDF4 files" in result.stdout
    assert "identical to netCDF4" in result.stdout
    assert len(list(tmp_path.glob("*.nc"))) == 3


def test_info_shows_chunks_and_codecs(tmp_path: Path) -> None:
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(100.0), chunks=(10,), compression="gzip")
    result = vcube("info", str(path))
    assert result.returncode == 0, result.stderr
    assert "x: chunks=(10,) codecs=[bytes, numcodecs.zlib]" in result.stdout
    assert "references: 10" in result.stdout


def test_errors_are_one_line_and_exit_non_zero(tmp_path: Path) -> None:
    result = vcube("info", str(tmp_path / "missing.nc"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {(tmp_path / 'missing.nc').as_uri()}: file not found"


def test_help_and_bad_arguments() -> None:
    assert "demo" in vcube("--help").stdout
    assert vcube("demo", "--files", "0").returncode == 2
