"""A battery of NetCDF4 / HDF5 files, each written by the library that owns the format.

Every case is a function `make(path) -> None`; the tests virtualize the file and compare what zarr /
xarray read through the references with what netCDF4 (or h5py) reads from the file itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import hdf5plugin
import netCDF4
import numpy as np

Maker = Callable[[Path], None]
RNG = np.random.default_rng(42)

# Cases netCDF4 reads, compared with xr.open_dataset(engine="netcdf4").
NETCDF_CASES: dict[str, Maker] = {}
# Plain HDF5 cases, compared with h5py.
HDF5_CASES: dict[str, Maker] = {}


def netcdf_case(fn: Maker) -> Maker:
    NETCDF_CASES[fn.__name__] = fn
    return fn


def hdf5_case(fn: Maker) -> Maker:
    HDF5_CASES[fn.__name__] = fn
    return fn


def _cube(shape: tuple[int, ...], dtype: str = "f4") -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


@netcdf_case
def chunked_zlib_shuffle(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("time", None)
        d.createDimension("lat", 7)
        d.createDimension("lon", 10)
        t = d.createVariable("time", "f8", ("time",))
        t.units = "hours since 2024-01-01"
        t.calendar = "standard"
        t[:] = np.arange(6)
        d.createVariable("lat", "f4", ("lat",))[:] = np.linspace(-30, 30, 7)
        d.createVariable("lon", "f4", ("lon",))[:] = np.arange(10) * 36.0
        v = d.createVariable(
            "air", "f4", ("time", "lat", "lon"), zlib=True, shuffle=True, chunksizes=(2, 4, 5)
        )
        v.units = "K"
        v.long_name = "air temperature"
        v[:] = 273 + _cube((6, 7, 10))
        v[3, 2, 2] = np.ma.masked
        d.title = "chunked, zlib + shuffle"
        d.history = "made by the vcube tests"


@netcdf_case
def contiguous_and_scalar(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 12)
        v = d.createVariable("data", "i4", ("x",), contiguous=True)
        v[:] = np.arange(12) * 3
        s = d.createVariable("scalar", "f8", ())
        s.assignValue(3.25)
        s.note = "a scalar"
        i = d.createVariable("scalar_int", "i2", ())
        i.assignValue(-7)


@netcdf_case
def missing_and_unwritten(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("y", 8)
        d.createDimension("x", 8)
        partial = d.createVariable("partial", "f4", ("y", "x"), chunksizes=(4, 4), fill_value=-1.0)
        partial[:4, :4] = _cube((4, 4))
        d.createVariable("never_written", "i2", ("y", "x"), chunksizes=(4, 4), fill_value=-99)
        d.createVariable("never_written_contiguous", "f8", ("y", "x"), contiguous=True)
        d.createVariable("default_fill", "f4", ("y", "x"), chunksizes=(8, 8))


@netcdf_case
def fill_values_nan_and_cf_packing(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 20)
        nan = d.createVariable("nan_fill", "f4", ("x",), fill_value=np.float32("nan"))
        nan[:10] = np.arange(10, dtype="f4")
        packed = d.createVariable("packed", "i2", ("x",), fill_value=np.int16(-32767), zlib=True)
        packed.set_auto_maskandscale(False)
        packed.scale_factor = np.float32(0.01)
        packed.add_offset = np.float32(100.0)
        raw = np.arange(20, dtype="i2") * 50
        raw[5] = -32767
        packed[:] = raw
        u = d.createVariable("unsigned", "u1", ("x",), fill_value=np.uint8(255))
        u[:] = np.arange(20, dtype="u1")
        u[3] = 255
        attrs = d.createVariable("attr_values", "f8", ("x",))
        attrs[:] = np.linspace(0, 1, 20)
        attrs.valid_range = np.array([0.0, 1.0])
        attrs.positive_inf = np.inf
        attrs.negative_inf = -np.inf
        attrs.not_a_number = np.nan
        attrs.flags = np.array([1, 2, 4], dtype="i1")


@netcdf_case
def big_endian(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 16)
        d.createDimension("y", 3)
        v = d.createVariable("be_f8", ">f8", ("y", "x"), endian="big", chunksizes=(1, 16))
        v[:] = _cube((3, 16), "f8")
        w = d.createVariable("be_i4", ">i4", ("x",), endian="big", zlib=True, fill_value=-5)
        w[:8] = np.arange(8)
        c = d.createVariable("be_contiguous", ">i8", ("x",), endian="big", contiguous=True)
        c[:] = np.arange(16) ** 3


@netcdf_case
def strings(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("station", 3)
        d.createDimension("nchar", 6)
        chars = d.createVariable("station_code", "S1", ("station", "nchar"))
        chars[:] = netCDF4.stringtochar(np.array(["ABC", "DEFGHI", "J"], dtype="S6"))
        names = d.createVariable("station_name", str, ("station",))
        names[:] = np.array(["Zürich", "Île de Sein", ""], dtype=object)
        d.createVariable("obs", "f4", ("station",))[:] = [1.5, 2.5, 3.5]
        label = d.createVariable("label", str, ())
        label[0] = "scalar string"


@netcdf_case
def nested_groups(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 4)
        d.createVariable("x", "i4", ("x",))[:] = np.arange(4)
        d.createVariable("top", "f4", ("x",))[:] = _cube((4,))
        g = d.createGroup("forecast")
        g.createDimension("step", 3)
        g.createVariable("step", "i4", ("step",))[:] = [0, 6, 12]
        g.createVariable("t2m", "f4", ("step", "x"), zlib=True)[:] = _cube((3, 4))
        g.source = "model A"
        h = g.createGroup("members")
        h.createDimension("member", 2)
        h.createVariable("spread", "f8", ("member", "step", "x"))[:] = _cube((2, 3, 4), "f8")


@netcdf_case
def unlimited_chunks_larger_than_shape(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("time", None)
        d.createDimension("x", 5)
        d.createDimension("empty", None)
        d.createVariable("time", "i4", ("time",), chunksizes=(16,))[:] = [0, 1, 2]
        v = d.createVariable("v", "f4", ("time", "x"), chunksizes=(16, 5), zlib=True)
        v[:] = _cube((3, 5))
        d.createVariable("zero_length", "f4", ("empty", "x"), chunksizes=(4, 5))


@netcdf_case
def fletcher32_and_levels(path: Path) -> None:
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("x", 100)
        v = d.createVariable("checked", "f8", ("x",), fletcher32=True, chunksizes=(25,))
        v[:] = _cube((100,), "f8")
        z = d.createVariable("zlib9", "i8", ("x",), zlib=True, complevel=9, chunksizes=(30,))
        z[:] = np.arange(100) ** 2
        n = d.createVariable("noshuffle", "f4", ("x",), zlib=True, shuffle=False)
        n[:] = _cube((100,))


@netcdf_case
def compact_layout(path: Path) -> None:
    with h5py.File(path, "w") as f:
        space = h5py.h5s.create_simple((6,))
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_layout(h5py.h5d.COMPACT)
        dsid = h5py.h5d.create(f.id, b"compact", h5py.h5t.NATIVE_INT32, space, dcpl=plist)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.arange(6, dtype="i4") * 7)
        f["compact"].attrs["units"] = "m"


@hdf5_case
def hdf5plugin_filters(path: Path) -> None:
    data = _cube((40, 30))
    with h5py.File(path, "w") as f:
        f.create_dataset("blosc_lz4", data=data, chunks=(10, 15), **hdf5plugin.Blosc("lz4", 5))
        f.create_dataset(
            "blosc_zstd_bitshuffle",
            data=data,
            chunks=(10, 30),
            **hdf5plugin.Blosc("zstd", 3, hdf5plugin.Blosc.BITSHUFFLE),
        )
        f.create_dataset("zstd", data=data, chunks=(20, 30), **hdf5plugin.Zstd(clevel=4))
        f.create_dataset("lz4", data=data, chunks=(40, 10), **hdf5plugin.LZ4())
        f.create_dataset("bzip2", data=data, chunks=(5, 30), **hdf5plugin.BZip2(9))
        f.create_dataset("lzf", data=data, chunks=(8, 8), compression="lzf")
        f.create_dataset("gzip_shuffle", data=data, chunks=(8, 8), compression="gzip", shuffle=True)


@hdf5_case
def plain_hdf5_phony_dims(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("square", data=np.arange(25, dtype="i2").reshape(5, 5))
        f.create_dataset("rect", data=_cube((5, 3)), chunks=(2, 3), compression="gzip")
        f.attrs["description"] = "no dimension scales at all"
        g = f.create_group("sub")
        g.create_dataset("vector", data=np.arange(3, dtype="u2"))


@hdf5_case
def plain_hdf5_dimension_scales(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f["t"] = np.arange(4.0)
        f["t"].make_scale("t")
        f.create_dataset("signal", data=_cube((4, 6)), chunks=(2, 3), fillvalue=np.float32(-1))
        f["signal"].dims[0].attach_scale(f["t"])
        f["signal"].attrs["complex_attr"] = np.complex64(1 + 2j)
        f.create_dataset("bools", data=np.array([True, False, True]))


def write(name: str, directory: Path) -> Path:
    """Write case `name` into `directory` and return its path."""
    maker = NETCDF_CASES.get(name) or HDF5_CASES[name]
    path = directory / f"{name}.nc"
    maker(path)
    return path
