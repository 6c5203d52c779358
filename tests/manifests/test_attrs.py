"""Attribute encoding: what netCDF4 shows <-> what zarr.json holds, and what Icechunk accepts."""

from __future__ import annotations

import math

import icechunk
import numpy as np
import pytest
import zarr

from vcube.manifests.attrs import decode_attributes, encode_attributes, json_value, strict_json


@pytest.mark.parametrize(
    ("dtype", "fill"),
    [("f4", np.float32("nan")), ("f8", -np.inf), ("i2", -32767), ("u8", 2**64 - 1), ("S3", b"ab")],
)
def test_fill_value_round_trips_exactly(dtype: str, fill: object) -> None:
    encoded = encode_attributes({"_FillValue": fill}, np.dtype(dtype))
    decoded = decode_attributes(encoded, np.dtype(dtype))["_FillValue"]
    assert type(decoded) is np.dtype(dtype).type or isinstance(decoded, bytes)
    assert np.array_equal(np.asarray(decoded), np.asarray(fill), equal_nan=dtype.startswith("f"))


def test_json_value_of_netcdf_attribute_shapes() -> None:
    assert json_value(np.array([1.5], dtype="f4")) == 1.5
    assert json_value(np.array([1, 2], dtype="i1")) == [1, 2]
    assert json_value(b"caf\xe9") == "caf\ufffd"
    assert json_value(np.complex64(1 + 2j)) == [1.0, 2.0]


def test_strict_json_is_accepted_by_icechunk_and_read_back_by_zarr() -> None:
    attrs = {"nan": math.nan, "inf": [1.0, math.inf], "nested": {"ninf": -math.inf}, "ok": 1}
    strict = strict_json(attrs)
    assert strict == {
        "nan": "NaN",
        "inf": [1.0, "Infinity"],
        "nested": {"ninf": "-Infinity"},
        "ok": 1,
    }
    repo = icechunk.Repository.create(icechunk.in_memory_storage())
    session = repo.writable_session("main")
    zarr.create_group(session.store, attributes=strict, zarr_format=3)
    session.commit("strict attributes")
    group = zarr.open_group(repo.readonly_session("main").store, mode="r", zarr_format=3)
    assert dict(group.attrs) == strict
