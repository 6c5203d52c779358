"""Attributes between the values netCDF4 shows and the JSON a Zarr v3 `zarr.json` holds.

`_FillValue` follows xarray's Zarr v3 convention (floats as base64 of a little-endian double,
complex as a pair of those, bytes as base64), so xarray decodes it exactly, NaN included.
Other attributes become plain JSON: numpy scalars and length-1 arrays become Python scalars,
arrays become lists, bytes become text, complex numbers become `[real, imag]`.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["decode_attributes", "encode_attributes", "json_value", "strict_json"]

FILL_VALUE = "_FillValue"


def encode_attributes(attrs: Mapping[str, Any], dtype: np.dtype[Any] | None) -> dict[str, Any]:
    """JSON-safe attributes for `zarr.json`; `_FillValue` is encoded for `dtype`."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if key == FILL_VALUE and dtype is not None:
            out[key] = _encode_fill(value, dtype)
        else:
            out[key] = json_value(value)
    return out


def decode_attributes(attrs: Mapping[str, Any], dtype: np.dtype[Any] | None) -> dict[str, Any]:
    """Inverse of `encode_attributes` for `_FillValue`; other attributes are returned as they are."""
    out = dict(attrs)
    if FILL_VALUE in out and dtype is not None:
        out[FILL_VALUE] = _decode_fill(out[FILL_VALUE], dtype)
    return out


def json_value(value: Any) -> Any:
    """A JSON-compatible version of an attribute value (NaN and infinities stay floats)."""
    if isinstance(value, np.void) and value.dtype.names:
        return {str(k): json_value(value[k]) for k in value.dtype.names}
    if isinstance(value, np.ndarray):
        if value.dtype.names:
            return [json_value(v) for v in value.reshape(-1)]
        if value.size == 1 and value.ndim <= 1:
            return json_value(value.reshape(()).item())
        return [json_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return json_value(value.item())
    if isinstance(value, bytes):
        # netCDF4 shows undecodable bytes as U+FFFD; lone surrogates are not valid JSON text.
        return value.decode("utf-8", errors="replace")
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    return value


def strict_json(value: Any) -> Any:
    """`value` with NaN and infinities spelled as the strings Zarr v3 uses for fill values, for
    stores whose JSON parser rejects them (Icechunk); zarr-python itself reads them either way."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return [strict_json(v) for v in value]
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    return value


def _encode_fill(value: Any, dtype: np.dtype[Any]) -> Any:
    scalar = np.asarray(value).reshape(-1)[0] if np.size(value) else value
    if dtype.kind == "f":
        return _b64_double(float(scalar))
    if dtype.kind == "c":
        c = complex(scalar)
        return [_b64_double(c.real), _b64_double(c.imag)]
    if dtype.kind == "S":
        raw = scalar if isinstance(scalar, bytes) else bytes(np.asarray(scalar, dtype=dtype))
        return base64.standard_b64encode(raw).decode()
    if dtype.kind == "b":
        return bool(scalar)
    if dtype.kind in "iu":
        return int(scalar)
    return json_value(scalar)


def _decode_fill(value: Any, dtype: np.dtype[Any]) -> Any:
    if dtype.kind == "f" and isinstance(value, str):
        return dtype.type(_unb64_double(value))
    if dtype.kind == "c" and isinstance(value, list):
        return dtype.type(complex(_unb64_double(value[0]), _unb64_double(value[1])))
    if dtype.kind == "S" and isinstance(value, str):
        return base64.standard_b64decode(value)
    if dtype.kind in "iub" and not isinstance(value, str | list):
        return dtype.type(value)
    return value


def _b64_double(value: float) -> str:
    return base64.standard_b64encode(struct.pack("<d", value)).decode()


def _unb64_double(text: str) -> float:
    value: float = struct.unpack("<d", base64.standard_b64decode(text))[0]
    return value if not math.isnan(value) else math.nan
