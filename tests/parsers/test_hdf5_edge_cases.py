"""Real-world NetCDF4 / HDF5 files that break tools: each is written by netCDF4-python (or by h5py
where netCDF4 cannot write it) and must read back through vcube's references exactly as netCDF4
(or h5py, for plain HDF5) reads it from the file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr
from test_hdf5 import assert_reads_as_netcdf4, read_back

import vcube
from vcube import HDFParser
from vcube.errors import NotVirtualizableError

Maker = Callable[[Path], None]
RNG = np.random.default_rng(20240601)

NETCDF: dict[str, Maker] = {}
HDF5: dict[str, Maker] = {}
# Cases that fail because of a vcube bug: name -> the bug, in one line.
BUGS: dict[str, str] = {}
# Cases whose files make xarray itself warn (the same on both sides of the comparison).
WARNINGS: dict[str, str] = {
    "fill_missing_and_valid_range": (
        "ignore:variable .* has multiple fill values:xarray.coding.common.SerializationWarning"
    ),
}


def netcdf(fn: Maker) -> Maker:
    NETCDF[fn.__name__] = fn
    return fn


def hdf5(fn: Maker) -> Maker:
    HDF5[fn.__name__] = fn
    return fn


def cube(shape: tuple[int, ...], dtype: str = "f4") -> np.ndarray[Any, Any]:
    return RNG.standard_normal(shape).astype(dtype)


def cases(table: dict[str, Maker]) -> list[Any]:
    params = []
    for name in sorted(table):
        marks: list[pytest.MarkDecorator] = []
        if name in BUGS:
            marks.append(pytest.mark.xfail(strict=True, reason=f"bug: {BUGS[name]}"))
        if name in WARNINGS:
            marks.append(pytest.mark.filterwarnings(WARNINGS[name]))
        params.append(pytest.param(name, marks=marks))
    return params


# ---------------------------------------------------------------------------------------------
# Files netCDF4 reads: compared with xr.open_dataset(engine="netcdf4"), raw and decoded.


@netcdf
def enum_type(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        cloud = d.createEnumType(
            "u1", "cloud_t", {"clear": 0, "cumulus": 1, "stratus": 2, "na": 255}
        )
        d.createDimension("time", 5)
        v = d.createVariable("cloud", cloud, ("time",), fill_value=255)
        v[:] = np.array([0, 1, 2, 255, 1], dtype="u1")
        v.long_name = "cloud type"
        g = d.createGroup("qc")
        flag = g.createEnumType("i2", "flag_t", {"bad": -1, "good": 1})
        g.createVariable("flag", flag, ("time",), zlib=True)[:] = np.array([1, -1, 1, 1, -1])


@netcdf
def coordinates_2d_and_scalar(path: Path) -> None:
    # A curvilinear grid: lat(y, x), lon(y, x), and a scalar height, named by `coordinates`.
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("y", 4)
        d.createDimension("x", 5)
        yy, xx = np.meshgrid(np.arange(4.0), np.arange(5.0), indexing="ij")
        lat = d.createVariable("lat", "f8", ("y", "x"))
        lat[:] = 40 + yy + 0.1 * xx
        lat.units = "degrees_north"
        lon = d.createVariable("lon", "f8", ("y", "x"))
        lon[:] = -10 + xx - 0.1 * yy
        lon.units = "degrees_east"
        h = d.createVariable("height", "f4", ())
        h.assignValue(2.0)
        h.units = "m"
        tas = d.createVariable("tas", "f4", ("y", "x"), zlib=True, chunksizes=(2, 5))
        tas.coordinates = "height lat lon"
        tas.grid_mapping = "crs"
        tas[:] = 280 + cube((4, 5))
        crs = d.createVariable("crs", "i4", ())
        crs.grid_mapping_name = "lambert_conformal_conic"
        crs.standard_parallel = np.array([30.0, 60.0])


@netcdf
def variable_named_like_other_dimension(path: Path) -> None:
    # netCDF-C stores `x` as `_nc4_non_coord_x`: a variable named like a dimension it does not use.
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 3)
        d.createDimension("n", 4)
        d.createVariable("x", "f4", ("n",))[:] = [1.0, 2.0, 3.0, 4.0]
        d.createVariable("data", "i4", ("x",))[:] = [7, 8, 9]


@netcdf
def child_group_uses_parent_dimensions(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("time", None)
        d.createDimension("lat", 3)
        d.createVariable("time", "i4", ("time",))[:] = [0, 1]
        d.createVariable("lat", "f4", ("lat",))[:] = [-10.0, 0.0, 10.0]
        a = d.createGroup("a")
        b = a.createGroup("b")
        c = b.createGroup("c")
        c.createVariable("deep", "f4", ("time", "lat"), zlib=True)[:] = cube((2, 3))
        a.createDimension("level", 2)
        a.createVariable("level", "f4", ("level",))[:] = [1000.0, 500.0]
        b.createVariable("ta", "f4", ("time", "level", "lat"))[:] = cube((2, 2, 3))


@netcdf
def child_group_shadows_parent_dimension(path: Path) -> None:
    # Same dimension name in two groups, different lengths: a child's `x` hides the root's `x`.
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 4)
        d.createVariable("x", "i4", ("x",))[:] = np.arange(4)
        d.createVariable("root_var", "f4", ("x",))[:] = cube((4,))
        g = d.createGroup("fine")
        g.createDimension("x", 8)
        g.createVariable("x", "f4", ("x",))[:] = np.arange(8) / 2
        g.createVariable("fine_var", "f4", ("x",))[:] = cube((8,))


@netcdf
def record_variables_of_different_lengths(path: Path) -> None:
    # netCDF4 shows every variable of an unlimited dimension with the dimension's current length;
    # HDF5 datasets written fewer records are shorter: the rest reads as the fill value.
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("time", None)
        d.createVariable("time", "f8", ("time",))[:] = np.arange(6.0)
        d.createVariable("long_record", "f4", ("time",))[:] = np.arange(6.0)
        short = d.createVariable("short_record", "i4", ("time",), fill_value=-9)
        short[:2] = [10, 11]
        d.createVariable("no_records", "f8", ("time",))


def several_unlimited_dimensions(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("time", None)
        d.createDimension("obs", None)
        d.createVariable("obs_value", "f4", ("obs",))[:] = cube((7,))
        grid = d.createVariable("grid", "i2", ("time", "obs"), fill_value=-1)
        grid[:3, :5] = np.arange(15, dtype="i2").reshape(3, 5)


@netcdf
def string_attributes(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 2)
        v = d.createVariable("v", "f4", ("x",))
        v[:] = [1.0, 2.0]
        v.setncattr_string("nc_string", "a variable-length string")
        v.setncattr_string("nc_string_unicode", "température °C, Zürich")
        v.flag_meanings_list = ["ok", "suspect", "bad"]  # an NC_STRING array
        v.empty_char = ""
        v.setncattr_string("empty_nc_string", "")
        v.char_unicode = "µg m-3"
        v.comment = "line one\nline two\ttabbed"
        d.Conventions = "CF-1.8"
        d.setncattr_string("history", "2024-01-01: created")
        d.title = ""


@netcdf
def numeric_attributes_of_every_type(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 2)
        v = d.createVariable("v", "i4", ("x",))
        v[:] = [1, 2]
        for code in ("i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"):
            info = np.iinfo(code) if code[0] in "iu" else np.finfo(code)
            v.setncattr(f"scalar_{code}", np.array(info.max, dtype=code))
            v.setncattr(f"array_{code}", np.array([info.min, 0, info.max], dtype=code))
        v.setncattr("tiny_f4", np.float32(1e-38))
        v.setncattr("third_f4", np.float32(1) / np.float32(3))
        v.setncattr("one_element", np.array([42], dtype="i8"))
        d.setncattr("root_u8", np.array([2**64 - 1, 2**63], dtype="u8"))


@netcdf
def fill_missing_and_valid_range(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 8)
        v = d.createVariable("both", "f4", ("x",), fill_value=np.float32(-999.0))
        v.missing_value = np.float32(-888.0)
        v.valid_min = np.float32(0.0)
        v.valid_max = np.float32(100.0)
        v[:] = [1.0, -888.0, 3.0, 200.0, -5.0, 6.0, 7.0, 8.0]
        v[0] = np.ma.masked
        i = d.createVariable("int_both", "i2", ("x",), fill_value=np.int16(-32768))
        i.missing_value = np.int16(-1)
        i.valid_range = np.array([0, 1000], dtype="i2")
        i[:6] = [5, -1, 7, 2000, -1, 9]
        w = d.createVariable("missing_only", "f8", ("x",), fill_value=False)
        w.missing_value = 1e20
        w[:] = [1.0, 1e20, 3.0, 4.0, 1e20, 6.0, 7.0, 8.0]


@netcdf
def extreme_integer_fill_values(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 4)
        for code in ("i8", "u8", "u4", "i1"):
            info = np.iinfo(code)
            for which, fill in (("min", info.min), ("max", info.max)):
                v = d.createVariable(f"{code}_{which}", code, ("x",), fill_value=fill)
                v[:2] = np.array([1, 2], dtype=code)


@netcdf
def non_standard_calendars(path: Path) -> None:
    # Model output in noleap / 360_day / julian: xarray decodes these to cftime objects.
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("time", None)
        d.createDimension("nv", 2)
        t = d.createVariable("time", "f8", ("time",))
        t.units = "days since 0001-01-01"
        t.calendar = "noleap"
        t.bounds = "time_bnds"
        t[:] = np.arange(3) * 365.0 + 15.5
        b = d.createVariable("time_bnds", "f8", ("time", "nv"))
        b[:] = np.stack([np.arange(3) * 365.0, np.arange(3) * 365.0 + 31], axis=1)
        g = d.createGroup("model360")
        g.createDimension("t360", 4)
        t360 = g.createVariable("t360", "i4", ("t360",))
        t360.units = "days since 1850-01-01"
        t360.calendar = "360_day"
        t360[:] = [0, 30, 359, 360]
        jul = g.createVariable("launch", "f8", ("t360",))
        jul.units = "hours since 1582-10-01"
        jul.calendar = "julian"
        jul[:] = [0.0, 24.0, 240.0, 2400.0]


@netcdf
def time_without_calendar(path: Path) -> None:
    # No calendar attribute (CF: "standard" implied) and ISO 8601 units ending in "Z".
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("time", 3)
        t = d.createVariable("time", "i8", ("time",))
        t.units = "seconds since 1970-01-01T00:00:00Z"
        t[:] = [1_700_000_000, 1_700_003_600, 1_700_007_200]
        d.createVariable("flux", "f4", ("time",))[:] = [1.0, 2.0, 3.0]


@netcdf
def packed_coordinate(path: Path) -> None:
    # Satellite products pack even their coordinates into int16 with scale_factor / add_offset.
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("lat", 5)
        lat = d.createVariable("lat", "i2", ("lat",), fill_value=np.int16(-32768))
        lat.scale_factor = 0.01
        lat.add_offset = np.float32(10.0)
        lat.units = "degrees_north"
        lat[:] = [10.0, 10.5, 11.0, 11.25, 12.0]
        d.createVariable("sst", "f4", ("lat",))[:] = np.arange(5.0)


@netcdf
def unsigned_attribute_on_signed_bytes(path: Path) -> None:
    # NetCDF-3 habit kept in NetCDF4 archives: unsigned bytes stored as signed with _Unsigned.
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 6)
        v = d.createVariable("quality", "i1", ("x",), fill_value=np.int8(-1))
        v.set_auto_maskandscale(False)
        v._Unsigned = "true"
        v[:] = np.array([0, 1, 127, -128, -2, -1], dtype="i1")
        s = d.createVariable("scaled", "i2", ("x",), zlib=True)
        s.set_auto_maskandscale(False)
        s._Unsigned = "true"
        s.scale_factor = 0.5
        s[:] = np.array([0, 1, 32767, -32768, -2, 3], dtype="i2")


@netcdf
def char_and_string_scalars(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("name_len", 8)
        c = d.createVariable("one_char", "S1", ())
        c[...] = np.array(b"Z", dtype="S1")
        s = d.createVariable("platform", str, ())
        s[0] = "Sentinel-2A"
        e = d.createVariable("empty_string", str, ())
        e[0] = ""
        n = d.createVariable("instrument", "S1", ("name_len",))
        n._Encoding = "utf-8"
        n[:] = netCDF4.stringtochar(np.array(["MSI"], dtype="S8"))[0]


@netcdf
def vlen_strings_in_nested_group(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("station", 4)
        inner = d.createGroup("meta").createGroup("stations")
        names = inner.createVariable("name", str, ("station",))
        names[0] = "Mauna Loa"
        names[2] = "日本"  # index 1 and 3 never written
        inner.createVariable("elevation", "f4", ("station",))[:] = [3397.0, 0.0, 40.0, 12.5]
        codes = inner.createVariable("wmo_code", str, ("station",), zlib=True, chunksizes=(2,))
        codes[:] = np.array(["72217", "", "47662", "x" * 300], dtype=object)


ALL_FILTERS: dict[str, Any] = {"zlib": True, "shuffle": True, "fletcher32": True}


@netcdf
def fletcher32_shuffle_zlib(path: Path) -> None:
    # netCDF-C puts fletcher32 first: shuffle then sees the data plus a 4-byte checksum.
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("time", None)
        d.createDimension("y", 9)
        d.createDimension("x", 11)
        v = d.createVariable(
            "be_f4", ">f4", ("time", "y", "x"), endian="big", chunksizes=(2, 4, 4), **ALL_FILTERS
        )
        v[:] = cube((5, 9, 11))
        v[1, 2, 3] = np.ma.masked
        w = d.createVariable(
            "le_i2", "<i2", ("y", "x"), chunksizes=(3, 11), complevel=1, **ALL_FILTERS
        )
        w[:] = np.arange(99, dtype="i2").reshape(9, 11)
        u = d.createVariable("be_u8", ">u8", ("x",), endian="big", fletcher32=True, chunksizes=(4,))
        u[:] = np.arange(11, dtype="u8") * (2**60)


def fletcher32_shuffle_zlib_8_byte(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("time", None)
        d.createDimension("x", 11)
        v = d.createVariable(
            "f8", ">f8", ("time", "x"), endian="big", chunksizes=(2, 4), **ALL_FILTERS
        )
        v[:] = cube((5, 11), "f8")


@netcdf
def sparse_compressed_chunks(path: Path) -> None:
    # A global grid where only some tiles were ever written (e.g. land-only output).
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("band", 3)
        d.createDimension("y", 40)
        d.createDimension("x", 60)
        v = d.createVariable(
            "reflectance",
            "u2",
            ("band", "y", "x"),
            zlib=True,
            shuffle=True,
            chunksizes=(1, 16, 16),
            fill_value=np.uint16(65535),
        )
        v[0, :16, :16] = np.arange(256, dtype="u2").reshape(16, 16)
        v[2, 32:, 48:] = 7  # an edge chunk, partial in both y and x
        v[1, 20, 30] = 1  # a single value: one whole chunk written
        z = d.createVariable("zeros_written", "f4", ("y", "x"), zlib=True, chunksizes=(20, 20))
        z[:20, :] = 0.0


@netcdf
def netcdf_c_plugin_compressors(path: Path) -> None:
    # netCDF-C >= 4.9 writes zstd, bzip2 and blosc through its own filter plugins.
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 300)
        # (netCDF-C's blosc filter fails on an incompressible chunk: the data must compress)
        data = np.arange(300) // 7 * 0.25
        d.createVariable("zstd", "f8", ("x",), compression="zstd", complevel=5)[:] = data
        d.createVariable("bzip2", "f8", ("x",), compression="bzip2", complevel=3)[:] = data
        for cname in ("blosc_lz4", "blosc_lz4hc", "blosc_zstd", "blosc_zlib", "blosc_lz"):
            v = d.createVariable(cname, "f8", ("x",), compression=cname, chunksizes=(64,))
            v[:] = data
        q = d.createVariable("quantized", "f4", ("x",), zlib=True, significant_digits=3)
        q[:] = data.astype("f4")


@netcdf
def many_small_chunks(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        # 1,000 chunks of 30 values (zarr itself reads about 3,000 chunks a second)
        d.createDimension("y", 200)
        d.createDimension("x", 150)
        v = d.createVariable("tiles", "i2", ("y", "x"), zlib=True, chunksizes=(5, 6))
        v[:] = np.arange(30_000).reshape(200, 150) % 1000


@netcdf
def many_small_variables(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 3)
        for i in range(500):
            v = d.createVariable(f"var_{i:03d}", "f4" if i % 2 else "i2", ("x",))
            v[:] = np.arange(3) + i
            v.index = i


@netcdf
def unusual_names(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("grid cell", 3)
        d.createVariable("air temperature", "f4", ("grid cell",))[:] = [1.0, 2.0, 3.0]
        d.createVariable("température", "f4", ("grid cell",))[:] = [4.0, 5.0, 6.0]
        d.createVariable("CO2.flux", "f4", ("grid cell",))[:] = [7.0, 8.0, 9.0]
        d.createVariable("_underscore", "i1", ("grid cell",))[:] = [1, 2, 3]
        g = d.createGroup("Gruppe ü")
        g.createVariable("x=1", "f4", ("grid cell",))[:] = [0.5, 1.5, 2.5]


@netcdf
def latin1_attribute_bytes(path: Path) -> None:
    # Old archives hold NC_CHAR attributes in Latin-1 ("°C" as b"\xb0C"); netCDF4 decodes them.
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 2)
        v = d.createVariable("t", "f4", ("x",))
        v[:] = [20.0, 21.0]
    with h5py.File(path, "a") as f:
        f["t"].attrs.create("units", np.bytes_(b"\xb0C"))


@netcdf
def empty_attributes(path: Path) -> None:
    # h5py / h5netcdf write attributes with a null dataspace; netCDF4 reads them as empty.
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 2)
        d.createVariable("v", "f4", ("x",))[:] = [1.0, 2.0]
    with h5py.File(path, "a") as f:
        f["v"].attrs["empty_bytes"] = h5py.Empty("S10")
        f["v"].attrs["empty_f4"] = h5py.Empty("f4")
        f["v"].attrs["empty_i8"] = h5py.Empty("i8")


@netcdf
def userblock_netcdf(path: Path) -> None:
    # A 512-byte user block before the superblock: every HDF5 address is relative to it.
    with h5py.File(path, "w", userblock_size=512) as f:
        f.attrs["title"] = np.bytes_(b"file with a user block")
        f["x"] = np.arange(5.0)
        f["x"].make_scale("x")
        f["y"] = np.arange(6, dtype="i4")
        f["y"].make_scale("y")
        f.create_dataset("chunked", data=cube((5, 6)), chunks=(2, 3), compression="gzip")
        f["chunked"].dims[0].attach_scale(f["x"])
        f["chunked"].dims[1].attach_scale(f["y"])
        f.create_dataset("contiguous", data=np.arange(5, dtype="i4"))
        f["contiguous"].dims[0].attach_scale(f["x"])
    with path.open("r+b") as raw:
        raw.write(b"user block: not HDF5 at all".ljust(512, b"\0"))


# ---------------------------------------------------------------------------------------------
# Plain HDF5 files: compared with h5py.


def values(root: zarr.Group, name: str) -> np.ndarray[Any, Any]:
    array = root[name]
    assert isinstance(array, zarr.Array), name
    return np.asarray(array[...])


def assert_reads_as_h5py(path: Path) -> None:
    store = HDFParser()(str(path))
    root = zarr.open_group(store, mode="r", zarr_format=3)
    with h5py.File(path) as f:
        datasets: list[str] = []
        f.visit_links(lambda n: datasets.append(n) if isinstance(f.get(n), h5py.Dataset) else None)
        assert datasets
        for name in datasets:
            expected = f[name][()]
            actual = values(root, name)
            # Zarr hands out native byte order; values and type must be the same.
            assert actual.dtype == expected.dtype.newbyteorder("="), name
            np.testing.assert_array_equal(actual, expected)


@hdf5
def float16(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("half", data=np.array([0.5, -1.0, 65504.0, np.inf, np.nan], dtype="f2"))
        f.create_dataset("half_chunked", data=cube((8, 8), "f2"), chunks=(4, 4), compression=4)
        f.create_dataset("half_be", data=np.arange(6, dtype=">f2"), chunks=(3,), fillvalue=-1)


@hdf5
def zero_size_datasets(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("empty_contiguous", shape=(0, 3), dtype="f4")
        f.create_dataset("empty_chunked", shape=(0,), maxshape=(None,), dtype="i8", chunks=(10,))
        f.create_dataset("empty_fixed", data=np.zeros((2, 0), dtype="u1"))


@hdf5
def userblock_hdf5(path: Path) -> None:
    with h5py.File(path, "w", userblock_size=1024) as f:
        f.create_dataset("contiguous", data=np.arange(100, dtype="<i8"))
        f.create_dataset("chunked", data=cube((30, 7)), chunks=(8, 7), compression="gzip")
        f.create_dataset("compact", data=np.arange(4, dtype="i2"), chunks=None)
    with path.open("r+b") as raw:
        raw.write(b"#!/bin/sh\necho not HDF5\n".ljust(1024, b"\0"))


@hdf5
def hard_and_soft_links(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=cube((6, 4)), chunks=(3, 4), compression="gzip")
        f["hard_copy"] = f["data"]
        f["soft_alias"] = h5py.SoftLink("/data")
        grp = f.create_group("grp")
        grp["relative"] = h5py.SoftLink("../data")
        grp["hard_again"] = f["data"]


@hdf5
def shrunk_then_grown(path: Path) -> None:
    # Chunks beyond a shrunk extent stay in the chunk index; grown again, HDF5 reads fill there.
    with h5py.File(path, "w") as f:
        v = f.create_dataset("v", data=np.arange(10.0), maxshape=(None,), chunks=(4,), fillvalue=-1)
        v.resize((5,))
        v.resize((12,))
        w = f.create_dataset("w", data=np.arange(12.0), maxshape=(None,), chunks=(4,))
        w.resize((3,))


@hdf5
def fixed_length_utf8_strings(path: Path) -> None:
    with h5py.File(path, "w") as f:
        names = np.array(["Zürich".encode(), b"Bern", b""], dtype=h5py.string_dtype("utf-8", 8))
        f.create_dataset("names", data=names)
        f.create_dataset("ascii", data=np.array([b"ab", b"c"], dtype="S2"), chunks=(1,))


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("case", cases(NETCDF))
def test_netcdf_edge_case_reads_as_netcdf4(case: str, tmp_path: Path) -> None:
    path = tmp_path / f"{case}.nc"
    NETCDF[case](path)
    assert_reads_as_netcdf4(path, str(path))


@pytest.mark.parametrize("case", cases(HDF5))
def test_hdf5_edge_case_reads_as_h5py(case: str, tmp_path: Path) -> None:
    path = tmp_path / f"{case}.h5"
    HDF5[case](path)
    assert_reads_as_h5py(path)


def test_szip_is_refused_clearly_and_loads_as_netcdf4(tmp_path: Path) -> None:
    # NASA archives (MODIS, OMI, ...) use szip, which no Zarr codec decodes.
    path = tmp_path / "szip.nc"
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 64)
        v = d.createVariable("radiance", "i4", ("x",), compression="szip", szip_coding="nn")
        v[:] = np.arange(64) * 3
        d.createVariable("plain", "f4", ("x",))[:] = np.arange(64.0)
    with pytest.raises(NotVirtualizableError, match=r"'radiance'.*szip.*loadable_variables"):
        vcube.open_virtual_dataset(path)
    vds = vcube.open_virtual_dataset(path, loadable_variables=["radiance"])
    assert isinstance(vds["plain"].data, vcube.ManifestArray)
    actual = read_back(vds)
    expected = xr.open_dataset(path, engine="netcdf4").load()
    xr.testing.assert_identical(actual, expected)


def eiger_like_master(tmp_path: Path) -> Path:
    # Detector "master" files (Dectris Eiger, NeXus) point at data files with external links.
    for n in (1, 2):
        with h5py.File(tmp_path / f"series_data_{n:06d}.h5", "w") as f:
            images = np.arange(4 * 8 * 8, dtype="u2").reshape(4, 8, 8) * n
            if n == 1:
                f.create_dataset("entry/data/data", data=images, chunks=(1, 8, 8), compression=4)
            else:
                f.create_dataset("entry/data/data", data=images)  # contiguous
    master = tmp_path / "series_master.h5"
    with h5py.File(master, "w") as f:
        # padding, so that the data files' chunk offsets also exist in the master file
        f.create_dataset("entry/instrument/detector/padding", data=np.zeros(4096, dtype="u1"))
        f["entry/instrument/detector/count_time"] = 0.5
        data = f["entry"].create_group("data")
        data["data_000001"] = h5py.ExternalLink("series_data_000001.h5", "/entry/data/data")
        data["data_000002"] = h5py.ExternalLink("series_data_000002.h5", "/entry/data/data")
    return master


def test_external_links_reference_the_linked_files(tmp_path: Path) -> None:
    master = eiger_like_master(tmp_path)
    store = HDFParser()(str(master))
    root = zarr.open_group(store, mode="r", zarr_format=3)
    with h5py.File(master) as f:
        # (data_000002 first: its wrong bytes decode without error, to silently wrong values)
        for name in ("entry/data/data_000002", "entry/data/data_000001"):
            np.testing.assert_array_equal(values(root, name), f[name][()], strict=True)


def test_dangling_links_are_skipped(tmp_path: Path) -> None:
    # A master file shipped without its data files, or a soft link to nothing: h5py shows such
    # links but cannot open them; the rest of the file must still be virtualized.
    master = eiger_like_master(tmp_path)
    with h5py.File(master, "a") as f:
        f["entry/data/data_000003"] = h5py.ExternalLink("missing_000003.h5", "/entry/data/data")
        f["entry/broken_soft"] = h5py.SoftLink("/entry/nowhere")
    # (the links that resolve are dropped: they are the subject of the test above)
    store = HDFParser(drop_variables=["data_000001", "data_000002"])(str(master))
    entry = store.group.groups["entry"]
    assert set(entry.groups["data"].arrays) == set()
    assert "broken_soft" not in entry.arrays
    root = zarr.open_group(store, mode="r", zarr_format=3)
    assert values(root, "entry/instrument/detector/count_time") == 0.5


def test_plain_hdf5_attribute_values(tmp_path: Path) -> None:
    path = tmp_path / "attrs.h5"
    with h5py.File(path, "w") as f:
        v = f.create_dataset("v", data=np.arange(3, dtype="i4"))
        v.attrs["bool"] = np.bool_(True)
        v.attrs["vlen_list"] = ["a", "bb", "ccc"]
        v.attrs["matrix"] = np.arange(6).reshape(2, 3)
        v.attrs["empty_bytes"] = h5py.Empty("S10")
        v.attrs["fixed_utf8"] = np.array("Zürich".encode(), dtype=h5py.string_dtype("utf-8", 7))
    attrs = HDFParser()(str(path)).group.arrays["v"].info.attributes
    assert attrs == {
        "bool": True,
        "vlen_list": ["a", "bb", "ccc"],
        "matrix": [[0, 1, 2], [3, 4, 5]],
        "empty_bytes": "",
        "fixed_utf8": "Zürich",
    }


def test_compound_attribute_keeps_its_field_names(tmp_path: Path) -> None:
    # netCDF4 cannot read this attribute at all; JSON holds it faithfully as an object, and one
    # odd attribute must not make the whole file unusable.
    path = tmp_path / "compound_attr.h5"
    with h5py.File(path, "w") as f:
        f["v"] = np.arange(3)
        record = np.array((7, 2.5), dtype=[("count", "i4"), ("scale", "f8")])
        f["v"].attrs["calibration"] = record
    attrs = HDFParser()(str(path)).group.arrays["v"].info.attributes
    assert attrs["calibration"] == {"count": 7, "scale": 2.5}


def test_shuffle_after_fletcher32_on_8_byte_types_is_refused_or_loaded(tmp_path: Path) -> None:
    # netCDF-C shuffles after the checksum, so shuffle sees 4 trailing bytes: HDF5 leaves them in
    # place, numcodecs' shuffle refuses them. vcube says so up front, and can load the variable.
    path = tmp_path / "f8.nc"
    fletcher32_shuffle_zlib_8_byte(path)
    with pytest.raises(NotVirtualizableError, match=r"'f8'.*fletcher32.*loadable_variables"):
        vcube.open_virtual_dataset(path)
    vds = vcube.open_virtual_dataset(path, loadable_variables=["f8"])
    expected = xr.open_dataset(path, engine="netcdf4").load()
    xr.testing.assert_identical(read_back(vds), expected)


def test_variable_shorter_than_a_second_unlimited_dimension(tmp_path: Path) -> None:
    # grid is stored (3, 5) in HDF5 while obs has 7 entries. netCDF4 itself misreads this file
    # (it lays the 3 x 5 values out as 3 x 7 rows and shows uninitialized memory), so the
    # expected values are h5py's, padded with the fill value to the dimension lengths.
    path = tmp_path / "two_unlimited.nc"
    several_unlimited_dimensions(path)
    actual = read_back(vcube.open_virtual_dataset(path), mask_and_scale=False)
    with h5py.File(path) as f:
        stored = f["grid"][()]
        obs_value = f["obs_value"][()]
    expected = np.full((3, 7), -1, dtype="i2")
    expected[:, :5] = stored
    np.testing.assert_array_equal(actual["grid"].values, expected, strict=True)
    np.testing.assert_array_equal(actual["obs_value"].values, obs_value, strict=True)
    assert actual["grid"].dims == ("time", "obs")
