"""`to_icechunk`: virtual datasets written into an Icechunk repository, committed, and read back with
plain xarray over `repo.readonly_session("main").store` equal what netCDF4 reads from the files."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import icechunk as ic
import netCDF4
import numpy as np
import pytest
import xarray as xr
from docs_examples import run_docs
from hdf5_files import NETCDF_CASES, write
from parsers.test_hdf5 import RAW, assert_same_dtype, groups_of, is_packed
from s3_server import REGION

import vcube
from vcube import HDFParser, IncompatibleArraysError, ObjectStoreRegistry
from vcube.errors import ReadOnlyError, StoreNotFoundError, UnsupportedFeatureError, VcubeWarning
from vcube.manifests.attrs import strict_json
from vcube.writers.icechunk import to_icechunk
from vcube.writers.icechunk_commit import commit_in_batches

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from s3_server import S3Server


# -- repositories -------------------------------------------------------------------------------


def local_container(directory: Path) -> tuple[ic.VirtualChunkContainer, Any]:
    """A container for the files under `directory`, and its (no-auth) credential."""
    prefix = directory.as_uri() + "/"
    container = ic.VirtualChunkContainer(prefix, ic.local_filesystem_store(str(directory)))
    return container, ic.credentials.LocalFileSystemAccess


def s3_container(server: S3Server, bucket: str) -> tuple[ic.VirtualChunkContainer, Any]:
    """A container for `s3://bucket/` on the test server, and its static credentials."""
    store = ic.s3_store(
        region=REGION,
        endpoint_url=server.endpoint,
        allow_http=True,
        s3_compatible=True,
        force_path_style=True,
    )
    credentials = ic.s3_static_credentials(access_key_id="testing", secret_access_key="testing")
    return ic.VirtualChunkContainer(f"s3://{bucket}/", store), credentials


def repository(
    path: Path, containers: Sequence[tuple[ic.VirtualChunkContainer, Any]] = ()
) -> ic.Repository:
    config = ic.RepositoryConfig.default()
    for container, _ in containers:
        config.set_virtual_chunk_container(container)
    access = {c.url_prefix: credential for c, credential in containers}
    return ic.Repository.create(
        ic.local_filesystem_storage(str(path)),
        config=config,
        authorize_virtual_chunk_access=ic.containers_credentials(access),
    )


def read(repo: ic.Repository, group: str | None = None, **kwargs: Any) -> xr.Dataset:
    store = repo.readonly_session("main").store
    return xr.open_zarr(
        store, group=group, zarr_format=3, consolidated=False, chunks=None, **kwargs
    ).load()


def with_strict_json_attributes(ds: xr.Dataset) -> xr.Dataset:
    """`ds` with non-finite float attributes spelled as strings: Icechunk's JSON has no NaN or
    Infinity, so vcube writes them as Zarr v3 spells them and xarray reads back the strings."""
    ds = ds.copy()
    for attrs in [ds.attrs, *(v.attrs for v in ds.variables.values())]:
        for key, value in attrs.items():
            if isinstance(value, float) and not math.isfinite(value):
                attrs[key] = strict_json(value)
    return ds


# -- round trip over the NetCDF battery -------------------------------------------------------


def write_and_compare(
    repo: ic.Repository, path: Path, url: str, registry: ObjectStoreRegistry | None = None
) -> None:
    """Write every group of the file into one commit, then compare each group read back from a
    read-only session with netCDF4, raw and decoded (as `assert_reads_as_netcdf4`)."""
    session = repo.writable_session("main")
    for group in groups_of(path):
        vds = vcube.open_virtual_dataset(url, registry=registry, parser=HDFParser(group=group))
        to_icechunk(vds, session.store, group=group)
    session.commit(f"virtualize {url}")
    for group in groups_of(path):
        zarr_group = group.strip("/") if group else None
        raw_expected = xr.open_dataset(path, engine="netcdf4", group=group, **RAW).load()
        raw_actual = read(repo, zarr_group, **RAW)
        xr.testing.assert_identical(raw_actual, with_strict_json_attributes(raw_expected))
        for name in raw_expected.variables:
            assert_same_dtype(raw_actual[name], raw_expected[name])
        expected = with_strict_json_attributes(
            xr.open_dataset(path, engine="netcdf4", group=group).load()
        )
        actual = read(repo, zarr_group)
        packed = [k for k, v in raw_expected.variables.items() if is_packed(v)]
        xr.testing.assert_identical(actual.drop_vars(packed), expected.drop_vars(packed))
        for name in packed:  # JSON has no float32: xarray unpacks Zarr data in float64
            np.testing.assert_allclose(actual[name], expected[name], rtol=1e-6)


@pytest.mark.parametrize("case", sorted(NETCDF_CASES))
def test_local_files_round_trip(case: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = write(case, data)
    write_and_compare(repository(tmp_path / "repo", [local_container(data)]), path, str(path))


@pytest.mark.parametrize("case", sorted(NETCDF_CASES))
def test_s3_files_round_trip(
    case: str, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    path = write(case, tmp_path)
    url = s3_server.upload(path, s3_bucket, f"data/{path.name}")
    registry = ObjectStoreRegistry({f"s3://{s3_bucket}": s3_server.store(s3_bucket)})
    repo = repository(tmp_path / "repo", [s3_container(s3_server, s3_bucket)])
    write_and_compare(repo, path, url, registry)


def test_one_bulk_call_per_virtual_array(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write("fletcher32_and_levels", tmp_path)  # three virtual arrays, 4 + 4 + 1 chunks
    repo = repository(tmp_path / "repo", [local_container(tmp_path)])
    calls: list[tuple[str, int]] = []
    bulk = ic.IcechunkStore.set_virtual_refs_arr

    def spy(self: ic.IcechunkStore, path: str, grid: Any, locations: Any, *a: Any, **k: Any) -> Any:
        calls.append((path, len(locations)))
        return bulk(self, path, grid, locations, *a, **k)

    monkeypatch.setattr(ic.IcechunkStore, "set_virtual_refs_arr", spy)
    session = repo.writable_session("main")
    to_icechunk(vcube.open_virtual_dataset(path), session.store)
    assert sorted(calls) == [("checked", 4), ("noshuffle", 1), ("zlib9", 4)]


# -- append -----------------------------------------------------------------------------------


def time_file(
    path: Path,
    start: int,
    *,
    steps: int = 4,
    chunk: int = 2,
    day: int = 1,
    lat: Sequence[float] = (-10.0, 0.0, 10.0),
    dtype: str = "f4",
) -> Path:
    """A file of `steps` hourly times from hour `start` (counted from day `day` of 2024 in the
    file's units), a `(time, lat, lon)` variable chunked `chunk` along time, and lat/lon."""
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("time", None)
        d.createDimension("lat", 3)
        d.createDimension("lon", 4)
        t = d.createVariable("time", "i4", ("time",))
        t.units = f"hours since 2024-01-{day:02d}"
        t[:] = np.arange(start, start + steps) - 24 * (day - 1)
        d.createVariable("lat", "f4", ("lat",))[:] = lat
        d.createVariable("lon", "f4", ("lon",))[:] = [0.0, 90.0, 180.0, 270.0]
        v = d.createVariable(
            "air",
            dtype,
            ("time", "lat", "lon"),
            zlib=True,
            chunksizes=(chunk, 3, 4),
            fill_value=-999.0,
        )
        v.units = "K"
        v[:] = 273 + np.arange(steps * 12).reshape(steps, 3, 4) + start
        if steps > 1:
            v[1, 1, 1] = np.ma.masked
        d.title = f"hours {start} to {start + steps}"
    return path


def virtual_concat(paths: Sequence[Path], loadable: list[str] | None = None) -> xr.Dataset:
    vdss = [vcube.open_virtual_dataset(p, loadable_variables=loadable) for p in paths]
    return xr.concat(
        vdss,
        dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        join="exact",
        combine_attrs="override",
    )


def netcdf4_concat(paths: Sequence[Path], **kwargs: Any) -> xr.Dataset:
    datasets = [xr.open_dataset(p, engine="netcdf4", **kwargs).load() for p in paths]
    return xr.concat(
        datasets,
        dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        join="exact",
        combine_attrs="override",
    )


@pytest.mark.parametrize(
    "loadable", [None, ["time"]], ids=["coordinates loaded", "lat/lon virtual"]
)
def test_append_two_files_to_three_in_a_second_commit(
    loadable: list[str] | None, tmp_path: Path
) -> None:
    paths = [time_file(tmp_path / f"f{i}.nc", 4 * i) for i in range(3)]
    # the later files count hours from another day: the append re-encodes them in stored units
    paths += [time_file(tmp_path / f"f{i}.nc", 4 * i, day=2) for i in range(3, 5)]
    repo = repository(tmp_path / "repo", [local_container(tmp_path)])
    first = repo.writable_session("main")
    first_three = virtual_concat(paths[:3], loadable)
    to_icechunk(first_three, first.store, append_dim="time")  # creates the group
    first.commit("files 0-2")
    second = repo.writable_session("main")
    to_icechunk(virtual_concat(paths[3:], loadable), second.store, append_dim="time")
    second.commit("files 3-4")

    expected = netcdf4_concat(paths)
    xr.testing.assert_identical(read(repo), expected)
    raw = read(repo, **RAW)
    xr.testing.assert_identical(
        raw.drop_vars("time"), netcdf4_concat(paths, **RAW).drop_vars("time")
    )
    assert raw["time"].attrs["units"] == "hours since 2024-01-01"
    np.testing.assert_array_equal(raw["time"], np.arange(20, dtype="i4"), strict=True)


def commit_one(repo: ic.Repository, path: Path) -> None:
    session = repo.writable_session("main")
    to_icechunk(vcube.open_virtual_dataset(path), session.store)
    session.commit("first")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dtype": "f8"}, "'air'.*data type: stored 'float32', new 'float64'"),
        ({"chunk": 1}, "'air'.*chunk grid"),
        ({"lat": [-20.0, 0.0, 20.0]}, "'lat' has no dimension 'time'.*differs"),
    ],
)
def test_incompatible_append_is_refused_and_writes_nothing(
    change: dict[str, Any], message: str, tmp_path: Path
) -> None:
    repo = repository(tmp_path / "repo", [local_container(tmp_path)])
    commit_one(repo, time_file(tmp_path / "a.nc", 0))
    session = repo.writable_session("main")
    other = vcube.open_virtual_dataset(time_file(tmp_path / "b.nc", 4, **change))
    with pytest.raises(IncompatibleArraysError, match=message):
        to_icechunk(other, session.store, append_dim="time")
    assert not session.has_uncommitted_changes


def test_append_after_a_partial_last_chunk_is_refused(tmp_path: Path) -> None:
    repo = repository(tmp_path / "repo", [local_container(tmp_path)])
    commit_one(repo, time_file(tmp_path / "a.nc", 0, steps=3))  # chunks of 2: the last is half
    session = repo.writable_session("main")
    other = vcube.open_virtual_dataset(time_file(tmp_path / "b.nc", 3))
    with pytest.raises(IncompatibleArraysError, match=r"'air'.*partial chunk \(length 3, chunks"):
        to_icechunk(other, session.store, append_dim="time")
    assert not session.has_uncommitted_changes


# -- errors leave the repository as it was ----------------------------------------------------


def test_missing_container_names_the_url_and_writes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = time_file(data / "a.nc", 0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    repo = repository(tmp_path / "repo", [local_container(elsewhere)])
    tip = repo.lookup_branch("main")
    session = repo.writable_session("main")
    with pytest.raises(StoreNotFoundError) as err:
        to_icechunk(vcube.open_virtual_dataset(path), session.store)
    assert path.as_uri() in str(err.value)
    assert repr(data.as_uri() + "/") in str(err.value)  # the prefix to configure
    assert not session.has_uncommitted_changes
    assert repo.lookup_branch("main") == tip


def test_read_only_session_is_refused(tmp_path: Path) -> None:
    repo = repository(tmp_path / "repo", [local_container(tmp_path)])
    vds = vcube.open_virtual_dataset(time_file(tmp_path / "a.nc", 0))
    with pytest.raises(ReadOnlyError, match="writable_session"):
        to_icechunk(vds, repo.readonly_session("main").store)


def test_existing_group_needs_a_mode(tmp_path: Path) -> None:
    repo = repository(tmp_path / "repo", [local_container(tmp_path)])
    path = time_file(tmp_path / "a.nc", 0)
    commit_one(repo, path)
    session = repo.writable_session("main")
    with pytest.raises(vcube.VcubeError, match=r"already exists.*mode='w'"):
        to_icechunk(vcube.open_virtual_dataset(path), session.store)
    with pytest.raises(UnsupportedFeatureError, match="region must map dimension names"):
        to_icechunk(vcube.open_virtual_dataset(path), session.store, region="auto")  # type: ignore[arg-type]
    assert not session.has_uncommitted_changes


@pytest.mark.parametrize("mode", ["w", "a"])
def test_mode_w_and_a_replace_arrays(mode: Literal["w", "a"], tmp_path: Path) -> None:
    repo = repository(tmp_path / "repo", [local_container(tmp_path)])
    commit_one(repo, time_file(tmp_path / "a.nc", 0, steps=6))  # 3 chunks of `air`
    scalars = write("contiguous_and_scalar", tmp_path)
    session = repo.writable_session("main")
    to_icechunk(vcube.open_virtual_dataset(scalars), session.store, mode="a")  # adds arrays
    short = time_file(tmp_path / "b.nc", 100, steps=2)  # 1 chunk: no stale chunks may remain
    to_icechunk(vcube.open_virtual_dataset(short), session.store, mode=mode)
    session.commit(f"add, then mode={mode}")
    expected = xr.open_dataset(short).load()
    if mode == "a":  # the added arrays are kept, the group attributes updated
        expected = xr.merge([expected, xr.open_dataset(scalars)], combine_attrs="override")
    xr.testing.assert_identical(read(repo), expected.load())


def test_mode_r_plus_rewrites_references_of_unchanged_arrays(tmp_path: Path) -> None:
    repo = repository(tmp_path / "repo", [local_container(tmp_path)])
    commit_one(repo, time_file(tmp_path / "a.nc", 0))
    session = repo.writable_session("main")
    same_layout = time_file(tmp_path / "b.nc", 50)
    to_icechunk(vcube.open_virtual_dataset(same_layout), session.store, mode="r+")
    longer = vcube.open_virtual_dataset(time_file(tmp_path / "c.nc", 0, steps=6))
    with pytest.raises(IncompatibleArraysError, match=r"mode='r\+'.*'air'.*shape"):
        to_icechunk(longer, session.store, mode="r+")
    session.commit("rewrite")
    xr.testing.assert_equal(read(repo), xr.open_dataset(same_layout).load())


def test_non_dimension_coordinates_stay_coordinates(tmp_path: Path) -> None:
    path = write("contiguous_and_scalar", tmp_path)
    repo = repository(tmp_path / "repo", [local_container(tmp_path)])
    session = repo.writable_session("main")
    to_icechunk(vcube.open_virtual_dataset(path).set_coords("scalar"), session.store)
    session.commit("a scalar coordinate")
    expected = xr.open_dataset(path).set_coords("scalar").load()
    xr.testing.assert_identical(read(repo), expected)


def test_dataset_without_virtual_variables_warns_and_writes_values(tmp_path: Path) -> None:
    path = time_file(tmp_path / "a.nc", 0)
    vds = vcube.open_virtual_dataset(path, loadable_variables=["time", "lat", "lon", "air"])
    repo = repository(tmp_path / "repo")  # no containers needed: nothing is virtual
    session = repo.writable_session("main")
    with pytest.warns(VcubeWarning, match="no virtual variables"):
        to_icechunk(vds, session.store)
    session.commit("values only")
    xr.testing.assert_identical(read(repo), xr.open_dataset(path).load())


# -- last_updated_at ---------------------------------------------------------------------------


def test_last_updated_at_detects_a_modified_source(tmp_path: Path) -> None:
    path = time_file(tmp_path / "a.nc", 0)
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    repo = repository(tmp_path / "repo", [local_container(tmp_path)])
    vds = vcube.open_virtual_dataset(path)
    session = repo.writable_session("main")
    to_icechunk(vds, session.store, group="current", last_updated_at=mtime)  # rounded up
    to_icechunk(vds, session.store, group="stale", last_updated_at=mtime - timedelta(seconds=5))
    to_icechunk(vds, session.store, group="unchecked")
    session.commit("three checksums")
    expected = xr.open_dataset(path).load()
    xr.testing.assert_identical(read(repo, "current"), expected)
    xr.testing.assert_identical(read(repo, "unchecked"), expected)
    changed = "the checksum of the object owning the virtual chunk has changed"
    with pytest.raises(ic.IcechunkError, match=changed):
        read(repo, "stale")
    later = path.stat().st_mtime + 10  # the file is modified after the write
    os.utime(path, (later, later))
    with pytest.raises(ic.IcechunkError, match=changed):
        read(repo, "current")
    xr.testing.assert_identical(read(repo, "unchecked"), expected)  # no checksum: not checked


# -- the documentation's workflow --------------------------------------------------------------


def test_docs_workflow(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/icechunk.md, run as written with its settings pointed at generated files and at the
    test server: 3 local months, then 2 more appended from S3, read back as netCDF4 reads them."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)
    data = tmp_path / "era5"
    data.mkdir()
    local = [time_file(data / f"2024-0{m}.nc", 4 * (m - 1)) for m in (1, 2, 3)]
    remote = [time_file(tmp_path / f"2024-0{m}.nc", 4 * (m - 1), day=2) for m in (4, 5)]
    for path in remote:
        s3_server.upload(path, s3_bucket, f"era5/{path.name}")
    settings = {
        "DATA": f"Path({str(data)!r})",
        "BUCKET": repr(s3_bucket),
        "ENDPOINT": repr(s3_server.endpoint),
        "REPO": repr(str(tmp_path / "repo")),
    }
    namespace = run_docs("icechunk.md", settings)
    xr.testing.assert_identical(namespace["ds"].load(), netcdf4_concat(local + remote))


# -- region ------------------------------------------------------------------------------------


def three_files_committed(tmp_path: Path) -> tuple[ic.Repository, list[Path]]:
    paths = [time_file(tmp_path / f"f{i}.nc", 4 * i) for i in range(3)]
    repo = repository(tmp_path / "repo", [local_container(tmp_path)])
    session = repo.writable_session("main")
    to_icechunk(virtual_concat(paths), session.store)
    session.commit("three files")
    return repo, paths


def test_region_replaces_one_file_of_the_datacube(tmp_path: Path) -> None:
    repo, paths = three_files_committed(tmp_path)
    fixed = time_file(tmp_path / "fixed.nc", 4)
    with netCDF4.Dataset(fixed, "a") as d:
        d["air"][:] = d["air"][:] * 2  # a reprocessed version of the second file
    session = repo.writable_session("main")
    vds = vcube.open_virtual_dataset(fixed).drop_vars(["lat", "lon"])
    to_icechunk(vds, session.store, region={"time": slice(4, 8)})
    session.commit("reprocessed file 1")
    xr.testing.assert_identical(read(repo), netcdf4_concat([paths[0], fixed, paths[2]]))


def test_region_missing_chunks_clear_the_stored_ones(tmp_path: Path) -> None:
    repo, paths = three_files_committed(tmp_path)
    empty = tmp_path / "empty.nc"
    time_file(empty, 8)
    with netCDF4.Dataset(empty, "a") as d:  # the same layout, with no chunk of `air` written
        d.renameVariable("air", "written")
        air = d.createVariable(
            "air", "f4", ("time", "lat", "lon"), zlib=True, chunksizes=(2, 3, 4), fill_value=-999.0
        )
        air.units = "K"
    session = repo.writable_session("main")
    vds = vcube.open_virtual_dataset(empty, drop_variables=["written"])
    to_icechunk(vds.drop_vars(["lat", "lon"]), session.store, region={"time": slice(8, None)})
    session.commit("file 2 withdrawn")
    actual = read(repo)
    assert bool(actual["air"][8:].isnull().all())
    xr.testing.assert_identical(actual.isel(time=slice(0, 8)), netcdf4_concat(paths[:2]))


@pytest.mark.parametrize(
    ("region", "drop", "error", "message"),
    [
        ({"time": slice(3, 7)}, True, IncompatibleArraysError, r"start and end on chunk"),
        ({"time": slice(4, 6)}, True, IncompatibleArraysError, r"holds 2 elements.*has 4"),
        ({"time": slice(4, 8)}, False, IncompatibleArraysError, r"'lat' has none of the region"),
        ({"level": slice(0, 1)}, True, IncompatibleArraysError, r"\['level'\] are not dim"),
    ],
)
def test_bad_regions_are_refused_and_write_nothing(
    region: dict[str, slice], drop: bool, error: type[Exception], message: str, tmp_path: Path
) -> None:
    repo, _ = three_files_committed(tmp_path)
    session = repo.writable_session("main")
    vds = vcube.open_virtual_dataset(time_file(tmp_path / "x.nc", 4))
    if drop:
        vds = vds.drop_vars(["lat", "lon"])
    with pytest.raises(error, match=message):
        to_icechunk(vds, session.store, region=region)
    with pytest.raises(ValueError, match="region and append_dim"):
        to_icechunk(vds, session.store, region=region, append_dim="time")
    assert not session.has_uncommitted_changes


# -- commits in batches of variables --------------------------------------------------------


def test_commit_in_batches_writes_everything_in_bounded_commits(tmp_path: Path) -> None:
    paths = [time_file(tmp_path / f"f{i}.nc", 4 * i) for i in range(3)]
    vds = virtual_concat(paths)
    vds["air2"] = vds["air"].copy()  # two virtual variables of 6 references each
    vds["air2"].attrs["long_name"] = "copy"
    repo = repository(tmp_path / "repo", [local_container(tmp_path)])
    snapshots = commit_in_batches(
        vds, repo, "three files", max_refs=6, metadata={"k": 1}, first_metadata={"f": 0}
    )
    history = list(repo.ancestry(branch="main"))
    assert [s.id for s in history[:2]] == snapshots[::-1]
    assert [s.message for s in history] == [
        "three files (adds air2)",
        "three files",
        "Repository initialized",
    ]
    assert (history[0].metadata, history[1].metadata) == ({"k": 1}, {"f": 0})
    expected = netcdf4_concat(paths)
    expected["air2"] = expected["air"].copy()
    expected["air2"].attrs["long_name"] = "copy"
    xr.testing.assert_identical(read(repo), expected)
    assert len(commit_in_batches(vds, repo, "again", max_refs=12, mode="w")) == 1


def test_commit_in_batches_refuses_appends(tmp_path: Path) -> None:
    repo = repository(tmp_path / "repo", [local_container(tmp_path)])
    vds = vcube.open_virtual_dataset(time_file(tmp_path / "a.nc", 0))
    with pytest.raises(UnsupportedFeatureError, match="append"):
        commit_in_batches(vds, repo, "x", append_dim="time")
