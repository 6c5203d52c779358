"""The NetCDF3 parser over files written by scipy and netCDF4 in every classic format: values read
back through the references with plain xarray / zarr equal what netCDF4 and scipy read."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import icechunk as ic
import netCDF4
import numpy as np
import obstore
import pytest
import xarray as xr
from conformance import assert_conformant, assert_conformant_s3, read_kerchunk
from docs_examples import run_docs
from scipy.io import netcdf_file

import vcube
from vcube import ManifestStore, NetCDF3Parser, UnsupportedFormatError
from vcube.errors import SourceNotFoundError, VcubeError
from vcube.parsers import detect_parser
from vcube.readers import ReadOptions
from vcube.registry import ObjectStoreRegistry, normalize_url
from vcube.writers.icechunk import to_icechunk
from vcube.writers.kerchunk import to_kerchunk

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from s3_server import S3Server

RAW = {"mask_and_scale": False, "decode_times": False}
NETCDF4_FORMATS = ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA"]


def read_back(path: Path, **kwargs: Any) -> xr.Dataset:
    vds = vcube.open_virtual_dataset(path)
    store = ManifestStore.from_virtual_dataset(vds)
    return xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None, **kwargs).load()


def assert_reads_as_netcdf(path: Path, *, scipy: bool = True) -> None:
    """Raw and decoded, vcube's reading equals netCDF4's (and scipy's, for CDF-1/2)."""
    engines = ["netcdf4", "scipy"] if scipy else ["netcdf4"]
    for kwargs in (RAW, {}):
        actual = read_back(path, **kwargs)
        for engine in engines:
            expected = xr.open_dataset(path, engine=engine, **kwargs).load()
            xr.testing.assert_identical(actual, expected)
            for name, var in expected.variables.items():
                assert actual[name].dtype == var.dtype, (engine, name)


def write_netcdf4(path: Path, fmt: str) -> None:
    """Fixed and record variables of many types, scalars, char arrays, fills, attributes."""
    cdf5 = fmt == "NETCDF3_64BIT_DATA"
    with netCDF4.Dataset(path, "w", format=fmt) as d:
        d.createDimension("time", None)
        d.createDimension("x", 3)
        d.createDimension("strlen", 5)
        time = d.createVariable("time", "f8", ("time",))
        time.units = "days since 2000-01-01"
        time.calendar = "standard"
        temp = d.createVariable("temp", "f4", ("time", "x"), fill_value=np.float32(-999))
        temp.units = "K"
        flag = d.createVariable("flag", "i1", ("time",))  # 1 byte a record: padded to 4
        count = d.createVariable("count", "i2", ("time", "x"))
        name = d.createVariable("name", "S1", ("x", "strlen"))
        d.createVariable("never_written", "f8", ("x",))  # netCDF default fill
        d.createVariable("never_written_int", "i4", ("x",))
        d.createVariable("never_written_rec", "f4", ("time",))
        scalar = d.createVariable("scalar", "i4", ())
        d.createVariable("with_fill", "i2", ("x",), fill_value=np.int16(-5))
        d.title = "a NetCDF3 file"
        d.byte_attr = np.int8(-3)
        d.short_attr = np.array([1, -2], dtype="i2")
        d.int_attr = np.int32(123456)
        d.float_attr = np.array([0.1, 2.5], dtype="f4")
        d.double_attr = np.float64(1e300)
        types = ["u1", "u2", "u4", "i8", "u8"] if cdf5 else []
        for t in types:
            d.setncattr(f"{t}_attr", np.array([1, 2], dtype=t))
            d.createVariable(f"var_{t}", t, ("x",))[:] = np.array([0, 1, 2], dtype=t)
            d.createVariable(f"rec_{t}", t, ("time",))
        time[:] = [0.0, 1.0, 2.5]
        temp[:2] = np.arange(6, dtype="f4").reshape(2, 3)
        flag[:] = [1, -2, 3]
        count[:] = np.arange(9, dtype="i2").reshape(3, 3)
        name[:] = netCDF4.stringtochar(np.array(["ab", "cdefg", "h"], dtype="S5"))
        scalar.assignValue(42)


@pytest.mark.parametrize("fmt", NETCDF4_FORMATS)
def test_netcdf4_written_file_reads_back_exactly(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    write_netcdf4(path, fmt)
    assert_reads_as_netcdf(path, scipy=fmt != "NETCDF3_64BIT_DATA")


@pytest.mark.parametrize("fmt", NETCDF4_FORMATS)
def test_single_record_variable_is_not_padded(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    with netCDF4.Dataset(path, "w", format=fmt) as d:
        d.createDimension("t", None)
        d.createVariable("b", "i1", ("t",))[:] = np.arange(7, dtype="i1")
    assert_reads_as_netcdf(path, scipy=fmt != "NETCDF3_64BIT_DATA")


@pytest.mark.parametrize("fmt", NETCDF4_FORMATS)
def test_zero_records(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    with netCDF4.Dataset(path, "w", format=fmt) as d:
        d.createDimension("t", None)
        d.createDimension("x", 2)
        d.createVariable("a", "f4", ("t", "x"))
        d.createVariable("b", "i2", ("t",))
        d.createVariable("fixed", "f8", ("x",))[:] = [1.0, 2.0]
    assert_reads_as_netcdf(path, scipy=fmt != "NETCDF3_64BIT_DATA")


@pytest.mark.parametrize("version", [1, 2])
def test_scipy_written_file_reads_back_exactly(version: int, tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    with netcdf_file(path, "w", version=version) as f:
        f.history = "written by scipy"
        f.createDimension("time", None)
        f.createDimension("x", 2)
        time = f.createVariable("time", "f8", ("time",))
        time[:] = [0.0, 1.0, 2.0]
        time.units = "hours since 2020-01-01"
        f.createVariable("h", "i2", ("time",))[:] = [1, 2, 3]
        f.createVariable("b", "b", ("time", "x"))[:] = np.arange(6).reshape(3, 2)
        v = f.createVariable("v", "f4", ("x",))
        v[:] = [1.5, -2.5]
        v.scale = np.float32(2.0)
        v._FillValue = np.float32(-1.0)
        f.createVariable("c", "c", ("x",))[:] = np.array([b"a", b"b"])
    assert_reads_as_netcdf(path)


def test_long_header_is_read_in_few_requests(tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as d:
        d.createDimension("x", 2)
        for i in range(600):  # a header of more than 64 KiB
            v = d.createVariable(f"variable_number_{i}", "f4", ("x",))
            v.long_name = "a long description of this variable " * 2
            v[:] = [i, -i]
    parser = NetCDF3Parser(read_options=ReadOptions(strategy="ranges"))
    vds = vcube.open_virtual_dataset(path, parser=parser)
    assert len(vds.variables) == 600
    assert parser.stats.requests <= 2  # the first 64 KiB (and the size), the rest of the header
    assert_reads_as_netcdf(path)


def test_small_file_is_read_in_one_range_request(tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    write_netcdf4(path, "NETCDF3_CLASSIC")
    parser = NetCDF3Parser()
    vcube.open_virtual_dataset(path, parser=parser)
    assert parser.stats.requests == 1  # one ranged GET, which also tells the file's size
    assert parser.stats.bytes == path.stat().st_size <= 64 * 2**10


def test_drop_variables(tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    write_netcdf4(path, "NETCDF3_CLASSIC")
    vds = vcube.open_virtual_dataset(path, drop_variables=["temp", "name"])
    assert "temp" not in vds.variables
    assert "name" not in vds.variables
    assert "count" in vds.variables


@pytest.mark.parametrize("fmt", NETCDF4_FORMATS)
def test_detected_by_magic(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    write_netcdf4(path, fmt)
    parser = detect_parser(normalize_url(path), ObjectStoreRegistry())
    assert isinstance(parser, NetCDF3Parser)


def corrupt(data: bytes) -> bytes:
    return b"XDF\x01" + data[4:]


def truncate(data: bytes) -> bytes:
    return data[:60]


@pytest.mark.parametrize("damage", [corrupt, truncate, lambda d: d[:3], lambda d: b""])
def test_damaged_header_raises_unsupported_format(
    damage: Callable[[bytes], bytes], tmp_path: Path
) -> None:
    good = tmp_path / "good.nc"
    write_netcdf4(good, "NETCDF3_CLASSIC")
    bad = tmp_path / "bad.nc"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(UnsupportedFormatError, match=re.escape(normalize_url(bad))):
        NetCDF3Parser()(str(bad))


def test_bad_tag_raises_unsupported_format(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"CDF\x01" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x99" + bytes(100))
    with pytest.raises(UnsupportedFormatError, match="tag"):
        NetCDF3Parser()(str(bad))


def test_unlimited_dimension_after_the_first_axis_raises_unsupported_format(
    tmp_path: Path,
) -> None:
    def name(text: bytes) -> bytes:
        return len(text).to_bytes(4, "big") + text + bytes(-len(text) % 4)

    def u32(*values: int) -> bytes:
        return b"".join(v.to_bytes(4, "big") for v in values)

    header = (
        b"CDF\x01"
        + u32(0)  # numrecs
        + u32(0x0A, 2)
        + name(b"t")
        + u32(0)  # unlimited
        + name(b"x")
        + u32(2)
        + u32(0, 0)  # no global attributes
        + u32(0x0B, 1)
        + name(b"v")
        + u32(2, 1, 0)  # dimensions (x, t): invalid
        + u32(0, 0)
        + u32(4, 8, 200)  # int, vsize, begin
    )
    bad = tmp_path / "bad.nc"
    bad.write_bytes(header + bytes(100))
    with pytest.raises(UnsupportedFormatError, match=r"'v' has the unlimited dimension 't'"):
        NetCDF3Parser(chunk_bytes=4)(str(bad))


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT_DATA"])
def test_streaming_numrecs_is_computed_from_the_file_size(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    write_netcdf4(path, fmt)
    expected = xr.open_dataset(path, engine="netcdf4", **RAW).load()
    data = path.read_bytes()
    width = 8 if fmt == "NETCDF3_64BIT_DATA" else 4
    assert int.from_bytes(data[4 : 4 + width], "big") == 3
    path.write_bytes(data[:4] + b"\xff" * width + data[4 + width :])
    xr.testing.assert_identical(read_back(path, **RAW), expected)


@pytest.mark.s3
@pytest.mark.parametrize("fmt", NETCDF4_FORMATS)
def test_over_s3_reads_back_exactly_in_one_request(
    fmt: str, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    path = tmp_path / "x.nc"
    write_netcdf4(path, fmt)
    url = s3_server.upload(path, s3_bucket, f"nc3/{fmt}.nc")
    registry = ObjectStoreRegistry({f"s3://{s3_bucket}": s3_server.store(s3_bucket)})
    parser = NetCDF3Parser()
    vds = vcube.open_virtual_dataset(url, registry=registry, parser=parser)
    assert parser.stats.requests == 1  # the first 64 KiB, with the object's size
    store = ManifestStore.from_virtual_dataset(vds, registry=registry)
    actual = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None, **RAW).load()
    xr.testing.assert_identical(actual, xr.open_dataset(path, engine="netcdf4", **RAW).load())


@pytest.mark.parametrize("fmt", NETCDF4_FORMATS)
def test_kerchunk_round_trip(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    write_netcdf4(path, fmt)
    refs = to_kerchunk(vcube.open_virtual_dataset(path))
    for decode in (False, True):
        expected = xr.open_dataset(path, **({} if decode else RAW)).load()
        xr.testing.assert_identical(read_kerchunk(refs, decode=decode), expected)


@pytest.mark.parametrize("fmt", NETCDF4_FORMATS)
def test_icechunk_round_trip(fmt: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "x.nc"
    write_netcdf4(path, fmt)
    config = ic.RepositoryConfig.default()
    prefix = data.as_uri() + "/"
    config.set_virtual_chunk_container(
        ic.VirtualChunkContainer(prefix, ic.local_filesystem_store(str(data)))
    )
    repo = ic.Repository.create(
        ic.local_filesystem_storage(str(tmp_path / "repo")),
        config=config,
        authorize_virtual_chunk_access={prefix: ic.credentials.LocalFileSystemAccess},
    )
    session = repo.writable_session("main")
    to_icechunk(vcube.open_virtual_dataset(path), session.store)
    session.commit("virtualize")
    store = repo.readonly_session("main").store
    for kwargs in (RAW, {}):
        actual = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None, **kwargs)
        xr.testing.assert_identical(actual.load(), xr.open_dataset(path, **kwargs).load())


@pytest.mark.parametrize("fmt", NETCDF4_FORMATS)
def test_conformance(fmt: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "x.nc"
    write_netcdf4(path, fmt)
    expected = xr.open_dataset(path, engine="netcdf4", **RAW)
    assert_conformant(path, expected, NetCDF3Parser(), tmp_path)


@pytest.mark.s3
def test_conformance_s3(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    path = tmp_path / "x.nc"
    write_netcdf4(path, "NETCDF3_64BIT_OFFSET")
    expected = xr.open_dataset(path, engine="netcdf4", **RAW)
    assert_conformant_s3(path, expected, NetCDF3Parser(), s3_server, s3_bucket)


# -- chunk_bytes: contiguous variables split along their first axis ---------------------------


def write_fixed(path: Path, fmt: str) -> None:
    """Fixed-size variables of every rank, one with a prime first axis, a record variable."""
    with netCDF4.Dataset(path, "w", format=fmt) as d:
        d.createDimension("t", None)
        d.createDimension("y", 7)  # prime: no divisor but 1 and 7
        d.createDimension("x", 5)
        d.createDimension("n", 12)
        d.createDimension("two", 2)
        d.createDimension("strlen", 3)
        d.createVariable("grid", "f4", ("y", "x"))[:] = np.arange(35, dtype="f4").reshape(7, 5)
        d.createVariable("line", "i2", ("n",))[:] = np.arange(-6, 6, dtype="i2")
        d.createVariable("small", "f8", ("two",))[:] = [0.5, -0.5]
        d.createVariable("byte", "i1", ("n",))[:] = np.arange(12, dtype="i1")  # 12 bytes
        d.createVariable("cube", "i4", ("two", "y", "x"))[:] = np.arange(70).reshape(2, 7, 5)
        d.createVariable("chars", "S1", ("y", "strlen"))[:] = netCDF4.stringtochar(
            np.array([b"a", b"bc", b"def", b"g", b"hi", b"jkl", b"m"], dtype="S3")
        )
        d.createVariable("scalar", "f8", ())[...] = 3.25
        d.createVariable("unwritten", "i2", ("y",))  # netCDF-C writes the default fill
        d.createVariable("time", "f8", ("t",))[:] = [0.0, 1.0, 2.0]
        d.createVariable("rec", "i2", ("t", "x"))[:] = np.arange(15, dtype="i2").reshape(3, 5)


def chunk_rows(vds: xr.Dataset) -> dict[str, tuple[int, ...]]:
    return {str(k): v.data.info.chunks for k, v in vds.variables.items()}


@pytest.mark.parametrize("fmt", NETCDF4_FORMATS)
@pytest.mark.parametrize("chunk_bytes", [1, 40, 2**20])
def test_split_variables_conform(fmt: str, chunk_bytes: int, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "x.nc"
    write_fixed(path, fmt)
    expected = xr.open_dataset(path, engine="netcdf4", **RAW)
    parser = NetCDF3Parser(chunk_bytes=chunk_bytes)
    vds = assert_conformant(path, expected, parser, tmp_path, loadable_variables=[])
    chunks = chunk_rows(vds)
    assert chunks["scalar"] == ()
    assert chunks["time"] == chunks["rec"][:1] == (1,)  # interleaved records: one each
    if chunk_bytes == 2**20:  # everything fits: one chunk per variable, as without the option
        assert all(chunks[k] == vds[k].shape for k in ("grid", "line", "cube", "chars"))
    if chunk_bytes == 1:  # at least one row per chunk
        assert chunks["grid"] == (1, 5)
        assert chunks["cube"] == (1, 7, 5)
        assert chunks["line"] == (1,)
    if chunk_bytes == 40:
        assert chunks["grid"] == (2, 5)  # 7 rows of 20 bytes: the last chunk is partial
        assert chunks["line"] == (12,)  # 24 bytes: fits
        assert chunks["byte"] == (12,)
        assert chunks["small"] == (2,)
        assert chunks["cube"] == (1, 7, 5)  # one row is 140 bytes, more than asked
        assert chunks["chars"] == (7, 3)


def test_split_offsets_are_computed_from_the_variable_start(tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    write_fixed(path, "NETCDF3_CLASSIC")
    whole = NetCDF3Parser()(str(path)).group.arrays["grid"].manifest
    split = NetCDF3Parser(chunk_bytes=60)(str(path)).group.arrays["grid"].manifest
    begin = int(whole.offsets.reshape(-1)[0])
    assert split.grid_shape == (3, 1)  # 3 rows of 20 bytes per chunk, 7 rows
    np.testing.assert_array_equal(split.offsets.reshape(-1), begin + np.array([0, 60, 120]))
    np.testing.assert_array_equal(split.lengths.reshape(-1), [60, 60, 60])  # whole chunks
    assert int(whole.lengths.reshape(-1)[0]) == 140


def write_last_fixed(path: Path, rows: int, records: int) -> None:
    """A fixed-size variable `a` of `rows` float64 rows, then a lone int32 record variable."""
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as d:
        d.createDimension("t", None)
        d.createDimension("y", rows)
        d.createVariable("a", "f8", ("y",))[:] = np.arange(rows) * 1.5
        if records:
            d.createVariable("r", "i4", ("t",))[:] = np.arange(records, dtype="i4")


@pytest.mark.parametrize(
    ("rows", "records", "chunk_bytes", "expected_rows"),
    [
        (7, 2, 32, 4),  # the last chunk's overrun (1 row, 8 bytes) fits in the records
        (7, 4, 40, 3),  # 5 rows would overrun by 24 bytes, the file has 16 more: 3 rows do
        (10, 0, 32, 2),  # nothing follows: 4 rows would run past the end; 2 divides 10
        (7, 0, 32, 1),  # nothing follows and 7 is prime: one row per chunk
        (12, 0, 32, 4),  # 4 divides 12: no overrun at all
    ],
)
def test_last_chunk_never_reads_past_the_end_of_the_file(
    rows: int, records: int, chunk_bytes: int, expected_rows: int, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "x.nc"
    write_last_fixed(path, rows, records)
    parser = NetCDF3Parser(chunk_bytes=chunk_bytes)
    store = parser(str(path))
    array = store.group.arrays["a"]
    assert array.chunks == (expected_rows,)
    ends = array.manifest.offsets + array.manifest.lengths
    assert int(ends.max()) <= path.stat().st_size
    expected = xr.open_dataset(path, engine="netcdf4", **RAW)
    assert_conformant(path, expected, parser, tmp_path, loadable_variables=[])


@pytest.mark.parametrize("fmt", NETCDF4_FORMATS)
@pytest.mark.parametrize(
    ("chunk_bytes", "rows"),
    # 10 records of 6 bytes, the last bytes of the file: 4 records a chunk would read 12 bytes
    # past its end, so 2 (which divides 10) are taken instead.
    [(30, 5), (24, 2), (2**20, 10)],
)
def test_lone_record_variable_groups_records(
    fmt: str, chunk_bytes: int, rows: int, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "x.nc"
    with netCDF4.Dataset(path, "w", format=fmt) as d:
        d.createDimension("t", None)
        d.createDimension("x", 3)
        d.createVariable("fixed", "f4", ("x",))[:] = [1.0, 2.0, 3.0]
        d.createVariable("v", "i2", ("t", "x"))[:] = np.arange(30, dtype="i2").reshape(10, 3)
    expected = xr.open_dataset(path, engine="netcdf4", **RAW)
    parser = NetCDF3Parser(chunk_bytes=chunk_bytes)
    vds = assert_conformant(path, expected, parser, tmp_path, loadable_variables=[])
    assert vds["v"].data.info.chunks == (rows, 3)
    manifest = vds["v"].data.manifest
    assert manifest.grid_shape == (10 // rows, 1)
    assert int((manifest.offsets + manifest.lengths).max()) <= path.stat().st_size
    whole = NetCDF3Parser()(str(path)).group.arrays["v"]
    assert whole.chunks == (1, 3)  # without the option: one chunk per record


def test_interleaved_records_are_not_grouped(tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    write_netcdf4(path, "NETCDF3_64BIT_OFFSET")
    store = NetCDF3Parser(chunk_bytes=2**20)(str(path))
    for name in ("time", "temp", "flag", "count"):
        assert store.group.arrays[name].chunks[0] == 1, name


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1MiB"])
def test_chunk_bytes_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(ValueError, match="chunk_bytes"):
        NetCDF3Parser(chunk_bytes=bad)


# -- read strategies -------------------------------------------------------------------------


def test_whole_strategy_downloads_the_file_in_one_request(tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    write_fixed(path, "NETCDF3_CLASSIC")
    parser = NetCDF3Parser(read_options=ReadOptions(strategy="whole"))
    vds = vcube.open_virtual_dataset(path, parser=parser)
    assert parser.stats.requests == 1
    assert parser.stats.bytes == path.stat().st_size
    assert set(vds.variables) == set(xr.open_dataset(path, engine="netcdf4").variables)
    small = NetCDF3Parser(read_options=ReadOptions(strategy="whole", max_whole_file=100))
    with pytest.raises(VcubeError, match="max_whole_file"):
        small(str(path))


def test_missing_file_raises_source_not_found(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=r"nothing\.nc"):
        NetCDF3Parser()(str(tmp_path / "nothing.nc"))


@pytest.mark.s3
def test_split_conformance_s3(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    path = tmp_path / "x.nc"
    write_fixed(path, "NETCDF3_64BIT_DATA")
    expected = xr.open_dataset(path, engine="netcdf4", **RAW)
    parser = NetCDF3Parser(chunk_bytes=40)
    assert_conformant_s3(path, expected, parser, s3_server, s3_bucket, loadable_variables=[])


@pytest.mark.s3
def test_empty_object_on_s3_raises_unsupported_format(s3_server: S3Server, s3_bucket: str) -> None:
    store = s3_server.store(s3_bucket)
    obstore.put(store, "empty.nc", b"")
    registry = ObjectStoreRegistry({f"s3://{s3_bucket}": store})
    url = f"s3://{s3_bucket}/empty.nc"
    with pytest.raises(UnsupportedFormatError, match=re.escape(url)):
        NetCDF3Parser()(url, registry)


def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_docs("netcdf3.md")
