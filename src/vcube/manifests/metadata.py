"""`ArrayInfo`: what a Zarr v3 array's metadata says, cheap to build and to reshape.

Parsers build one per variable per file and xarray reshapes them on every concat, so they are
plain frozen dataclasses; zarr's validated `ArrayV3Metadata` is built from one only when a store
serves the combined array.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec
from zarr.codecs import BytesCodec
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.dtype import parse_dtype

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from zarr.abc.codec import Codec
    from zarr.core.common import JSON
    from zarr.core.dtype import ZDType

__all__ = ["ArrayInfo", "array_metadata"]


@dataclass(frozen=True, slots=True)
class ArrayInfo:
    """Shape, dtype, chunk shape, codecs (the whole pipeline), fill value, dimension names and
    JSON attributes of a Zarr v3 array."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    chunks: tuple[int, ...]
    codecs: tuple[Codec, ...]
    fill_value: Any
    dimension_names: tuple[str, ...] | None = None
    attributes: dict[str, JSON] = field(default_factory=dict)

    def replace(self, **changes: Any) -> ArrayInfo:
        return dataclasses.replace(self, **changes)

    def to_zarr(self) -> ArrayV3Metadata:
        """zarr's validated metadata for this array."""
        zdtype = _zarr_dtype(self.dtype)
        return ArrayV3Metadata(
            shape=self.shape,
            data_type=zdtype,
            chunk_grid={"name": "regular", "configuration": {"chunk_shape": self.chunks}},
            chunk_key_encoding={"name": "default", "configuration": {"separator": "/"}},
            fill_value=zdtype.default_scalar() if self.fill_value is None else self.fill_value,
            codecs=self.codecs,
            attributes=self.attributes,
            dimension_names=self.dimension_names,
        )

    @classmethod
    def from_zarr(cls, metadata: ArrayV3Metadata) -> ArrayInfo:
        return cls(
            shape=tuple(int(n) for n in metadata.shape),
            dtype=metadata.data_type.to_native_dtype(),
            chunks=tuple(int(c) for c in metadata.shards or metadata.chunks),  # shards: outer grid
            codecs=tuple(metadata.codecs),
            fill_value=metadata.fill_value,
            dimension_names=(
                None
                if metadata.dimension_names is None
                else tuple(str(n) for n in metadata.dimension_names)
            ),
            attributes=dict(metadata.attributes),
        )


def array_metadata(
    *,
    shape: Sequence[int],
    dtype: np.dtype[Any],
    chunks: Sequence[int],
    codecs: Iterable[Codec] = (),
    fill_value: object = None,
    dimension_names: Sequence[str] | None = None,
    attributes: dict[str, JSON] | None = None,
) -> ArrayInfo:
    """An `ArrayInfo`; `codecs` without an array->bytes codec get the `bytes` codec with the
    endianness of `dtype`, after their array->array codecs."""
    dtype = np.dtype(dtype)
    codec_list = list(codecs)
    if not any(isinstance(c, ArrayBytesCodec) for c in codec_list):
        # after the array-to-array codecs (transpose, filters), before the compressors
        at = sum(isinstance(c, ArrayArrayCodec) for c in codec_list)
        codec_list.insert(at, _bytes_codec(_endian(dtype)))
    return ArrayInfo(
        shape=tuple(int(n) for n in shape),
        dtype=dtype,
        chunks=tuple(int(c) for c in chunks),
        codecs=tuple(codec_list),
        fill_value=_default_fill(dtype) if fill_value is None else fill_value,
        dimension_names=tuple(dimension_names) if dimension_names is not None else None,
        attributes=attributes or {},
    )


def _default_fill(dtype: np.dtype[Any]) -> Any:
    value = _zarr_dtype(dtype).default_scalar()
    return value.item() if isinstance(value, np.generic) else value


@cache
def _zarr_dtype(dtype: np.dtype[Any]) -> ZDType[Any, Any]:
    return parse_dtype(dtype, zarr_format=3)


@cache
def _bytes_codec(endian: Literal["little", "big"] | None) -> BytesCodec:
    return BytesCodec(endian=endian)


def _endian(dtype: np.dtype[Any]) -> Literal["little", "big"] | None:
    if dtype.itemsize <= 1 or dtype.kind in "SUO":
        return None
    return "big" if dtype.byteorder == ">" else "little"
