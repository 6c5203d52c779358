"""The native HDF5 reader against the h5py walker: on every file of the HDF5 batteries, either
both make the same variables (metadata, attributes, fill values, codecs, chunk references and
inline bytes), or the native reader hands the file to h5py for a known reason."""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING, Any

import h5py
import netCDF4
import numpy as np
import pytest
import test_hdf5_edge_cases as edge
import xarray as xr
from hdf5_files import HDF5_CASES, NETCDF_CASES

import vcube
from vcube import HDFParser
from vcube.manifests import ManifestArray, ManifestGroup
from vcube.parsers.hdf5 import parser as parser_module
from vcube.parsers.hdf5.binary import NativeUnsupported, _hdf5_lookup3, local_image, lookup3
from vcube.parsers.hdf5.native import native_group
from vcube.parsers.hdf5.parser import _open_hdf5
from vcube.parsers.hdf5.walker import Walker
from vcube.registry import local_path, normalize_url

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

MAKERS: dict[str, Callable[[Path], None]] = {
    **{f"battery-{k}": v for k, v in {**NETCDF_CASES, **HDF5_CASES}.items()},
    **{f"edge-{k}": v for k, v in {**edge.NETCDF, **edge.HDF5}.items()},
}
# Files the native reader leaves to h5py, and why (a part of its NativeUnsupported message).
HANDED_TO_H5PY = {
    "battery-hdf5plugin_filters": "filters skipped",
    "battery-plain_hdf5_dimension_scales": "datatype class 8",  # h5py's bool is an enum
    "battery-strings": "vlen-str",
    "edge-char_and_string_scalars": "vlen-str",
    "edge-enum_type": "datatype class 8",
    "edge-hard_and_soft_links": "two names",
    "edge-vlen_strings_in_nested_group": "vlen-str",
}


def h5py_walk(parser: HDFParser, url: str) -> ManifestGroup:
    with _open_hdf5(url, local_path(url), None) as file:
        return Walker(parser, url, file).group(parser._root(file, url).id)


def native_walk(parser: HDFParser, url: str) -> ManifestGroup:
    path = local_path(url)
    assert path is not None
    with local_image(path) as image:
        return native_group(parser, url, image, parser.group)


def describe(node: ManifestGroup | ManifestArray) -> str:
    """Everything a node says, as comparable text (NaN fill values compare equal this way)."""
    if isinstance(node, ManifestGroup):
        return json.dumps(node.attributes, allow_nan=True, sort_keys=True)
    return json.dumps(node.metadata.to_dict(), allow_nan=True, sort_keys=True, default=str)


def assert_same_tree(native: ManifestGroup, reference: ManifestGroup) -> None:
    nodes, expected = dict(native.walk()), dict(reference.walk())
    assert list(nodes) == list(expected)  # same variables, groups and order
    for path, node in nodes.items():
        assert describe(node) == describe(expected[path]), path
        if isinstance(node, ManifestArray):
            other = expected[path]
            assert isinstance(other, ManifestArray)
            assert node.manifest.equals(other.manifest), path


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", sorted(MAKERS))
def test_native_reader_makes_what_h5py_makes(case: str, tmp_path: Path) -> None:
    path = tmp_path / f"{case}.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MAKERS[case](path)
    parser, url = HDFParser(), normalize_url(path)
    if case in HANDED_TO_H5PY:
        with pytest.raises(NativeUnsupported, match=HANDED_TO_H5PY[case]):
            native_walk(parser, url)
        return
    assert_same_tree(native_walk(parser, url), h5py_walk(parser, url))


@pytest.mark.parametrize("group", ["forecast", "forecast/member"])
def test_groups_and_dropped_variables(group: str, tmp_path: Path) -> None:
    path = tmp_path / "groups.nc"
    with netCDF4.Dataset(path, "w") as nc:
        sub = nc.createGroup("forecast").createGroup("member")
        for where in (nc, nc["forecast"], sub):
            where.createDimension("x", 4)
            where.createVariable("x", "f8", ("x",))[:] = np.arange(4.0)
            where.createVariable("keep", "i2", ("x",))[:] = [1, 2, 3, 4]
            where.createVariable("drop", "i2", ("x",))[:] = [5, 6, 7, 8]
    parser, url = HDFParser(group=group, drop_variables=["drop"]), normalize_url(path)
    native = native_walk(parser, url)
    assert "drop" not in native.arrays
    assert_same_tree(native, h5py_walk(parser, url))


def test_group_using_the_dimensions_of_the_groups_above(tmp_path: Path) -> None:
    path = tmp_path / "inherited.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createVariable("time", "f8", ("time",))[:] = np.arange(5.0)
        sub = nc.createGroup("forecast")
        sub.createDimension("x", 3)
        sub.createVariable("x", "i4", ("x",))[:] = [1, 2, 3]
        sub.createGroup("member").createVariable("t2m", "f4", ("time", "x"))[:] = np.ones((5, 3))
    parser, url = HDFParser(group="forecast/member"), normalize_url(path)
    native = native_walk(parser, url)
    assert native.arrays["t2m"].info.dimension_names == ("time", "x")
    assert native.arrays["t2m"].shape == (5, 3)
    assert_same_tree(native, h5py_walk(parser, url))


def test_dense_links_and_attributes_in_creation_order(tmp_path: Path) -> None:
    """More than 8 variables and attributes: netCDF-C stores them in fractal heaps."""
    path = tmp_path / "dense.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("t", None)
        for i in range(30):
            var = nc.createVariable(f"v{29 - i:02d}", "f4", ("t",), zlib=i % 2 == 0)
            var.setncatts({f"attr{k:02d}": k * 1.5 for k in range(12)})
            var[:] = np.arange(5, dtype="f4") + i
    parser, url = HDFParser(), normalize_url(path)
    native = native_walk(parser, url)
    assert list(native.arrays) == [f"v{29 - i:02d}" for i in range(30)]  # creation order
    assert list(native.arrays["v00"].info.attributes) == [f"attr{k:02d}" for k in range(12)]
    assert_same_tree(native, h5py_walk(parser, url))


def test_four_byte_offsets_and_lengths(tmp_path: Path) -> None:
    path = tmp_path / "small.h5"
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_sizes(4, 4)
    with h5py.File(h5py.h5f.create(bytes(path), h5py.h5f.ACC_TRUNC, fcpl=fcpl)) as f:
        f["x"] = np.arange(4.0)
        f["x"].make_scale("x")
        f.create_dataset("v", data=np.arange(8.0).reshape(4, 2), chunks=(2, 2), compression="gzip")
        f["v"].dims[0].attach_scale(f["x"])
        f["v"].attrs["units"] = "m"  # a variable-length string: the global heap
        f["v"].attrs["names"] = ["a", "bb", "ccc"]
    parser, url = HDFParser(), normalize_url(path)
    native = native_walk(parser, url)
    assert native.arrays["v"].info.attributes["names"] == ["a", "bb", "ccc"]
    assert_same_tree(native, h5py_walk(parser, url))


def test_lookup3_matches_hdf5s_own() -> None:
    assert lookup3(b"") == 0xDEADBEEF  # Bob Jenkins' test vectors
    assert lookup3(b"Four score and seven years ago") == 0x17770551
    hdf5 = _hdf5_lookup3()
    assert hdf5 is not None  # h5py's wheel ships libhdf5 with the symbol
    rng = np.random.default_rng(0)
    for size in (1, 11, 12, 13, 24, 25, 400, 4099):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert hdf5(data) == lookup3(data)


def test_damaged_metadata_is_caught_by_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "v2.h5"
    with h5py.File(path, "w", libver=("v108", "v108")) as f:
        f.create_dataset("x", data=np.arange(10.0), chunks=(5,))
        f["x"].attrs["units"] = np.bytes_(b"metres_per_second")  # in the object header
    data = path.read_bytes()
    at = data.index(b"metres_per_second")
    path.write_bytes(data[:at] + b"M" + data[at + 1 :])
    with pytest.raises(NativeUnsupported, match="checksum"):
        native_walk(HDFParser(), normalize_url(path))
    with pytest.raises(Exception, match=r"v2\.h5"):  # h5py names the damage
        HDFParser()(str(path))


def test_unallocated_contiguous_dataset_after_a_user_block(tmp_path: Path) -> None:
    path = tmp_path / "userblock.h5"
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("never_written", shape=(4,), dtype="f4")
        f["written"] = np.arange(3, dtype="i2")
    parser, url = HDFParser(), normalize_url(path)
    native = native_walk(parser, url)
    assert native.arrays["never_written"].manifest.path_ids.tolist() == [-1]  # missing
    assert_same_tree(native, h5py_walk(parser, url))


def string_type(size: int, padding: int) -> h5py.h5t.TypeID:
    kind = h5py.h5t.C_S1.copy()
    kind.set_size(size)
    kind.set_strpad(padding)
    return kind


@pytest.mark.parametrize(
    ("padding", "value", "read"),
    [
        (h5py.h5t.STR_SPACEPAD, b"abc   ", b"abc"),
        (h5py.h5t.STR_NULLTERM, b"ab\0cd", b"ab"),
        (h5py.h5t.STR_NULLPAD, b"ab\0cd", b"ab\0cd"),
    ],
    ids=["spacepad", "nullterm", "nullpad"],
)
def test_fixed_length_strings_as_h5py_converts_them(
    padding: int, value: bytes, read: bytes, tmp_path: Path
) -> None:
    """Attributes, compact datasets and fill values of every padding (Fortran writes spaces)."""
    path = tmp_path / "strings.h5"
    kind, size = string_type(len(value), padding), f"S{len(value)}"
    with h5py.File(path, "w") as f:
        attr = h5py.h5a.create(f.id, b"title", kind, h5py.h5s.create(h5py.h5s.SCALAR))
        attr.write(np.array(value, dtype=size), mtype=kind)
        if padding != h5py.h5t.STR_SPACEPAD:  # (space-padded variables are loaded: below)
            compact = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            compact.set_layout(h5py.h5d.COMPACT)
            compact.set_fill_value(np.array([value], dtype=size))
            space = h5py.h5s.create_simple((2,))
            data = h5py.h5d.create(f.id, b"s", kind, space, dcpl=compact)
            strings = np.array([value, value], dtype=size)
            data.write(h5py.h5s.ALL, h5py.h5s.ALL, strings, mtype=kind)
    with h5py.File(path) as f:
        assert f.attrs["title"] == read  # what h5py makes of it
    parser, url = HDFParser(), normalize_url(path)
    native = native_walk(parser, url)
    assert native.attributes["title"] == read.decode("utf-8", "replace")
    assert_same_tree(native, h5py_walk(parser, url))


@pytest.mark.parametrize("layout", ["contiguous", "chunked", "compact"])
def test_space_padded_string_variables_read_as_h5py_reads_them(layout: str, tmp_path: Path) -> None:
    path = tmp_path / "fortran.h5"
    kind = string_type(6, h5py.h5t.STR_SPACEPAD)
    values = np.array([b"abc   ", b"de    ", b"fghij "], dtype="S6")
    with h5py.File(path, "w") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        if layout == "chunked":
            dcpl.set_chunk((2,))
        elif layout == "compact":
            dcpl.set_layout(h5py.h5d.COMPACT)
        data = h5py.h5d.create(f.id, b"names", kind, h5py.h5s.create_simple((3,)), dcpl=dcpl)
        data.write(h5py.h5s.ALL, h5py.h5s.ALL, values, mtype=kind)
    with h5py.File(path) as f:
        expected = f["names"][()]
    assert expected.tolist() == [b"abc", b"de", b"fghij"]
    with pytest.raises(NativeUnsupported, match="padding"):
        native_walk(HDFParser(), normalize_url(path))
    vds = vcube.open_virtual_dataset(str(path))
    store = vcube.ManifestStore.from_virtual_dataset(vds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: fixed-length bytes have no Zarr v3 spec yet
        back = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None).load()
    assert back["names"].values.tolist() == expected.tolist()


def test_empty_attributes_of_every_kind(tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        f.attrs["text"] = h5py.Empty(h5py.string_dtype())
        f.attrs["fixed"] = h5py.Empty("S5")
        f.attrs["number"] = h5py.Empty("f4")
    parser, url = HDFParser(), normalize_url(path)
    assert_same_tree(native_walk(parser, url), h5py_walk(parser, url))


def test_what_only_h5py_reads_is_left_to_it(tmp_path: Path) -> None:
    """A float that is not IEEE 754, a committed (shared) attribute type: h5py reads them."""
    odd = tmp_path / "odd_float.h5"
    with h5py.File(odd, "w") as f:
        f["x"] = np.arange(3)
        kind = h5py.h5t.IEEE_F64LE.copy()
        kind.set_ebias(1000)
        attr = h5py.h5a.create(f["x"].id, b"w", kind, h5py.h5s.create(h5py.h5s.SCALAR))
        attr.write(np.array(2.0, "f8"))
    shared = tmp_path / "committed.h5"
    with h5py.File(shared, "w") as f:
        f["T"] = np.dtype("<f4")
        f["y"] = np.arange(3)
        f["y"].attrs.create("a", data=np.arange(2, dtype="f4"), dtype=f["T"])
    with pytest.raises(NativeUnsupported, match="IEEE"):
        native_walk(HDFParser(), normalize_url(odd))
    with pytest.raises(NativeUnsupported, match="shared"):
        native_walk(HDFParser(), normalize_url(shared))


def test_parser_uses_the_native_reader_and_falls_back(tmp_path: Path, monkeypatch: Any) -> None:
    netcdf = tmp_path / "plain.nc"
    with netCDF4.Dataset(netcdf, "w") as nc:
        nc.createDimension("x", 3)
        nc.createVariable("x", "i4", ("x",))[:] = [1, 2, 3]
    strings = tmp_path / "strings.h5"
    with h5py.File(strings, "w") as f:
        f["names"] = np.array(["a", "bb"], dtype=h5py.string_dtype())

    calls: list[str] = []

    class CountingWalker(Walker):
        def __init__(self, parser: HDFParser, url: str, file: h5py.File, image: Any) -> None:
            calls.append(url)
            super().__init__(parser, url, file, image)

    monkeypatch.setattr(parser_module, "Walker", CountingWalker)
    assert HDFParser()(str(netcdf)).group.arrays["x"].shape == (3,)
    assert calls == []
    assert HDFParser()(str(strings)).group.arrays["names"].shape == (2,)
    assert calls == [normalize_url(strings)]


def test_the_h5py_walk_takes_its_chunks_from_vcubes_index_reader(tmp_path: Path) -> None:
    """A file only h5py walks (a variable-length string variable) holding an extensible array
    whose unlimited axis is not the first, whose chunks HDF5 2.0's chunk_iter misplaces."""
    path = tmp_path / "mixed.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f["names"] = np.array(["a", "bb"], dtype=h5py.string_dtype())
        wide = f.create_dataset("wide", (5, 100), maxshape=(8, None), chunks=(2, 3), dtype="f4")
        wide[...] = np.arange(500, dtype="f4").reshape(5, 100)
        expected = wide[...]
    with pytest.raises(NativeUnsupported):
        native_walk(HDFParser(), normalize_url(path))
    vds = vcube.open_virtual_dataset(str(path), loadable_variables=[])
    store = vcube.ManifestStore.from_virtual_dataset(vds)
    back = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None).load()
    np.testing.assert_array_equal(back["wide"].values, expected)


def test_corrupt_metadata_is_left_to_h5py(tmp_path: Path) -> None:
    """A damaged object header: the native reader gives up and h5py's error names the file."""
    path = tmp_path / "damaged.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(100.0), chunks=(10,))
        address = h5py.h5o.get_info(f["x"].id).addr
    data = bytearray(path.read_bytes())
    data[address : address + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(NativeUnsupported):
        native_walk(HDFParser(), normalize_url(path))
    with pytest.raises(Exception, match=r"damaged\.h5"):
        HDFParser()(str(path))
