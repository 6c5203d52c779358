"""HDF5 filter pipelines and Zarr v2 (numcodecs) filters and compressors as Zarr v3 codecs.

An HDF5 pipeline lists filters in the order they are applied when writing; the Zarr v3 bytes-to-bytes
codecs that follow the `bytes` codec are listed in that same order. Filters with no codec that
decodes the stored bytes exactly raise `NotVirtualizableError`.

A Zarr v2 array lists numcodecs configurations (`{"id": ..., **options}`), filters then the
compressor, in the order they encode: array->array codecs (numcodecs ones as zarr's `numcodecs.*`
codecs, imagecodecs' under their own ids), then one array->bytes codec, then bytes->bytes codecs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, VLenUTF8Codec, ZstdCodec
from zarr.codecs.numcodecs import BZ2, Fletcher32, Shuffle, Zlib
from zarr.registry import get_codec_class

from vcube.errors import (
    NotVirtualizableError,
    UnsupportedFeatureError,
    UnsupportedFormatError,
    VcubeError,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from zarr.abc.codec import Codec
    from zarr.codecs.blosc import BloscCnameLiteral, BloscShuffleLiteral

__all__ = ["HDF5Filter", "hdf5_filters_to_codecs", "numcodecs_to_codecs"]

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


# -- Zarr v2: numcodecs configurations -----------------------------------------------------------


def numcodecs_to_codecs(
    configs: Sequence[Any], *, itemsize: int, serializer: Codec, where: str
) -> list[Codec]:
    """The Zarr v3 pipeline of Zarr v2 filters and compressor (`configs`, in the order they
    encode): array->array codecs, then `serializer` unless a configuration names an array->bytes
    codec (`vlen-utf8`), then bytes->bytes codecs; `where` names the array in errors."""
    before: list[Codec] = []
    after: list[Codec] = []
    chosen: Codec | None = None
    for config in configs:
        codec = _numcodec(config, itemsize, where)
        if isinstance(codec, ArrayArrayCodec | ArrayBytesCodec) and (after or chosen):
            raise UnsupportedFeatureError(
                f"{where}: the Zarr v2 filter {config['id']!r} follows a filter that produces "
                f"bytes, which Zarr v3 codecs cannot express; drop the array with drop_variables"
            )
        if isinstance(codec, ArrayArrayCodec):
            before.append(codec)
        elif isinstance(codec, ArrayBytesCodec):
            chosen = codec
        else:
            after.append(codec)
    return [*before, chosen or serializer, *after]


def _numcodec(config: Any, itemsize: int, where: str) -> Codec:
    """The Zarr v3 codec decoding what one numcodecs configuration encoded."""
    if not isinstance(config, dict) or not isinstance(config.get("id"), str):
        raise UnsupportedFormatError(f"{where}: malformed codec configuration {config!r}")
    codec_id: str = config["id"]
    options = {k: v for k, v in config.items() if k != "id"}
    try:
        match codec_id:
            case "vlen-utf8":
                return VLenUTF8Codec()
            case "zstd":
                level, checksum = options.get("level", 0), bool(options.get("checksum", False))
                return ZstdCodec(level=level, checksum=checksum)
            case "gzip":
                return GzipCodec(level=options.get("level", 1))
            case "crc32c" if options.get("location", "end") == "end":
                return Crc32cCodec()
            case "blosc":
                shuffle = int(options.get("shuffle", 1))
                if shuffle < 0:  # numcodecs' AUTOSHUFFLE: bit-shuffle for 1-byte items
                    shuffle = 2 if itemsize == 1 else 1
                return BloscCodec(
                    cname=options.get("cname", "lz4"),
                    clevel=options.get("clevel", 5),
                    shuffle=_BLOSC_SHUFFLES[shuffle],
                    typesize=max(itemsize, 1),
                    blocksize=options.get("blocksize", 0),
                )
        return _numcodec_class(codec_id, where)(**options)
    except (TypeError, ValueError, IndexError) as err:
        if isinstance(err, VcubeError):
            raise
        raise UnsupportedFormatError(
            f"{where}: invalid codec configuration {config!r} ({err})"
        ) from err


def _numcodec_class(codec_id: str, where: str) -> type[Codec]:
    """The Zarr v3 codec wrapping numcodecs' `codec_id` (imagecodecs' ids are their own)."""
    name = codec_id if codec_id.startswith("imagecodecs_") else f"numcodecs.{codec_id}"
    try:
        return get_codec_class(name)
    except (KeyError, ValueError) as err:  # zarr's UnknownCodecError is a ValueError
        raise UnsupportedFeatureError(
            f"{where}: codec {codec_id!r} has no Zarr v3 codec here: no installed Zarr v3 codec "
            f"decodes it; install the package that provides one, or drop the array with "
            f"drop_variables"
        ) from err
