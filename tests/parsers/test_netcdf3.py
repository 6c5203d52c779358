"""The NetCDF3 parser over files written by scipy and netCDF4 in every classic format: values read
back through the references with plain xarray / zarr equal what netCDF4 and scipy read."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import icechunk as ic
import netCDF4
import numpy as np
import pytest
import xarray as xr
from conformance import assert_conformant, assert_conformant_s3
from scipy.io import netcdf_file

import vcube
from vcube import ManifestStore, NetCDF3Parser, UnsupportedFormatError
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
    assert parser.stats.requests <= 3  # head, the first 64 KiB, the rest of the header
    assert_reads_as_netcdf(path)


def test_small_file_is_read_in_one_range_request(tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    write_netcdf4(path, "NETCDF3_CLASSIC")
    parser = NetCDF3Parser()
    vcube.open_virtual_dataset(path, parser=parser)
    assert parser.stats.requests == 2  # head and one range request
    assert parser.stats.bytes <= 64 * 2**10


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
def test_over_s3_reads_back_exactly_in_two_requests(
    fmt: str, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    path = tmp_path / "x.nc"
    write_netcdf4(path, fmt)
    url = s3_server.upload(path, s3_bucket, f"nc3/{fmt}.nc")
    registry = ObjectStoreRegistry({f"s3://{s3_bucket}": s3_server.store(s3_bucket)})
    parser = NetCDF3Parser()
    vds = vcube.open_virtual_dataset(url, registry=registry, parser=parser)
    assert parser.stats.requests == 2  # head and the first 64 KiB
    store = ManifestStore.from_virtual_dataset(vds, registry=registry)
    actual = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None, **RAW).load()
    xr.testing.assert_identical(actual, xr.open_dataset(path, engine="netcdf4", **RAW).load())


@pytest.mark.parametrize("fmt", NETCDF4_FORMATS)
def test_kerchunk_round_trip(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    write_netcdf4(path, fmt)
    refs = to_kerchunk(vcube.open_virtual_dataset(path))
    for kwargs in (RAW, {}):
        actual = xr.open_dataset(
            "reference://",
            engine="zarr",
            zarr_format=2,
            consolidated=False,
            storage_options={"fo": refs},
            chunks=None,
            **kwargs,
        ).load()
        xr.testing.assert_identical(actual, xr.open_dataset(path, **kwargs).load())


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
