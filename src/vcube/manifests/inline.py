"""Loaded values as a `ManifestArray` whose one chunk is held in memory (an inline chunk).

Zarr itself encodes the values, so every dtype zarr supports (variable-length strings included)
is written exactly as a zarr reader expects it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.dtype import VariableLengthUTF8
from zarr.storage import MemoryStore

from vcube.manifests.array import ManifestArray
from vcube.manifests.array_api import grid_shape
from vcube.manifests.manifest import ChunkManifest

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from zarr.core.buffer import Buffer
    from zarr.core.common import JSON

    from vcube.manifests.metadata import ArrayInfo

__all__ = ["ChunkEncoder", "encode_chunks", "inline_array"]


def inline_array(
    values: np.ndarray[Any, Any],
    *,
    name: str | None = None,
    fill_value: object = None,
    dimension_names: Sequence[str] | None = None,
    attributes: dict[str, JSON] | None = None,
) -> ManifestArray:
    """A one-chunk `ManifestArray` holding `values` encoded with the `bytes` (or `vlen-utf8`)
    codec and no compression."""
    values = np.asarray(values)
    dtype: Any = VariableLengthUTF8() if values.dtype.kind in "OT" else values.dtype
    written: dict[str, Buffer] = {}
    store = MemoryStore(store_dict=written)
    array = zarr.create_array(
        store,
        shape=values.shape,
        chunks=tuple(max(n, 1) for n in values.shape),
        dtype=dtype,
        compressors=None,
        filters=None,
        fill_value=fill_value,
        dimension_names=dimension_names,
        attributes=attributes or {},
        zarr_format=3,
        config={"write_empty_chunks": True},
    )
    if values.size:
        array[...] = values
    document = json.loads(written["zarr.json"].to_bytes())
    metadata = ArrayV3Metadata.from_dict(document)
    grid = grid_shape(values.shape, tuple(max(n, 1) for n in values.shape))
    chunk_key = "c/" + "/".join("0" for _ in values.shape) if values.shape else "c"
    chunk = written.get(chunk_key) if values.size else None
    chunks = [chunk.to_bytes()] if chunk is not None else []
    manifest = ChunkManifest.from_inline(chunks, grid) if chunks else ChunkManifest.empty(grid)
    return ManifestArray(metadata, manifest, name=name)


class ChunkEncoder:
    """Encodes full-chunk-shaped blocks with the codecs of `info` (filters, serializer,
    compressors), as zarr writes them; one encoder serves many blocks."""

    def __init__(self, info: ArrayInfo) -> None:
        self.written: dict[str, Buffer] = {}
        metadata = info.to_zarr()
        codecs = list(metadata.codecs)
        self.array = zarr.create_array(
            MemoryStore(store_dict=self.written),
            shape=info.chunks,
            chunks=info.chunks,
            dtype=metadata.data_type,
            filters=[c for c in codecs if isinstance(c, ArrayArrayCodec)],
            serializer=next(c for c in codecs if isinstance(c, ArrayBytesCodec)),
            compressors=[c for c in codecs if isinstance(c, BytesBytesCodec)],
            fill_value=metadata.fill_value,
            zarr_format=3,
            config={"write_empty_chunks": True},
        )
        self.key = "c/" + "/".join("0" for _ in info.chunks) if info.chunks else "c"

    def __call__(self, block: np.ndarray[Any, Any]) -> bytes:
        self.array[...] = block
        return self.written[self.key].to_bytes()


def encode_chunks(info: ArrayInfo, blocks: Iterable[np.ndarray[Any, Any]]) -> list[bytes]:
    """Each full-chunk-shaped block encoded with the codecs of `info`, as zarr writes it."""
    encoder = ChunkEncoder(info)
    return [encoder(block) for block in blocks]
