"""Building and reshaping Zarr v3 array metadata (zarr's own `ArrayV3Metadata`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zarr.abc.codec import ArrayBytesCodec
from zarr.codecs import BytesCodec
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.dtype import parse_dtype

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import numpy as np
    from zarr.abc.codec import Codec
    from zarr.core.common import JSON

__all__ = ["array_metadata", "chunk_shape", "rebuild_metadata"]


def array_metadata(
    *,
    shape: Sequence[int],
    dtype: np.dtype[Any],
    chunks: Sequence[int],
    codecs: Iterable[Codec] = (),
    fill_value: object = None,
    dimension_names: Sequence[str] | None = None,
    attributes: dict[str, JSON] | None = None,
) -> ArrayV3Metadata:
    """Zarr v3 array metadata; `codecs` without an array->bytes codec get `bytes` with the
    endianness of `dtype` prepended."""
    codec_list = list(codecs)
    if not any(_is_array_bytes(c) for c in codec_list):
        codec_list.insert(0, BytesCodec(endian=_endian(dtype)))
    zdtype = parse_dtype(dtype, zarr_format=3)
    return ArrayV3Metadata(
        shape=tuple(shape),
        data_type=zdtype,
        chunk_grid={"name": "regular", "configuration": {"chunk_shape": tuple(chunks)}},
        chunk_key_encoding={"name": "default", "configuration": {"separator": "/"}},
        fill_value=zdtype.default_scalar() if fill_value is None else fill_value,
        codecs=codec_list,
        attributes=attributes or {},
        dimension_names=tuple(dimension_names) if dimension_names is not None else None,
    )


def rebuild_metadata(
    metadata: ArrayV3Metadata,
    *,
    shape: Sequence[int] | None = None,
    chunks: Sequence[int] | None = None,
    attributes: dict[str, JSON] | None = None,
    dimension_names: Sequence[str] | None = None,
) -> ArrayV3Metadata:
    """`metadata` with some fields replaced; a new shape or chunk shape drops dimension names."""
    relayout = shape is not None or chunks is not None
    names = dimension_names if dimension_names is not None or relayout else None
    return ArrayV3Metadata(
        shape=tuple(shape) if shape is not None else metadata.shape,
        data_type=metadata.data_type,
        chunk_grid={
            "name": "regular",
            "configuration": {
                "chunk_shape": tuple(chunks) if chunks is not None else chunk_shape(metadata)
            },
        },
        chunk_key_encoding=metadata.chunk_key_encoding,
        fill_value=metadata.fill_value,
        codecs=metadata.codecs,
        attributes=attributes if attributes is not None else metadata.attributes,
        dimension_names=names if names is not None or relayout else metadata.dimension_names,
    )


def _is_array_bytes(codec: Codec) -> bool:
    return isinstance(codec, ArrayBytesCodec)


def _endian(dtype: np.dtype[Any]) -> str | None:
    if dtype.itemsize <= 1 or dtype.kind in "SUO":
        return None
    return "big" if dtype.byteorder == ">" else "little"


def chunk_shape(metadata: ArrayV3Metadata) -> tuple[int, ...]:
    """The chunk shape of a regular chunk grid."""
    return tuple(int(c) for c in metadata.chunks)
