"""A chunked dataset's index, the version 1 B-tree of chunks, read node by node with numpy."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from vcube.parsers.hdf5.binary import UNDEFINED, Image
from vcube.parsers.hdf5.objects import CHUNK_NODES, tree_node

__all__ = ["ChunkIndex", "read_chunk_btree"]


@dataclass(frozen=True, slots=True)
class ChunkIndex:
    """Every stored chunk: element offset of its first element per axis, filter mask, absolute
    byte offset in the file and stored size, in the B-tree's order (C order of the chunks)."""

    starts: np.ndarray[Any, np.dtype[np.int64]]
    masks: np.ndarray[Any, np.dtype[np.uint32]]
    offsets: np.ndarray[Any, np.dtype[np.uint64]]
    lengths: np.ndarray[Any, np.dtype[np.uint64]]


def read_chunk_btree(image: Image, address: int, ndim: int) -> ChunkIndex:
    """The chunks listed by the B-tree at `address` of a dataset with `ndim` axes."""
    entry = _entry_dtype(ndim, image.offset_size)
    prefix = 8 + 2 * image.offset_size
    leaves: list[np.ndarray[Any, Any]] = []
    nodes = [address] if address != UNDEFINED else []
    while nodes:
        node = nodes.pop(0)
        level, count = tree_node(image, node, CHUNK_NODES)
        raw = image.read(node + prefix, count * entry.itemsize)
        entries = np.frombuffer(raw, dtype=entry, count=count)
        if level > 0:
            nodes[:0] = entries["child"].tolist()
        else:
            leaves.append(entries)
    if not leaves:
        empty = np.zeros(0, dtype=np.uint64)
        return ChunkIndex(np.zeros((0, ndim), np.int64), np.zeros(0, np.uint32), empty, empty)
    found = np.concatenate(leaves) if len(leaves) > 1 else leaves[0]
    return ChunkIndex(
        starts=found["start"][:, :ndim].astype(np.int64),
        masks=found["mask"].astype(np.uint32),
        offsets=found["child"].astype(np.uint64) + np.uint64(image.base),
        lengths=found["size"].astype(np.uint64),
    )


@functools.lru_cache(maxsize=64)
def _entry_dtype(ndim: int, offset_size: int) -> np.dtype[Any]:
    """A key (chunk size, filter mask, element offsets, and one more for the element itself)
    followed by the child it leads to; the node's last key, alone, is never read."""
    address = "<u8" if offset_size == 8 else "<u4"
    return np.dtype(
        [
            ("size", "<u4"),
            ("mask", "<u4"),
            ("start", "<u8", (ndim + 1,)),
            ("child", address),
        ]
    )
