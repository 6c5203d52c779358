"""HDF5 filter pipelines as Zarr v3 codecs.

An HDF5 pipeline lists filters in the order they are applied when writing; the Zarr v3 bytes-to-bytes
codecs that follow the `bytes` codec are listed in that same order. Filters with no codec that
decodes the stored bytes exactly raise `NotVirtualizableError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from zarr.codecs import BloscCodec, ZstdCodec
from zarr.codecs.numcodecs import BZ2, Fletcher32, Shuffle, Zlib
from zarr.registry import get_codec_class

from vcube.errors import NotVirtualizableError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from zarr.abc.codec import Codec
    from zarr.codecs.blosc import BloscCnameLiteral, BloscShuffleLiteral

__all__ = ["HDF5Filter", "hdf5_filters_to_codecs"]

# HDF5 filter ids: 1 deflate, 2 shuffle, 3 fletcher32, 307 bzip2, 32000 lzf, 32001 blosc,
# 32004 lz4, 32015 zstd (registered ids, see The HDF Group's filter registry).
_NO_CODEC = {4: "szip", 5: "nbit", 6: "scaleoffset", 32008: "bitshuffle"}
_BLOSC_CNAMES: tuple[BloscCnameLiteral, ...] = ("blosclz", "lz4", "lz4hc", "snappy", "zlib", "zstd")
_BLOSC_SHUFFLES: tuple[BloscShuffleLiteral, ...] = ("noshuffle", "shuffle", "bitshuffle")


@dataclass(frozen=True, slots=True)
class HDF5Filter:
    """One entry of an HDF5 filter pipeline: its id, client data values and name."""

    id: int
    cd_values: tuple[int, ...] = ()
    name: str = ""


def hdf5_filters_to_codecs(
    filters: Sequence[HDF5Filter], *, itemsize: int, variable: str
) -> list[Codec]:
    """The bytes-to-bytes codecs equivalent to an HDF5 filter pipeline."""
    ids = [f.id for f in filters]
    if 3 in ids and 2 in ids[ids.index(3) :] and 4 % itemsize:
        # After fletcher32 a chunk is 4 bytes longer; HDF5's shuffle leaves the bytes past the
        # last whole element in place, numcodecs' shuffle refuses them.
        raise NotVirtualizableError(
            f"variable {variable!r} is shuffled after its fletcher32 checksum with "
            f"{itemsize}-byte elements, which no Zarr codec decodes. Load it instead: "
            f"HDFParser(load_unsupported=[{variable!r}]) or loadable_variables=[{variable!r}]."
        )
    return [_codec(f, itemsize, variable) for f in filters]


def _codec(f: HDF5Filter, itemsize: int, variable: str) -> Codec:
    cd = f.cd_values
    match f.id:
        case 1:
            return Zlib(level=cd[0] if cd else 4)
        case 2:
            return Shuffle(elementsize=itemsize)
        case 3:
            return Fletcher32()
        case 307:
            return BZ2(level=cd[0] if cd else 9)
        case 32000:
            return _registered("imagecodecs_lzf", variable)(header=False)  # type: ignore[call-arg]
        case 32004:
            return _registered("imagecodecs_lz4h5", variable)()
        case 32015:
            return ZstdCodec(level=cd[0] if cd else 0)
        case 32001:
            return _blosc(cd, itemsize)
    name = _NO_CODEC.get(f.id) or f.name or f"filter id {f.id}"
    raise NotVirtualizableError(
        f"variable {variable!r} uses the HDF5 {name} filter (id {f.id}), which no Zarr codec "
        f"decodes, so it cannot be read virtually. Load it instead: HDFParser("
        f"load_unsupported=[{variable!r}]) or loadable_variables=[{variable!r}] (small "
        f"variables only), or drop it with drop_variables=[{variable!r}]."
    )


def _registered(name: str, variable: str) -> type[Codec]:
    try:
        return get_codec_class(name)
    except (KeyError, ValueError) as err:
        raise NotVirtualizableError(
            f"variable {variable!r} needs the Zarr codec {name!r}, which is not installed "
            f"(pip install imagecodecs-zarr)"
        ) from err


def _blosc(cd: tuple[int, ...], itemsize: int) -> Codec:
    # cd_values: filter revision, blosc version, typesize, chunk bytes, clevel, shuffle, compressor
    clevel = cd[4] if len(cd) > 4 else 5
    shuffle = _BLOSC_SHUFFLES[cd[5] if len(cd) > 5 and cd[5] < 3 else 1]
    cname = _BLOSC_CNAMES[cd[6] if len(cd) > 6 and cd[6] < 6 else 0]
    typesize = cd[2] if len(cd) > 2 and cd[2] else itemsize
    return BloscCodec(cname=cname, clevel=clevel, shuffle=shuffle, typesize=typesize)
