"""`verify` over real archives: daily NetCDF4 files (netCDF4) and NetCDF3 files (scipy, netCDF4's
CDF-5) combined along time, persisted as Kerchunk JSON, Kerchunk Parquet and Icechunk; FITS
(astropy), TIFF (tifffile) and Zarr (zarr-python) sources, single or concatenated. An intact
archive passes; a corrupted chunk, a reference to the wrong bytes or file, and a missing file
are reported with the variable, the chunk and the values, and `ok` is False."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import netCDF4
import numpy as np
import pytest
import tifffile
import zarr
from astropy.io import fits
from conformance import icechunk_repo
from docs_examples import run_docs
from kerchunk.combine import MultiZarrToZarr
from kerchunk.hdf import SingleHdf5ToZarr
from s3_server import REGION
from scipy.io import netcdf_file

import vcube
from vcube.errors import (
    SourceNotFoundError,
    UnsupportedFeatureError,
    UnsupportedFormatError,
    VcubeError,
)
from vcube.ingest import SOURCES_KEY, ingest
from vcube.parsers.fits import FITSParser
from vcube.parsers.tiff import TIFFParser
from vcube.registry import ObjectStoreRegistry, normalize_url
from vcube.stores import ObjectStoreOptions, open_repository
from vcube.verify import VerifyReport, verify

if TYPE_CHECKING:
    from collections.abc import Callable

    import xarray as xr
    from s3_server import S3Server

DOCS = Path(__file__).parents[1] / "docs" / "verify.md"
FILES = 6
KINDS = ["json", "parquet", "icechunk", "icechunk-without-metadata"]
AIR_GRID = (12, 1, 2)  # 6 files x 4 times in chunks of 2, 3 lats, 4 lons in chunks of 2


# -- archives -----------------------------------------------------------------------------------


def write_day(path: Path, day: int) -> None:
    """One day of 6-hourly data; every file has its own time units, as daily archives do."""
    rng = np.random.default_rng(day)
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("time", None)
        d.createDimension("lat", 3)
        d.createDimension("lon", 4)
        time = d.createVariable("time", "i4", ("time",))
        time.units = f"hours since 2024-01-{day + 1:02d}"
        time[:] = [0, 6, 12, 18]
        d.createVariable("lat", "f4", ("lat",))[:] = [-45, 0, 45]
        d.createVariable("lon", "f4", ("lon",))[:] = [0, 90, 180, 270]
        air = d.createVariable(
            "air", "f4", ("time", "lat", "lon"), zlib=True, shuffle=True, chunksizes=(2, 3, 2)
        )
        air[:] = rng.standard_normal((4, 3, 4)).astype("f4") + 273
        air[1, 1, 1] = np.ma.masked  # netCDF4's default fill value
        air[2, 0, 0] = np.nan  # equal to itself for verify
        count = d.createVariable("count", "i2", ("time", "lat", "lon"), chunksizes=(4, 3, 4))
        count[:] = rng.integers(0, 100, (4, 3, 4))


def write_netcdf3(path: Path, day: int, *, cdf5: bool) -> None:
    """A NetCDF3 day: scipy writes CDF-1, netCDF4 writes CDF-5 (with a 64-bit variable)."""
    temp = np.random.default_rng(day).standard_normal((3, 5)).astype("f4")
    opened: Any = (
        netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_DATA") if cdf5 else netcdf_file(path, "w")
    )
    with opened as d:
        d.createDimension("time", None)
        d.createDimension("x", 5)
        time = d.createVariable("time", "f8", ("time",))
        time.units = "days since 2000-01-01"
        time[:] = np.arange(3) + 3 * day
        d.createVariable("temp", "f4", ("time", "x"))[:] = temp
        if cdf5:
            d.createVariable("big", "u8", ("x",))[:] = np.arange(5, dtype="u8") * 2**40
        else:
            d.createVariable("name", "S1", ("x",))[:] = np.array(list(b"abcde"), dtype="S1")


@pytest.fixture
def archive(tmp_path: Path) -> list[Path]:
    """Six daily NetCDF4 files (fresh per test: tests corrupt them)."""
    folder = tmp_path / "data"
    folder.mkdir()
    paths = [folder / f"day_{i:02d}.nc" for i in range(FILES)]
    for i, path in enumerate(paths):
        write_day(path, i)
    return paths


def virtual(paths: list[Path], registry: ObjectStoreRegistry | None = None) -> xr.Dataset:
    return vcube.open_virtual_mfdataset([str(p) for p in paths], registry=registry)


def persist(vds: xr.Dataset, kind: str, tmp_path: Path, sources: list[str]) -> str:
    """Write the references as `kind`; Icechunk commits record the sources as `vcube ingest`
    does (or not, for the `all_virtual_chunk_locations` fallback)."""
    if kind == "json":
        vds.vcube.to_kerchunk(str(tmp_path / "refs.json"), format="json")
        return str(tmp_path / "refs.json")
    if kind == "parquet":
        vds.vcube.to_kerchunk(str(tmp_path / "refs.parq"), format="parquet")
        return str(tmp_path / "refs.parq")
    repo = icechunk_repo(tmp_path / "data", tmp_path / "repo")
    session = repo.writable_session("main")
    vds.vcube.to_icechunk(session.store)
    metadata = {SOURCES_KEY: sources} if kind == "icechunk" else None
    session.commit("ingest", metadata=metadata)
    return str(tmp_path / "repo")


def urls(paths: list[Path]) -> list[str]:
    return [normalize_url(p) for p in paths]


def checks(report: VerifyReport) -> dict[str, Any]:
    return {v.name: v for v in report.variables}


def swap_chunks(vds: xr.Dataset, name: str, a: tuple[int, ...], b: tuple[int, ...]) -> xr.Dataset:
    """`vds` with chunk `a` of `name` referencing chunk `b`'s file and bytes."""
    array = vds[name].data
    manifest = array.manifest
    columns = {k: getattr(manifest, k).copy() for k in ("path_ids", "offsets", "lengths")}
    for column in columns.values():
        column[a] = column[b]
    wrong = array.replace(manifest=dataclasses.replace(manifest, **columns))
    return vds.assign({name: vds[name].copy(data=wrong)})


def read(path: Path, name: str) -> np.ndarray:
    """Raw values, as netCDF4 reads them."""
    with netCDF4.Dataset(path) as d:
        d.set_auto_maskandscale(False)
        return np.asarray(d[name][:])


# -- an intact archive passes -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_intact_archive_passes(kind: str, archive: list[Path], tmp_path: Path) -> None:
    target = persist(virtual(archive), kind, tmp_path, urls(archive))
    report = verify(target, samples=None)
    assert report.ok, report.format()
    assert report.kind == {"json": "Kerchunk JSON", "parquet": "Kerchunk Parquet"}.get(
        kind, "Icechunk"
    )
    assert sorted(report.sources) == urls(archive)
    assert report.problems == ()
    found = checks(report)
    assert sorted(found) == ["air", "count", "lat", "lon", "time"]
    assert found["air"].checked == np.prod(AIR_GRID)  # every chunk
    assert found["count"].checked == FILES
    # time is one inline chunk, re-encoded in the first file's units: compared decoded.
    assert found["time"].chunks == ((0,),)
    assert all(v.equal == v.checked and not v.different for v in report.variables)
    assert report.format().endswith("OK: every chunk checked is equal")


@pytest.mark.parametrize("cdf5", [False, True], ids=["scipy-cdf1", "netcdf4-cdf5"])
@pytest.mark.parametrize("kind", ["json", "icechunk"])
def test_netcdf3_archive_passes(kind: str, cdf5: bool, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    paths = [tmp_path / "data" / f"day_{i}.nc" for i in range(4)]
    for i, path in enumerate(paths):
        write_netcdf3(path, i, cdf5=cdf5)
    report = verify(persist(virtual(paths), kind, tmp_path, urls(paths)), samples=None)
    assert report.ok, report.format()
    found = checks(report)
    assert found["temp"].checked == 12  # one chunk per record
    assert found["big" if cdf5 else "name"].checked == 1


# -- mismatches are caught ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["json", "parquet", "icechunk"])
def test_corrupted_chunk_is_reported(kind: str, archive: list[Path], tmp_path: Path) -> None:
    vds = virtual(archive)
    target = persist(vds, kind, tmp_path, urls(archive))
    ref = vds["air"].data.manifest[(5, 0, 1)]  # day 2, its 2nd half, east
    with archive[2].open("r+b") as f:  # same length, other bytes: zlib cannot decode them
        f.seek(ref.offset)
        flipped = bytes(b ^ 0xFF for b in f.read(ref.length))
        f.seek(ref.offset)
        f.write(flipped)
    report = verify(target, samples=None)
    assert not report.ok
    found = checks(report)
    (mismatch,) = found["air"].different
    assert mismatch.chunk == (5, 0, 1)
    assert mismatch.sources == (normalize_url(archive[2]),)
    assert mismatch.error is not None
    assert found["air"].equal == np.prod(AIR_GRID) - 1
    assert all(not v.different for n, v in found.items() if n != "air")
    assert "DIFFERENT air: chunk [5, 0, 1]" in report.format()
    assert report.format().endswith("FAILED")


@pytest.mark.parametrize("kind", ["json", "parquet", "icechunk"])
def test_reference_to_wrong_offset_is_reported(
    kind: str, archive: list[Path], tmp_path: Path
) -> None:
    vds = swap_chunks(virtual(archive), "air", (4, 0, 1), (5, 0, 1))
    report = verify(persist(vds, kind, tmp_path, urls(archive)), samples=None)
    assert not report.ok
    (mismatch,) = checks(report)["air"].different
    assert mismatch.chunk == (4, 0, 1)
    assert mismatch.error is None
    # chunk (4, 0, 1) is times 8-9 (day 2, hours 0 and 6), lons 2-3; it now reads times 10-11.
    day2 = read(archive[2], "air")
    assert mismatch.index == (8, 0, 2)
    assert mismatch.expected == day2[0, 0, 2]
    assert mismatch.actual == day2[2, 0, 2]
    assert isinstance(mismatch.expected, float)
    assert "first difference at [8, 0, 2]" in report.format()


def test_reference_to_wrong_file_is_reported(archive: list[Path], tmp_path: Path) -> None:
    """Files are placed by their time values, not by the references: a chunk that references
    another file's bytes differs."""
    vds = swap_chunks(virtual(archive), "count", (3,), (4,))
    report = verify(persist(vds, "json", tmp_path, urls(archive)), samples=None)
    (mismatch,) = checks(report)["count"].different
    assert mismatch.chunk == (3, 0, 0)
    assert mismatch.sources == (normalize_url(archive[3]),)
    day3, day4 = read(archive[3], "count"), read(archive[4], "count")
    first = tuple(int(i) for i in np.argwhere(day3 != day4)[0])
    assert mismatch.index == (12 + first[0], *first[1:])
    assert (mismatch.expected, mismatch.actual) == (day3[first], day4[first])


def test_missing_source_is_reported(archive: list[Path], tmp_path: Path) -> None:
    target = persist(virtual(archive), "json", tmp_path, urls(archive))
    archive[4].unlink()
    report = verify(target, samples=None)
    assert not report.ok
    (problem,) = report.problems
    assert problem.startswith(normalize_url(archive[4]))
    assert "not found" in problem
    # The other files' chunks are still compared, and equal.
    assert checks(report)["air"].checked == np.prod(AIR_GRID) - 4
    assert all(not v.different for v in report.variables)


# -- choosing what to check ---------------------------------------------------------------------


def test_against_a_subset(archive: list[Path], tmp_path: Path) -> None:
    target = persist(virtual(archive), "json", tmp_path, urls(archive))
    folder = archive[0].parent
    report = verify(target, against=str(folder / "day_0[12].nc"), samples=None)
    assert report.ok, report.format()
    assert report.sources == tuple(urls(archive[1:3]))
    found = checks(report)
    assert {c[0] for c in found["air"].chunks} == {2, 3, 4, 5}  # days 1 and 2 only
    assert found["time"].checked == 0  # its one chunk spans every day
    assert found["time"].note == "no chunk lies entirely in the files given"
    assert found["lat"].checked == 1


def test_against_a_file_outside_the_target(archive: list[Path], tmp_path: Path) -> None:
    target = persist(virtual(archive[:3]), "json", tmp_path, urls(archive[:3]))
    report = verify(target, against=[str(archive[1]), str(archive[5])])
    assert not report.ok
    (problem,) = report.problems
    assert (
        problem
        == f"{normalize_url(archive[5])}: its time values are not a run of the target's time"
    )


def test_samples_include_first_and_last(archive: list[Path], tmp_path: Path) -> None:
    target = persist(virtual(archive), "json", tmp_path, urls(archive))
    first, last = (0, 0, 0), tuple(n - 1 for n in AIR_GRID)
    chosen = set()
    for seed in range(5):
        report = verify(target, samples=4, seed=seed)
        assert report.ok
        air = checks(report)["air"]
        assert air.checked == 4
        assert {first, last} <= set(air.chunks)
        assert air.chunks == tuple(sorted(air.chunks))
        assert checks(verify(target, samples=4, seed=seed))["air"].chunks == air.chunks
        chosen.add(air.chunks)
    assert len(chosen) > 1  # the seed changes the sample
    assert set(checks(verify(target, samples=1))["air"].chunks) == {first, last}
    # As many samples as chunks, or more: every chunk.
    assert checks(verify(target, samples=100))["air"].checked == np.prod(AIR_GRID)


# -- S3 -----------------------------------------------------------------------------------------


@pytest.fixture
def s3_options(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> ObjectStoreOptions:
    """The test server's options, and the credentials a store made from them reads."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return ObjectStoreOptions(endpoint=s3_server.endpoint, region=REGION)


@pytest.mark.s3
def test_chunks_on_s3(
    archive: list[Path],
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    s3_options: ObjectStoreOptions,
) -> None:
    sources = [s3_server.upload(p, s3_bucket, f"data/{p.name}") for p in archive]
    registry = ObjectStoreRegistry({f"s3://{s3_bucket}": s3_server.store(s3_bucket)})
    vds = vcube.open_virtual_mfdataset(sources, registry=registry)
    vds.vcube.to_kerchunk(str(tmp_path / "refs.json"), format="json")
    report = verify(tmp_path / "refs.json", registry=registry, samples=None)
    assert report.ok, report.format()
    assert list(report.sources) == sources
    assert checks(report)["air"].checked == np.prod(AIR_GRID)
    subset = verify(
        tmp_path / "refs.json", registry=registry, against=f"s3://{s3_bucket}/data/day_00.nc"
    )
    assert subset.ok
    assert {c[0] for c in checks(subset)["air"].chunks} == {0, 1}
    # Without a registry, the bucket's store is made from the options (as the CLI does).
    assert verify(tmp_path / "refs.json", options=s3_options, samples=2).ok

    wrong = swap_chunks(vds, "air", (4, 0, 1), (5, 0, 1))
    wrong.vcube.to_kerchunk(str(tmp_path / "wrong.json"), format="json")
    (mismatch,) = checks(verify(tmp_path / "wrong.json", registry=registry))["air"].different
    assert mismatch.chunk == (4, 0, 1)
    assert mismatch.sources == (sources[2],)


@pytest.mark.s3
def test_icechunk_with_chunks_on_s3(
    archive: list[Path],
    tmp_path: Path,
    s3_server: S3Server,
    s3_bucket: str,
    s3_options: ObjectStoreOptions,
) -> None:
    """The repository's S3 container is authorized as `vcube ingest` authorizes it: with
    credentials from the environment."""
    sources = [s3_server.upload(p, s3_bucket, f"data/{p.name}") for p in archive]
    repo = open_repository(str(tmp_path / "repo"), s3_options, sources=sources)
    session = repo.writable_session("main")
    registry = ObjectStoreRegistry({f"s3://{s3_bucket}": s3_server.store(s3_bucket)})
    vcube.open_virtual_mfdataset(sources, registry=registry).vcube.to_icechunk(session.store)
    session.commit("ingest", metadata={SOURCES_KEY: sources})
    report = verify(tmp_path / "repo", options=s3_options, samples=3)
    assert report.ok, report.format()
    assert list(report.sources) == sources
    assert checks(report)["air"].checked == 3


@pytest.mark.s3
def test_icechunk_repository_on_s3(
    archive: list[Path], s3_bucket: str, s3_options: ObjectStoreOptions
) -> None:
    """A repository that `ingest` wrote to S3, its sources from the commits' metadata."""
    repo = f"s3://{s3_bucket}/cubes/air"
    ingest([str(p) for p in archive], repo, append_dim="time", options=s3_options, batch_size=4)
    report = verify(repo, options=s3_options, samples=None)
    assert report.ok, report.format()
    assert report.kind == "Icechunk"
    assert list(report.sources) == urls(archive)
    assert checks(report)["air"].checked == np.prod(AIR_GRID)


# -- errors -------------------------------------------------------------------------------------


def test_target_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.json"
    with pytest.raises(SourceNotFoundError, match=str(missing)):
        verify(missing)
    with pytest.raises(SourceNotFoundError, match=str(tmp_path / "no-dir")):
        verify(tmp_path / "no-dir")


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.write_bytes(b"CDF\x01 not references"),
        lambda p: (p.mkdir(), (p / "readme.txt").write_text("hello")),
    ],
    ids=["file", "directory"],
)
def test_not_a_target(tmp_path: Path, make: Callable[[Path], object]) -> None:
    path = tmp_path / "thing"
    make(path)
    with pytest.raises(UnsupportedFormatError, match=rf"{path}: not a verify target.*Kerchunk"):
        verify(path)


def test_unknown_branch(archive: list[Path], tmp_path: Path) -> None:
    target = persist(virtual(archive), "icechunk", tmp_path, urls(archive))
    with pytest.raises(VcubeError, match=r"repo: no branch 'dev' \(branches: main\)"):
        verify(target, branch="dev")


def test_bad_arguments(archive: list[Path], tmp_path: Path) -> None:
    target = persist(virtual(archive), "json", tmp_path, urls(archive))
    with pytest.raises(UnsupportedFormatError, match="samples must be a positive integer"):
        verify(target, samples=0)
    with pytest.raises(SourceNotFoundError, match=r"nope\*\.nc: no files match"):
        verify(target, against=str(tmp_path / "nope*.nc"))
    text = tmp_path / "notes.txt"
    text.write_text("not a data file")
    with pytest.raises(UnsupportedFormatError, match=rf"{text}: unrecognized file format"):
        verify(target, against=[str(text)])


def test_source_format_not_comparable(archive: list[Path], tmp_path: Path) -> None:
    """References are not source files: verify says so, and what it reads."""
    target = persist(virtual(archive), "json", tmp_path, urls(archive))
    with pytest.raises(
        UnsupportedFeatureError,
        match=r"refs.json: verify cannot compare with Kerchunk JSON files \(it reads "
        r"HDF5/NetCDF4, NetCDF3, FITS, TIFF, Zarr\); pass the original files",
    ):
        verify(target, against=[target])


def test_sources_by_json_order(archive: list[Path], tmp_path: Path) -> None:
    """Kerchunk sources are the referenced files, in order of first use."""
    target = persist(virtual(archive), "json", tmp_path, urls(archive))
    refs = json.loads((tmp_path / "refs.json").read_text())
    assert next(v[0] for v in refs["refs"].values() if isinstance(v, list)) == str(archive[0])
    assert list(verify(target, samples=1).sources) == urls(archive)


def test_kerchunk_templates(archive: list[Path], tmp_path: Path) -> None:
    """Source URLs written with Kerchunk `{{name}}` templates are filled in."""
    persist(virtual(archive), "json", tmp_path, urls(archive))
    refs = json.loads((tmp_path / "refs.json").read_text())
    folder = str(archive[0].parent)
    for value in refs["refs"].values():
        if isinstance(value, list):
            value[0] = value[0].replace(folder, "{{data}}")
    refs["templates"] = {"data": folder}
    (tmp_path / "templated.json").write_text(json.dumps(refs))
    report = verify(tmp_path / "templated.json", samples=2)
    assert report.ok, report.format()
    assert list(report.sources) == urls(archive)


def test_docs_example(
    archive: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/verify.md, run as written with its settings pointed at a generated archive."""
    target = persist(virtual(archive), "json", tmp_path, urls(archive))
    settings = {"TARGET": repr(target), "FILES": repr(str(archive[0].parent / "day_0[01].nc"))}
    namespace = run_docs("verify.md", settings)
    assert namespace["report"].ok
    assert namespace["subset"].ok
    assert "OK: every chunk checked is equal" in capsys.readouterr().out


@pytest.mark.parametrize("decode_times", [True, False])
def test_references_written_by_kerchunk(
    decode_times: bool, archive: list[Path], tmp_path: Path
) -> None:
    """kerchunk's own references: combined on decoded times they pass; combined on raw times,
    every day's hours 0-18 collide and verify reports the datacube as wrong."""
    singles = [SingleHdf5ToZarr(str(p), inline_threshold=0).translate() for p in archive]
    coo_map = {"time": "cf:time"} if decode_times else {}
    combined = MultiZarrToZarr(
        singles,
        concat_dims=["time"],
        identical_dims=["lat", "lon"],
        coo_map=coo_map,
        inline_threshold=0,
    ).translate()
    (tmp_path / "kerchunk.json").write_text(json.dumps(combined))
    report = verify(tmp_path / "kerchunk.json", against=str(archive[0].parent / "*.nc"))
    assert report.ok is decode_times, report.format()
    if not decode_times:
        assert checks(report)["air"].different


# -- FITS, TIFF and Zarr sources ----------------------------------------------------------------


def write_fits(path: Path, seed: int) -> None:
    """An empty primary HDU, a scaled int16 image with BLANK, two images sharing EXTNAME ERR
    (told apart by EXTVER) and an unnamed uint8 cube."""
    rng = np.random.default_rng(seed)
    sci = fits.ImageHDU(rng.integers(-100, 100, (12, 10)).astype("f8") * 2 + 10, name="SCI")
    sci.scale("int16", bscale=2.0, bzero=10.0)
    sci.header["BLANK"] = -32768
    errors = [fits.ImageHDU(rng.standard_normal((12, 10)), name="ERR", ver=v) for v in (1, 2)]
    cube = fits.ImageHDU(rng.integers(0, 255, (3, 4, 5)).astype("u1"))
    fits.HDUList([fits.PrimaryHDU(), sci, *errors, cube]).writeto(path)


def write_tiff(path: Path, seed: int, pages: int = 3) -> None:
    """Pages of one shape, uint16 in deflate-compressed 16 x 16 tiles."""
    frames = np.random.default_rng(seed).integers(0, 4000, (pages, 40, 48)).astype("u2")
    tifffile.imwrite(path, frames, tile=(16, 16), compression="zlib", photometric="minisblack")


def write_zarr(path: Path, zarr_format: Literal[2, 3]) -> None:
    """A group with a time coordinate, a 2-D variable and a subgroup (not in the target)."""
    root = zarr.open_group(path, mode="w", zarr_format=zarr_format)

    def dims(*names: str) -> dict[str, Any]:
        if zarr_format == 3:
            return {"dimension_names": names}
        return {"attributes": {"_ARRAY_DIMENSIONS": list(names)}}

    time = root.create_array("time", shape=(6,), chunks=(6,), dtype="i8", **dims("time"))
    time[:] = np.arange(6) * 24
    time.attrs["units"] = "hours since 2024-01-01"
    temp = root.create_array("temp", shape=(6, 8), chunks=(2, 4), dtype="f4", **dims("time", "x"))
    temp[:] = np.random.default_rng(zarr_format).standard_normal((6, 8)).astype("f4")
    root.create_group("sub").create_array("h", shape=(3,), dtype="i2", **dims("x"))[:] = 7


def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    return tmp_path / "data"


def flip(path: Path, offset: int, length: int) -> None:
    """Invert `length` bytes at `offset`: same size, bytes no codec decodes."""
    with path.open("r+b") as f:
        f.seek(offset)
        flipped = bytes(b ^ 0xFF for b in f.read(length))
        f.seek(offset)
        f.write(flipped)


@pytest.mark.parametrize("kind", ["json", "icechunk"])
def test_fits_passes(kind: str, tmp_path: Path) -> None:
    path = data_dir(tmp_path) / "image.fits"
    write_fits(path, 0)
    vds = vcube.open_virtual_dataset(str(path), parser=FITSParser(chunk_rows=5))
    report = verify(persist(vds, kind, tmp_path, urls([path])), samples=None)
    assert report.ok, report.format()
    found = checks(report)
    assert sorted(found) == sorted(map(str, vds.data_vars)) == ["ERR_1", "ERR_2", "HDU4", "SCI"]
    assert {n: v.checked for n, v in found.items()} == {"ERR_1": 3, "ERR_2": 3, "HDU4": 1, "SCI": 3}


@pytest.mark.parametrize("dim", ["file", "SCI_naxis2"], ids=["new-dim", "existing-dim"])
def test_fits_files_concatenated(dim: str, tmp_path: Path) -> None:
    """Files stacked along a new dimension, or following each other along an existing one
    (FITS has no coordinates: in the order given)."""
    paths = [data_dir(tmp_path) / f"image_{i}.fits" for i in range(3)]
    for i, path in enumerate(paths):
        write_fits(path, i)
    vds = vcube.open_virtual_mfdataset(
        [str(p) for p in paths], combine="nested", concat_dim=dim, drop_variables=["HDU4"]
    )
    report = verify(persist(vds, "json", tmp_path, urls(paths)), samples=None)
    assert report.ok, report.format()
    assert report.sources == tuple(urls(paths))
    assert checks(report)["SCI"].checked == 3
    # The ERR images lack SCI_naxis2: taken from the first file, and compared with it.
    assert checks(report)["ERR_1"].checked == (3 if dim == "file" else 1)


@pytest.mark.parametrize("kind", ["json", "icechunk"])
def test_fits_wrong_reference_is_reported(kind: str, tmp_path: Path) -> None:
    path = data_dir(tmp_path) / "image.fits"
    write_fits(path, 0)
    vds = vcube.open_virtual_dataset(str(path), parser=FITSParser(chunk_rows=4))
    vds = swap_chunks(vds, "SCI", (1, 0), (2, 0))
    report = verify(persist(vds, kind, tmp_path, urls([path])), samples=None)
    assert not report.ok
    (mismatch,) = checks(report)["SCI"].different
    assert mismatch.chunk == (1, 0)
    with fits.open(path, do_not_scale_image_data=True) as hdus:
        raw = np.asarray(hdus["SCI"].data)
    first = tuple(int(i) for i in np.argwhere(raw[4:8] != raw[8:12])[0])
    assert mismatch.index == (4 + first[0], first[1])
    assert (mismatch.expected, mismatch.actual) == (raw[4:8][first], raw[8:12][first])
    assert isinstance(mismatch.expected, int)  # raw stored integers, compared unscaled


def test_fits_scaling_lost_is_reported(tmp_path: Path) -> None:
    """BSCALE / BZERO mean scale_factor / add_offset: references that lost them read other
    values, and verify compares decoded values to say so."""
    path = data_dir(tmp_path) / "image.fits"
    write_fits(path, 0)
    target = persist(vcube.open_virtual_dataset(str(path)), "json", tmp_path, urls([path]))
    refs = json.loads(Path(target).read_text())
    attrs = json.loads(refs["refs"]["SCI/.zattrs"])
    del attrs["scale_factor"]
    refs["refs"]["SCI/.zattrs"] = json.dumps(attrs)
    Path(target).write_text(json.dumps(refs))
    report = verify(target)
    (mismatch,) = checks(report)["SCI"].different
    with fits.open(path) as hdus:  # scaled by astropy
        scaled = np.asarray(hdus["SCI"].data)
    assert mismatch.index == (0, 0)
    assert mismatch.expected == scaled[0, 0]
    assert mismatch.actual == (scaled[0, 0] - 10) / 2 + 10
    assert all(not v.different for n, v in checks(report).items() if n != "SCI")


@pytest.mark.parametrize("stack", [False, True], ids=["pages", "stacked"])
@pytest.mark.parametrize("kind", ["json", "icechunk"])
def test_tiff_passes(kind: str, stack: bool, tmp_path: Path) -> None:
    path = data_dir(tmp_path) / "frames.tif"
    write_tiff(path, 0)
    vds = vcube.open_virtual_dataset(str(path), parser=TIFFParser(stack=stack))
    report = verify(persist(vds, kind, tmp_path, urls([path])), samples=None)
    assert report.ok, report.format()
    found = checks(report)
    if stack:
        assert list(found) == ["0"]
        assert found["0"].checked == 3 * 3 * 3  # pages x tile rows x tile columns
    else:
        assert {n: v.checked for n, v in found.items()} == {"0": 9, "1": 9, "2": 9}


def test_tiff_pages_of_other_layouts(tmp_path: Path) -> None:
    """RGB strips (the short last one held inline), a float page and a thumbnail in one file."""
    path = data_dir(tmp_path) / "mixed.tif"
    rng = np.random.default_rng(1)
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            rng.integers(0, 255, (30, 20, 3)).astype("u1"), rowsperstrip=7, compression="zlib"
        )
        tif.write(rng.standard_normal((30, 20)).astype("f4"), photometric="minisblack")
        tif.write(rng.integers(0, 255, (5, 4)).astype("u1"), photometric="minisblack")
    vds = vcube.open_virtual_dataset(str(path))
    assert vds["2"].dims == ("y_2", "x_2")
    report = verify(persist(vds, "icechunk", tmp_path, urls([path])), samples=None)
    assert report.ok, report.format()
    assert {n: v.checked for n, v in checks(report).items()} == {"0": 5, "1": 1, "2": 1}


@pytest.mark.parametrize("stack", [False, True], ids=["new-dim", "stacked-pages"])
def test_tiff_files_concatenated(stack: bool, tmp_path: Path) -> None:
    """Files stacked along a new dimension, or their stacked pages one after the other."""
    paths = [data_dir(tmp_path) / f"frames_{i}.tif" for i in range(3)]
    for i, path in enumerate(paths):
        write_tiff(path, i, pages=2)
    vds = vcube.open_virtual_mfdataset(
        [str(p) for p in paths],
        parser=TIFFParser(stack=stack),
        combine="nested",
        concat_dim="page" if stack else "time",
    )
    assert vds["0"].shape == ((6, 40, 48) if stack else (3, 40, 48))
    report = verify(persist(vds, "json", tmp_path, urls(paths)), samples=None)
    assert report.ok, report.format()
    assert checks(report)["0"].checked == (6 if stack else 3) * 9


@pytest.mark.parametrize("kind", ["json", "icechunk"])
def test_tiff_corrupted_tile_is_reported(kind: str, tmp_path: Path) -> None:
    path = data_dir(tmp_path) / "frames.tif"
    write_tiff(path, 0)
    vds = vcube.open_virtual_dataset(str(path))
    target = persist(vds, kind, tmp_path, urls([path]))
    ref = vds["1"].data.manifest[(2, 1)]
    flip(path, ref.offset, ref.length)
    report = verify(target, samples=None)
    assert not report.ok
    (mismatch,) = checks(report)["1"].different
    assert mismatch.chunk == (2, 1)
    assert mismatch.sources == (normalize_url(path),)
    assert mismatch.error is not None
    assert checks(report)["1"].equal == 8
    assert all(not v.different for n, v in checks(report).items() if n != "1")


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("kind", ["json", "icechunk", "icechunk-without-metadata"])
def test_zarr_passes(kind: str, zarr_format: Literal[2, 3], tmp_path: Path) -> None:
    """The sources are the store, also when the target only names its chunk objects."""
    store = data_dir(tmp_path) / "store.zarr"
    write_zarr(store, zarr_format)
    vds = vcube.open_virtual_dataset(str(store))
    report = verify(persist(vds, kind, tmp_path, urls([store])), samples=None)
    assert report.ok, report.format()
    assert report.sources == (normalize_url(store),)
    assert {n: v.checked for n, v in checks(report).items()} == {"temp": 6, "time": 1}


def test_zarr_corrupted_chunk_is_reported(tmp_path: Path) -> None:
    store = data_dir(tmp_path) / "store.zarr"
    write_zarr(store, 3)
    target = persist(vcube.open_virtual_dataset(str(store)), "json", tmp_path, [])
    chunk = store / "temp" / "c" / "1" / "1"
    flip(chunk, 0, chunk.stat().st_size)
    report = verify(target, samples=None)
    (mismatch,) = checks(report)["temp"].different
    assert mismatch.chunk == (1, 1)
    assert mismatch.sources == (normalize_url(store),)
    assert mismatch.error is not None


def test_netcdf_files_stacked_along_a_new_dimension(archive: list[Path], tmp_path: Path) -> None:
    """NetCDF4 dimensions (HDF5 dimension scales) say which axis a file lacks."""
    vds = vcube.open_virtual_mfdataset(
        [str(p) for p in archive[:3]], combine="nested", concat_dim="member", join="override"
    )
    assert vds["air"].dims == ("member", "time", "lat", "lon")
    report = verify(persist(vds, "json", tmp_path, urls(archive[:3])), samples=None)
    assert report.ok, report.format()
    assert checks(report)["air"].checked == 3 * 2 * 2
    assert checks(report)["count"].checked == 3


@pytest.mark.s3
@pytest.mark.parametrize("fmt", ["fits", "tiff", "zarr"])
def test_fits_tiff_zarr_on_s3(
    fmt: str, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """Source files in object storage, read by astropy, tifffile and zarr through the
    registry's store."""
    folder = data_dir(tmp_path)
    if fmt == "fits":
        write_fits(folder / "image.fits", 0)
    elif fmt == "tiff":
        write_tiff(folder / "frames.tif", 0)
    else:
        write_zarr(folder / "store.zarr", 3)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3_server.upload(file, s3_bucket, f"data/{file.relative_to(folder)}")
    source = f"s3://{s3_bucket}/data/{next(folder.iterdir()).name}"
    registry = ObjectStoreRegistry({f"s3://{s3_bucket}": s3_server.store(s3_bucket)})
    vds = vcube.open_virtual_dataset(source, registry=registry)
    vds.vcube.to_kerchunk(str(tmp_path / "refs.json"), format="json")
    report = verify(tmp_path / "refs.json", registry=registry, samples=None)
    assert report.ok, report.format()
    assert report.sources == (source,)


def test_zarr_subgroup_against(tmp_path: Path) -> None:
    """A target made from a subgroup names its arrays without the group's path: the default
    sources (the whole store) do not match them, the subgroup given with `against` does."""
    store = data_dir(tmp_path) / "store.zarr"
    write_zarr(store, 3)
    vds = vcube.open_virtual_dataset(str(store), group="sub")
    target = persist(vds, "json", tmp_path, [])
    whole = verify(target)
    assert not whole.ok
    assert whole.problems == (f"{normalize_url(store)}: none of its arrays is in the target",)
    assert checks(whole)["h"].note == "in no source file"
    report = verify(target, against=str(store / "sub"))
    assert report.ok, report.format()
    assert checks(report)["h"].checked == 1


@pytest.mark.parametrize("fmt", ["fits", "tiff"])
def test_truncated_source_is_a_problem(fmt: str, tmp_path: Path) -> None:
    """A file its library cannot open any more (its header cut short) is a problem of the
    report, named with the library's error; its chunks are not compared."""
    path = data_dir(tmp_path) / ("image.fits" if fmt == "fits" else "frames.tif")
    write_fits(path, 0) if fmt == "fits" else write_tiff(path, 0)
    target = persist(vcube.open_virtual_dataset(str(path)), "json", tmp_path, [])
    path.write_bytes(path.read_bytes()[:100])
    report = verify(target)
    assert not report.ok
    (problem,) = report.problems
    assert problem.startswith(f"{normalize_url(path)}: ")
    assert all(v.checked == 0 and v.note == "in no source file" for v in report.variables)
