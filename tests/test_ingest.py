"""`vcube.ingest.ingest` into real Icechunk repositories: batches become commits that record their
files, reruns resume, order along the append dimension is kept, and the repository reads back
exactly what netCDF4 reads from the files."""

from __future__ import annotations

import multiprocessing
from typing import TYPE_CHECKING

import icechunk as ic
import netCDF4
import numpy as np
import pytest
import xarray as xr

from vcube.combine import NO_LOAD_COMBINE
from vcube.demo import write_sample_archive
from vcube.errors import IncompatibleArraysError, SourceNotFoundError, UnsupportedFormatError
from vcube.ingest import committed_sources, ingest
from vcube.plan import plan
from vcube.registry import normalize_url
from vcube.stores import ObjectStoreOptions, open_repository

if TYPE_CHECKING:
    from pathlib import Path

    from s3_server import S3Server


def expected(paths: list[Path]) -> xr.Dataset:
    return xr.concat(
        [xr.open_dataset(p, engine="netcdf4").load() for p in paths], dim="time", **NO_LOAD_COMBINE
    )


def read_repo(location: str, options: ObjectStoreOptions | None = None) -> xr.Dataset:
    repo = open_repository(location, options or ObjectStoreOptions())
    store = repo.readonly_session("main").store
    ds: xr.Dataset = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None)
    return ds.load()


def test_batches_are_commits_that_name_their_files(tmp_path: Path) -> None:
    paths = write_sample_archive(tmp_path, 7)
    repo = str(tmp_path / "repo")
    report = ingest(str(tmp_path / "*.nc"), repo, append_dim="time", batch_size=3)
    assert (report.files, report.skipped, report.ingested) == (7, 0, 7)
    assert len(report.commits) == 3  # 3 + 3 + 1
    assert report.references == 7 * 4 * 4  # 4 variables x 4 chunks (coordinates are loaded)
    xr.testing.assert_identical(read_repo(repo), expected(paths))
    repository = open_repository(repo, ObjectStoreOptions())
    assert committed_sources(repository) == [normalize_url(p) for p in paths]
    messages = [s.message for s in repository.ancestry(branch="main")]
    assert messages[0].startswith("vcube ingest: 1 files")
    assert len(messages) == 4  # and the repository's initial commit


def test_rerun_skips_committed_files_and_appends_new_ones(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    paths = write_sample_archive(data, 6)
    repo = str(tmp_path / "repo")
    first = ingest(paths[:4], repo, append_dim="time", batch_size=2)
    assert first.ingested == 4
    again = ingest(paths[:4], repo, append_dim="time", batch_size=2)
    assert (again.skipped, again.ingested, again.commits) == (4, 0, ())
    more = ingest(str(data / "*.nc"), repo, append_dim="time", batch_size=2)
    assert (more.skipped, more.ingested, len(more.commits)) == (4, 2, 1)
    xr.testing.assert_identical(read_repo(repo), expected(paths))


def test_a_file_before_the_stored_data_is_refused(tmp_path: Path) -> None:
    paths = write_sample_archive(tmp_path, 4)
    repo = str(tmp_path / "repo")
    ingest(paths[2:], repo, append_dim="time", batch_size=2)
    with pytest.raises(IncompatibleArraysError, match=r"does not come after the last time"):
        ingest(paths[:1], repo, append_dim="time")
    xr.testing.assert_identical(read_repo(repo), expected(paths[2:]))


def test_inputs_out_of_order_are_refused(tmp_path: Path) -> None:
    paths = write_sample_archive(tmp_path, 3)
    with pytest.raises(IncompatibleArraysError, match="do not increase"):
        ingest([paths[1], paths[0]], str(tmp_path / "repo"), append_dim="time")


def test_a_failed_batch_leaves_the_last_good_commit(tmp_path: Path) -> None:
    paths = write_sample_archive(tmp_path, 4)
    paths[3].write_bytes(b"not a netcdf file at all")
    repo = str(tmp_path / "repo")
    with pytest.raises(UnsupportedFormatError, match=r"air_2024-01-01T03\.nc: unrecognized"):
        ingest(paths, repo, append_dim="time", batch_size=2)
    repository = open_repository(repo, ObjectStoreOptions())
    assert committed_sources(repository) == [normalize_url(p) for p in paths[:2]]
    xr.testing.assert_identical(read_repo(repo), expected(paths[:2]))


def test_skip_reports_failed_files_and_commits_the_rest(tmp_path: Path) -> None:
    paths = write_sample_archive(tmp_path, 4)
    paths[3].write_bytes(b"garbage")
    report = ingest(paths, str(tmp_path / "repo"), append_dim="time", on_error="skip")
    assert report.ingested == 3
    assert [f.url for f in report.failures] == [normalize_url(paths[3])]
    assert not report.ok


def test_missing_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=r"nothing-\*\.nc: no files match"):
        ingest(str(tmp_path / "nothing-*.nc"), str(tmp_path / "repo"), append_dim="time")


def test_new_repository_splits_manifests_along_the_append_dim(tmp_path: Path) -> None:
    paths = write_sample_archive(tmp_path, 2)
    ingest(paths, str(tmp_path / "repo"), append_dim="time", split_size=24)
    config = ic.Repository.fetch_config(ic.local_filesystem_storage(str(tmp_path / "repo")))
    assert config is not None
    assert config.manifest is not None
    assert "time" in repr(config.manifest.splitting)
    assert str(tmp_path.as_uri()) + "/" in (config.virtual_chunk_containers or {})


def _ingest_in_child(paths: list[str], repo: str) -> None:
    ingest(paths, repo, append_dim="time", batch_size=2)


def test_concurrent_runs_commit_every_file_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    paths = [str(p) for p in write_sample_archive(data, 12)]
    repo = str(tmp_path / "repo")
    open_repository(repo, ObjectStoreOptions(), sources=paths)
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_ingest_in_child, args=(paths, repo)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
    repository = open_repository(repo, ObjectStoreOptions())
    assert committed_sources(repository) == [normalize_url(p) for p in paths]
    xr.testing.assert_identical(read_repo(repo), expected([data / p for p in sorted(paths)]))


def test_plan_scales_a_sample(tmp_path: Path) -> None:
    paths = [normalize_url(p) for p in write_sample_archive(tmp_path, 9)]
    estimate = plan(paths, combine="nested", concat_dim="time", memory_limit=10**9)
    assert (estimate.files, estimate.sampled) == (9, 3)
    one = plan(paths[:1], combine="nested", concat_dim="time")
    assert estimate.references == pytest.approx(9 * one.references, rel=0.1)
    assert set(estimate.output_bytes) == {"kerchunk-json", "kerchunk-parquet", "icechunk"}
    assert all(n > 0 for n in estimate.output_bytes.values())
    small = plan(paths, combine="nested", concat_dim="time", memory_limit=estimate.memory_per_file)
    assert small.batch_size == 1
    assert estimate.batch_size == 9


@pytest.fixture
def s3_options(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> ObjectStoreOptions:
    """The test server's options, and the credentials Icechunk's `from_env` reads."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return ObjectStoreOptions(endpoint=s3_server.endpoint, region="us-east-1")


@pytest.mark.s3
def test_inputs_on_s3(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, s3_options: ObjectStoreOptions
) -> None:
    paths = write_sample_archive(tmp_path, 4)
    for p in paths:
        s3_server.upload(p, s3_bucket, f"archive/{p.name}")
    repo = str(tmp_path / "repo")
    report = ingest(f"s3://{s3_bucket}/archive/*.nc", repo, append_dim="time", options=s3_options)
    assert report.ingested == 4
    actual = read_repo(repo, s3_options)
    xr.testing.assert_identical(actual, expected(paths))
    with netCDF4.Dataset(paths[0]) as nc:
        np.testing.assert_array_equal(actual["air"].values[0], nc["air"][0].data)


@pytest.mark.s3
def test_repository_on_s3(tmp_path: Path, s3_bucket: str, s3_options: ObjectStoreOptions) -> None:
    paths = write_sample_archive(tmp_path, 4)
    repo = f"s3://{s3_bucket}/cubes/air"
    assert ingest(paths[:2], repo, append_dim="time", options=s3_options).ingested == 2
    report = ingest(paths, repo, append_dim="time", options=s3_options, batch_size=1)
    assert (report.skipped, report.ingested, len(report.commits)) == (2, 2, 2)
    xr.testing.assert_identical(read_repo(repo, s3_options), expected(paths))


def test_ingest_after_virtualize_counts_only_what_the_last_replace_holds(tmp_path: Path) -> None:
    from vcube.virtualize import virtualize

    paths = write_sample_archive(tmp_path, 4)
    repo = str(tmp_path / "cube.icechunk")
    virtualize(paths, repo, combine="nested", concat_dim="time")
    virtualize(paths[:1], repo)  # replaces the whole group: only the first file is left
    report = ingest(paths, repo, append_dim="time")
    assert (report.skipped, report.ingested) == (1, 3)
    xr.testing.assert_identical(read_repo(repo), expected(paths))


def test_a_file_skipped_earlier_is_reported_not_blocking(tmp_path: Path) -> None:
    paths = write_sample_archive(tmp_path, 5)
    good = paths[2].read_bytes()
    paths[2].write_bytes(good[:100])  # truncated: this run skips it
    repo = str(tmp_path / "repo")
    first = ingest(paths[:4], repo, append_dim="time", on_error="skip", batch_size=1)
    assert [f.url for f in first.failures] == [normalize_url(paths[2])]
    paths[2].write_bytes(good)
    again = ingest(paths, repo, append_dim="time", on_error="skip")
    assert again.ingested == 1  # the fifth file; the third cannot go in the middle any more
    assert again.skipped == 3  # already committed; the stranded third is a failure, not these
    assert [f.url for f in again.failures] == [normalize_url(paths[2])]
    assert "comes before files already committed" in again.failures[0].message
    with pytest.raises(IncompatibleArraysError, match=r"T02\.nc comes before files already"):
        ingest(paths, repo, append_dim="time")
    kept = [p for i, p in enumerate(paths) if i != 2]
    xr.testing.assert_identical(read_repo(repo), expected(kept))


def test_batches_over_the_commit_limit_are_split_by_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vcube.ingest.MAX_REFS_PER_COMMIT", 40)  # 16 references per file
    paths = write_sample_archive(tmp_path, 5)
    repo = str(tmp_path / "repo")
    report = ingest(paths, repo, append_dim="time", batch_size=5)
    assert len(report.commits) == 3  # 80 references: 2 files + 3 (48, still over) -> 1 + 2
    repository = open_repository(repo, ObjectStoreOptions())
    held = [s.metadata.get("vcube_sources", ()) for s in repository.ancestry(branch="main")]
    held = held[:-1]  # the repository's initial commit
    assert [len(s) for s in reversed(held)] == [2, 1, 2]
    assert committed_sources(repository) == [normalize_url(p) for p in paths]
    xr.testing.assert_identical(read_repo(repo), expected(paths))


def test_a_new_branch_starts_from_main(tmp_path: Path) -> None:
    paths = write_sample_archive(tmp_path, 2)
    repo = str(tmp_path / "repo")
    report = ingest(paths, repo, append_dim="time", branch="dev")
    assert report.ingested == 2
    repository = open_repository(repo, ObjectStoreOptions())
    assert set(repository.list_branches()) == {"main", "dev"}
    assert committed_sources(repository, "dev") == [normalize_url(p) for p in paths]
    assert committed_sources(repository, "main") == []


def test_files_that_do_not_join_along_the_dimension_are_named(tmp_path: Path) -> None:
    paths = write_sample_archive(tmp_path, 2)
    with pytest.raises(IncompatibleArraysError, match=r"T01\.nc cannot be joined along 'level'"):
        ingest(paths, str(tmp_path / "repo"), append_dim="level")
