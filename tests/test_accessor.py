"""The ds.vcube accessor."""

from __future__ import annotations

from typing import TYPE_CHECKING

import h5py
import numpy as np
import xarray as xr

import vcube

if TYPE_CHECKING:
    from pathlib import Path


def scaled_file(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f["t"] = np.arange(4.0)
        f["t"].make_scale("t")
        f.create_dataset("v", data=np.arange(8.0).reshape(4, 2), chunks=(2, 2))
        f["v"].dims[0].attach_scale(f["t"])


def test_rename_paths_with_virtual_coordinates(tmp_path: Path) -> None:
    scaled_file(tmp_path / "a.h5")
    vds = vcube.open_virtual_dataset(tmp_path / "a.h5", loadable_variables=[])
    (tmp_path / "a.h5").rename(tmp_path / "b.h5")
    moved = vds.vcube.rename_paths((tmp_path / "b.h5").as_uri())
    assert isinstance(moved["t"].data, vcube.ManifestArray)
    assert moved["v"].data.manifest.paths == ((tmp_path / "b.h5").as_uri(),)
    store = vcube.ManifestStore.from_virtual_dataset(moved)
    back = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None)
    np.testing.assert_array_equal(back["v"].values, np.arange(8.0).reshape(4, 2))


def test_rename_paths_with_a_function(tmp_path: Path) -> None:
    scaled_file(tmp_path / "a.h5")
    vds = vcube.open_virtual_dataset(tmp_path / "a.h5")
    moved = vds.vcube.rename_paths(lambda url: url.replace("file://", "s3://bucket"))
    assert moved["v"].data.manifest.paths[0].startswith("s3://bucket/")
    assert vds.vcube.report is None
