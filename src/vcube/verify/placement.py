"""Where each source file's array lies in the target array, found from the file itself and never
from the references (a reference to the wrong file or bytes must show up as a difference).

Along an axis where the file is shorter than the target, the file's (CF-decoded) values of that
dimension's coordinate are looked up in the target's; an axis of the same length starts at 0;
where there is no coordinate, files follow each other along the axis in the order given. A file
whose array lacks one of the target's dimensions (files stacked along a new dimension) holds a
slab of length 1 along it, files following each other in the order given."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vcube.verify.arrays import equal

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from numpy.typing import NDArray

    from vcube.verify.arrays import Info, Region
    from vcube.verify.report import Index
    from vcube.verify.sources import Source

__all__ = ["Block", "Placement", "place"]


@dataclass(frozen=True, slots=True)
class Block:
    """Where a source file's array lies in the target array: `origin` and `shape` in the
    target's axes; `new_axis` is the target axis the file's array lacks, if any."""

    source: Source
    origin: Index
    shape: Index
    new_axis: int | None = None

    def source_region(self, region: Region) -> Region:
        """A region of the block (in the target's axes) in the file's array's axes."""
        k = self.new_axis
        return region if k is None else region[:k] + region[k + 1 :]

    def as_target(self, values: NDArray[Any]) -> NDArray[Any]:
        """Values read from the file with the target's axes."""
        return values if self.new_axis is None else np.expand_dims(values, self.new_axis)


@dataclass(frozen=True, slots=True)
class Placement:
    """The blocks of one target array, the files that cannot be placed (with the reason) and,
    when there is no block, why."""

    blocks: list[Block]
    failed: dict[str, str]
    note: str | None


def place(
    name: str, target: Info, sources: Sequence[Source], coords: Mapping[str, NDArray[Any]]
) -> Placement:
    """Place the array `name` of each of `sources` in the target array `name`. Identical blocks
    count once (a coordinate every file has)."""
    assert target.dims is not None  # a target array's dimensions are always named
    blocks: dict[tuple[Index, Index], Block] = {}
    failed: dict[str, str] = {}
    running = [0] * len(target.shape)  # file order along axes without coordinates
    having = [s for s in sources if name in s.arrays]
    for source in having:
        info = source.arrays[name]
        shape, new_axis = info.shape, None
        if len(shape) == len(target.shape) - 1:
            new_axis = _new_axis(info.dims, target.dims)
            if new_axis is None:
                continue
            shape = (*shape[:new_axis], 1, *shape[new_axis:])
        elif len(shape) != len(target.shape):
            continue
        origin: list[int] = []
        for k, (n, total) in enumerate(zip(shape, target.shape, strict=True)):
            dim = target.dims[k]
            start: int | None = 0
            if n > total:
                start = None
            elif n < total and k != new_axis and dim in coords and dim in source.coords:
                start = _locate(coords[dim], source.coords[dim])
            elif n < total:
                start, running[k] = running[k], running[k] + n
            if start is None:
                failed[source.url] = f"its {dim} values are not a run of the target's {dim}"
                break
            origin.append(start)
        else:
            key = (tuple(origin), shape)
            blocks.setdefault(key, Block(source, tuple(origin), shape, new_axis))
    note = None
    if not having:
        note = "in no source file"
    elif not blocks and not failed:
        note = "the source files' array has other dimensions"
    elif not blocks:
        note = "no source file could be placed"
    return Placement(list(blocks.values()), failed, note)


def _new_axis(dims: Sequence[str] | None, target: Sequence[str]) -> int | None:
    """The axis of `target` whose removal leaves the file's dimensions (names compared without
    their group), if any."""
    if dims is None:
        return None
    names = [posixpath.basename(d) for d in target]
    mine = [posixpath.basename(d) for d in dims]
    return next((k for k in range(len(names)) if names[:k] + names[k + 1 :] == mine), None)


def _locate(values: NDArray[Any], part: NDArray[Any]) -> int | None:
    """Where `part` occurs as a run of `values`."""
    if part.size == 0:
        return 0
    for start in np.flatnonzero(equal(values, part[:1])):
        run = values[start : start + part.size]
        if run.shape == part.shape and equal(run, part).all():
            return int(start)
    return None
