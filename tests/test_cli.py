"""The `vcube` command, run as a user runs it: a subprocess of the installed console script."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import icechunk as ic
import numpy as np
import pytest
import xarray as xr

from vcube.combine import NO_LOAD_COMBINE
from vcube.demo import write_sample_archive
from vcube.ingest import committed_sources
from vcube.stores import ObjectStoreOptions, open_repository

if TYPE_CHECKING:
    from s3_server import S3Server


def vcube(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # The console script installed beside this interpreter (the project's venv).
    exe = str(Path(sys.executable).with_name("vcube"))
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=300, check=False, env=env
    )


def test_demo_verifies_the_datacube(tmp_path: Path) -> None:
    result = vcube("demo", "--directory", str(tmp_path), "--files", "5", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert "5 NetCDF4 files" in result.stdout
    assert "ingested:   3 commits of up to 2 files" in result.stdout
    assert "verified:   85 chunks read through Icechunk equal what h5py reads" in result.stdout
    assert "identical to netCDF4" in result.stdout
    assert len(list((tmp_path / "archive").glob("*.nc"))) == 5


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


def vcube_env(**env: str) -> dict[str, str]:
    return {**os.environ, **env}


def archive(directory: Path, files: int) -> list[Path]:
    directory.mkdir(exist_ok=True)
    return write_sample_archive(directory, files)


@pytest.mark.parametrize("output", ["refs.json", "refs.parq", "cube.icechunk"])
def test_virtualize_writes_each_format(tmp_path: Path, output: str) -> None:
    paths = archive(tmp_path / "data", 3)
    target = tmp_path / output
    result = vcube("virtualize", str(tmp_path / "data" / "*.nc"), "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert "files:       3" in result.stdout
    assert "references:  48" in result.stdout
    if output.endswith(".icechunk"):
        actual = read_repo(target)
    else:
        actual = xr.open_dataset(
            "reference://",
            engine="zarr",
            zarr_format=2,
            consolidated=False,
            chunks=None,
            storage_options={"fo": str(target), "remote_protocol": "file"},
        ).load()
    xr.testing.assert_identical(actual, expected(paths))


def test_virtualize_dry_run_writes_nothing(tmp_path: Path) -> None:
    archive(tmp_path / "data", 4)
    result = vcube(
        "virtualize", str(tmp_path / "data"), "-o", str(tmp_path / "x.json"), "--dry-run"
    )
    assert result.returncode == 1  # a directory of NetCDF files is not a Zarr store
    result = vcube(
        "virtualize",
        str(tmp_path / "data" / "*.nc"),
        "-o",
        str(tmp_path / "x.json"),
        "--dry-run",
        "--memory-limit",
        "1MiB",
    )
    assert result.returncode == 0, result.stderr
    assert "files:              4 (estimates from a sample of 3)" in result.stdout
    assert "references:         ~64" in result.stdout
    assert "kerchunk-parquet:" in result.stdout
    assert "memory limit:       1.0 MiB" in result.stdout
    assert not (tmp_path / "x.json").exists()


def test_bad_arguments_are_explained(tmp_path: Path) -> None:
    archive(tmp_path / "data", 1)
    files = str(tmp_path / "data" / "*.nc")
    result = vcube("virtualize", files, "-o", str(tmp_path / "out.zarr"))
    assert result.returncode == 1
    assert "cannot tell the output format" in result.stderr
    result = vcube("virtualize", str(tmp_path / "none-*.nc"), "-o", str(tmp_path / "o.json"))
    assert result.returncode == 1
    assert "none-*.nc: no files match" in result.stderr
    result = vcube("virtualize", files, "-o", "o.json", "--parallel", "gpu")
    assert result.returncode == 2
    assert "gpu" in result.stderr
    result = vcube("ingest", files, "--repo", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "--append-dim" in result.stderr
    for verb in ("virtualize", "ingest", "verify", "info", "demo"):
        assert vcube(verb, "--help").returncode == 0


def read_repo(path: Path) -> xr.Dataset:
    repo = open_repository(str(path), ObjectStoreOptions())
    ds: xr.Dataset = xr.open_zarr(
        repo.readonly_session("main").store, zarr_format=3, consolidated=False, chunks=None
    )
    return ds.load()


def expected(paths: list[Path]) -> xr.Dataset:
    return xr.concat(
        [xr.open_dataset(p, engine="netcdf4").load() for p in paths], dim="time", **NO_LOAD_COMBINE
    )


def committed(repo: Path) -> list[str]:
    try:
        return committed_sources(open_repository(str(repo), ObjectStoreOptions()))
    except (ic.IcechunkError, OSError, ValueError):  # being created or written
        return []


def test_ingest_killed_midway_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    paths = archive(data, 70)
    first_60 = data / "first"
    first_60.mkdir()
    for p in paths[:60]:
        p.rename(first_60 / p.name)
    repo = tmp_path / "repo"
    args = ["ingest", str(first_60 / "*.nc"), "--repo", str(repo), "--append-dim", "time"]
    args += ["--batch-size", "10"]
    exe = str(Path(sys.executable).with_name("vcube"))
    child = subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not committed(repo) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done = committed(repo)
    assert 0 < len(done) < 60, "the kill came too late to test a resume"
    assert child.returncode == -signal.SIGKILL
    result = vcube(*args)
    assert result.returncode == 0, result.stderr
    assert f"{len(done)} already committed, {60 - len(done)} ingested" in result.stdout
    moved = [first_60 / p.name for p in paths[:60]]
    assert committed(repo) == [p.as_uri() for p in moved]
    xr.testing.assert_identical(read_repo(repo), expected(moved))
    # Ten new files arrive: only they are appended.
    for p in paths[60:]:
        p.rename(first_60 / p.name)
    result = vcube(*args)
    assert result.returncode == 0, result.stderr
    assert "70 found, 60 already committed, 10 ingested in 1 commits" in result.stdout
    everything = [first_60 / p.name for p in paths]
    xr.testing.assert_identical(read_repo(repo), expected(everything))
    result = vcube("verify", str(repo), "--samples", "20")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: every chunk checked is equal" in result.stdout


def test_verify_reports_a_corrupted_chunk(tmp_path: Path) -> None:
    paths = archive(tmp_path / "data", 3)
    repo = tmp_path / "cube.icechunk"
    args = ["ingest", str(tmp_path / "data" / "*.nc"), "--repo", str(repo), "--append-dim", "time"]
    assert vcube(*args).returncode == 0
    assert vcube("verify", str(repo), "--all").returncode == 0
    with h5py.File(paths[1]) as f:
        offset, size = f["uwnd"].id.get_chunk_info(2)[2:]
    with paths[1].open("r+b") as raw:
        raw.seek(offset + size // 2)
        raw.write(bytes(16))
    result = vcube("verify", str(repo), "--all")
    assert result.returncode == 1
    assert "uwnd" in result.stdout
    assert paths[1].name in result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("uwnd"))
    assert line.split()[1:] == ["12", "11", "1"]  # 3 files x 4 chunks; one differs


@pytest.mark.s3
def test_virtualize_from_s3(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = archive(tmp_path / "data", 2)
    for p in paths:
        s3_server.upload(p, s3_bucket, f"in/{p.name}")
    target = tmp_path / "cube.icechunk"
    env = vcube_env(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    result = vcube(
        "virtualize",
        f"s3://{s3_bucket}/in/*.nc",
        "-o",
        str(target),
        "--endpoint",
        s3_server.endpoint,
        "--region",
        "us-east-1",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    options = ObjectStoreOptions(endpoint=s3_server.endpoint, region="us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    repo = open_repository(str(target), options)
    actual = xr.open_zarr(
        repo.readonly_session("main").store, zarr_format=3, consolidated=False, chunks=None
    ).load()
    xr.testing.assert_identical(actual, expected(paths))


def test_info_on_persisted_datacubes(tmp_path: Path) -> None:
    archive(tmp_path / "data", 3)
    files = str(tmp_path / "data" / "*.nc")
    repo, refs = tmp_path / "cube.icechunk", tmp_path / "refs.json"
    assert vcube("ingest", files, "--repo", str(repo), "--append-dim", "time").returncode == 0
    assert vcube("virtualize", files, "-o", str(refs)).returncode == 0
    result = vcube("info", str(repo))
    assert result.returncode == 0, result.stderr
    assert f"Icechunk repository {repo}, branch main" in result.stdout
    assert "air (time: 3, lat: 73, lon: 144) float32: chunks=(1, 37, 72)" in result.stdout
    assert "codecs=[bytes, numcodecs.shuffle, numcodecs.zlib] stored chunks=12" in result.stdout
    result = vcube("info", str(refs))
    assert result.returncode == 0, result.stderr
    assert "air: chunks=(1, 37, 72) codecs=[bytes, numcodecs.shuffle, numcodecs.zlib]" in (
        result.stdout
    )
    assert "references=12" in result.stdout


def test_errors_of_repositories_and_options_are_one_line(tmp_path: Path) -> None:
    archive(tmp_path / "data", 2)
    files = str(tmp_path / "data" / "*.nc")
    repo = tmp_path / "cube.icechunk"
    assert vcube("ingest", files, "--repo", str(repo), "--append-dim", "time").returncode == 0
    a_file = str(tmp_path / "data" / "air_2024-01-01T00.nc")
    for args, message in [
        (("info", str(repo), "--branch", "nope"), "no branch 'nope' (branches: main)"),
        (("verify", str(repo), "--branch", "nope"), "no branch 'nope'"),
        (
            ("ingest", files, "--repo", a_file, "--append-dim", "time"),
            "is a file, not an Icechunk repository",
        ),
        (
            ("ingest", files, "--repo", str(tmp_path / "r2"), "--append-dim", "level"),
            "cannot be joined along 'level'",
        ),
    ]:
        result = vcube(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.startswith("error: "), result.stderr
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    result = vcube(
        "ingest", files, "--repo", "r", "--append-dim", "time", "--dry-run", "--memory-limit", "4i"
    )
    assert result.returncode == 2
    assert "is not a size such as 4GiB" in result.stderr
