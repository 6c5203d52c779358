"""Bad input to the HDF5 parser: each case raises a vcube error naming the file and the problem."""

from __future__ import annotations

from typing import TYPE_CHECKING

import h5py
import numpy as np
import pytest
import xarray as xr
import zarr

import vcube
from vcube import HDFParser
from vcube.errors import (
    NotVirtualizableError,
    SourceNotFoundError,
    StoreNotFoundError,
    UnsupportedFeatureError,
    UnsupportedFormatError,
    VcubeError,
)

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(10_000.0), chunks=(1000,), compression="gzip")
    return path


def test_missing_file_names_the_url(tmp_path: Path) -> None:
    missing = tmp_path / "missing.nc"
    with pytest.raises(SourceNotFoundError, match=r"missing\.nc"):
        vcube.open_virtual_dataset(missing)
    with pytest.raises(SourceNotFoundError, match=r"missing\.nc"):
        HDFParser()(str(missing))


def test_not_hdf5_given_to_hdf_parser(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some text, not HDF5\n" * 10)
    with pytest.raises(UnsupportedFormatError, match=r"notes\.txt.*not a readable HDF5"):
        HDFParser()(str(path))


def test_unknown_format_lists_formats_tried(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(UnsupportedFormatError, match=r"data\.bin.*formats tried: HDF5"):
        vcube.open_virtual_dataset(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.nc"
    path.write_bytes(b"")
    with pytest.raises(UnsupportedFormatError, match=r"empty\.nc"):
        vcube.open_virtual_dataset(path)


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.9])
def test_truncated_file(good_file: Path, keep: float) -> None:
    data = good_file.read_bytes()
    good_file.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(VcubeError, match=r"good\.h5"):
        HDFParser()(str(good_file))


def test_url_with_no_store_names_it() -> None:
    with pytest.raises(StoreNotFoundError, match=r"s3://nobody/file\.nc"):
        vcube.open_virtual_dataset("s3://nobody/file.nc")


def test_compound_and_reference_types_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "compound.h5"
    with h5py.File(path, "w") as f:
        f["table"] = np.zeros(3, dtype=[("a", "i4"), ("b", "f8")])
    with pytest.raises(UnsupportedFeatureError, match=r"'table'.*compound"):
        HDFParser()(str(path))
    assert HDFParser(drop_variables=["table"])(str(path)).group.arrays == {}

    path = tmp_path / "refs.h5"
    with h5py.File(path, "w") as f:
        f["target"] = np.arange(3)
        f.create_dataset("pointers", data=[f["target"].ref], dtype=h5py.ref_dtype)
    with pytest.raises(UnsupportedFeatureError, match=r"'pointers'.*references"):
        HDFParser()(str(path))


def scaleoffset_file(tmp_path: Path) -> Path:
    path = tmp_path / "scaleoffset.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("packed", data=np.arange(100, dtype="i4"), chunks=(10,), scaleoffset=0)
        f.create_dataset("plain", data=np.arange(5.0))
    return path


def test_filter_without_codec_names_variable_and_remedy(tmp_path: Path) -> None:
    path = scaleoffset_file(tmp_path)
    with pytest.raises(NotVirtualizableError, match=r"'packed'.*scaleoffset.*load_unsupported"):
        HDFParser()(str(path))


def test_filter_without_codec_can_be_loaded(tmp_path: Path) -> None:
    path = scaleoffset_file(tmp_path)
    store = HDFParser(load_unsupported=["packed"])(str(path))
    assert store.group.arrays["packed"].manifest.is_inline
    np.testing.assert_array_equal(zarr.open_array(store, path="packed")[...], np.arange(100))
    vds = vcube.open_virtual_dataset(path, loadable_variables=["packed"])
    np.testing.assert_array_equal(vds["packed"].values, np.arange(100))


def test_filter_without_codec_too_large_to_load(tmp_path: Path) -> None:
    path = scaleoffset_file(tmp_path)
    with pytest.raises(NotVirtualizableError, match=r"'packed'.*max_load_bytes"):
        HDFParser(load_unsupported=True, max_load_bytes=100)(str(path))


def test_virtual_values_are_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=np.arange(12.0).reshape(3, 4), chunks=(1, 4))
    vds = vcube.open_virtual_dataset(path, loadable_variables=[])
    with pytest.raises(vcube.VcubeError, match=r"'v'.*virtual.*loadable_variables"):
        _ = vds["v"].values
    with pytest.raises(vcube.VcubeError, match=r"'v'.*virtual"):
        _ = vds["v"] + 1
    with pytest.raises(vcube.VcubeError, match="not aligned to chunk boundaries"):
        vds["v"].isel(phony_dim_1=slice(0, 2))
    assert vds.isel(phony_dim_0=slice(1, 3))["v"].shape == (2, 4)


def test_group_option(tmp_path: Path) -> None:
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        f.create_group("a/b")["z"] = np.arange(3)
    vds = vcube.open_virtual_dataset(path, parser=HDFParser(group="a/b"))
    assert list(vds.variables) == ["z"]
    with pytest.raises(VcubeError, match=r"no group 'nope'.*\['a'\]"):
        HDFParser(group="nope")(str(path))


def test_drop_variables(good_file: Path) -> None:
    assert "x" not in vcube.open_virtual_dataset(good_file, drop_variables=["x"]).variables
    assert isinstance(vcube.open_virtual_dataset(good_file)["x"].data, vcube.ManifestArray)


def test_nbytes_counts_references_not_data(good_file: Path) -> None:
    vds = vcube.open_virtual_dataset(good_file, loadable_variables=[])
    # 10 chunk references of 20 bytes plus one path: far below the 80,000 bytes of data.
    assert 200 <= vds.vcube.nbytes < 200 + len(good_file.as_uri()) + 1
    assert vds.vcube.nrefs == 10
    assert xr.Dataset.vcube is not None


def test_drop_and_load_reach_the_parser(tmp_path: Path) -> None:
    path = tmp_path / "mixed.h5"
    with h5py.File(path, "w") as f:
        f["table"] = np.zeros(3, dtype=[("a", "i4"), ("b", "f8")])
        f.create_dataset("packed", data=np.arange(20, dtype="i4"), chunks=(5,), scaleoffset=0)
        f["ok"] = np.arange(3.0)
    # The remedies the errors suggest work through open_virtual_dataset, with or without a parser.
    for parser in (None, HDFParser()):
        vds = vcube.open_virtual_dataset(
            path, parser=parser, drop_variables=["table"], loadable_variables=["packed"]
        )
        assert set(vds.variables) == {"packed", "ok"}
        np.testing.assert_array_equal(vds["packed"].values, np.arange(20))


def test_external_links_keep_each_files_dimension_names(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "ext.h5", "w") as f:
        f["y"] = np.arange(4.0)
        f["y"].make_scale("y")
        f["w"] = np.arange(8.0).reshape(4, 2)
        f["w"].dims[0].attach_scale(f["y"])
    with h5py.File(tmp_path / "main.h5", "w") as f:
        f["x"] = np.arange(3.0)
        f["x"].make_scale("x")
        f["v"] = np.arange(3.0)
        f["v"].dims[0].attach_scale(f["x"])
        f["w"] = h5py.ExternalLink("ext.h5", "/w")
    vds = vcube.open_virtual_dataset(tmp_path / "main.h5", loadable_variables=[])
    assert vds["w"].dims[0] == "y"
    assert vds["v"].dims == ("x",)
