"""Zarr v3 codec pipelines as the Zarr v2 metadata Kerchunk writes: dtype, order and filters.

A Zarr v2 reader decodes a chunk with the compressor, then the filters in reverse, views the
result as the v2 dtype and reshapes it to the chunk shape in the v2 order. A Zarr v3 pipeline
maps onto that when it is

- an optional leading `transpose` that reverses the axes: `order: "F"` (an identity transpose is
  dropped),
- array->array codecs that are numcodecs codecs: zarr's `numcodecs.*` wrappers and imagecodecs'
  `imagecodecs_*` codecs, as v2 filters in the same order,
- the array->bytes codec: `bytes` (its byte order goes into the dtype), `vlen-utf8` /
  `vlen-bytes`, or a numcodecs codec that turns the array into bytes (imagecodecs' JPEG, PNG,
  floating-point predictor, ...) as one more filter,
- bytes->bytes codecs as the last filters (the compressor stays null, as kerchunk writes it).

Sharding, other permutations and codecs with no numcodecs twin raise `UnsupportedFeatureError`.

imagecodecs' numcodecs codecs (module `imagecodecs.numcodecs`) take the configuration of their
Zarr v3 twins (module `imagecodecs.zarr`, the `imagecodecs-zarr` entry points) and decode with the
same calls; where a v3 codec takes the chunk's shape and dtype from the array, its numcodecs twin
is given them in its configuration (`squeeze` only matters when encoding). They are not numcodecs
entry points: a Zarr v2 reader must call `imagecodecs.numcodecs.register_codecs()` first.

A v2 filter decodes bytes in the stored byte order, so the dtype given to an imagecodecs codec
before `bytes` has the byte order of `bytes` (its delta and xor decode values of either order).
zarr's `numcodecs.*` wrappers keep their configuration as it is, which gives a Zarr v2 store read
by `ZarrParser` its own filters back.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Final, Literal

import numcodecs
from numpy.dtypes import StringDType
from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec
from zarr.codecs import TransposeCodec
from zarr.core.array_spec import ArrayConfig, ArraySpec
from zarr.core.buffer import default_buffer_prototype
from zarr.dtype import parse_dtype

from vcube.errors import UnsupportedFeatureError

if TYPE_CHECKING:
    import numpy as np
    from zarr.abc.codec import Codec
    from zarr.core.common import JSON

    from vcube.manifests.metadata import ArrayInfo

__all__ = ["V2Codecs", "v2_codecs"]

_BLOSC_SHUFFLE: Final = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_IMAGECODECS: Final = "imagecodecs_"
_NUMCODECS: Final = "numcodecs."
# What a numcodecs twin of an imagecodecs codec may take beyond the v3 configuration: the
# chunk's shape and dtype (which a v3 codec reads from the array) and encoding-only options.
_FROM_CHUNK: Final = frozenset({"shape", "dtype"})
_ENCODE_ONLY: Final = frozenset({"squeeze"})


@dataclass(frozen=True, slots=True)
class V2Codecs:
    """The `.zarray` fields that encode an array's chunks."""

    dtype: str
    order: Literal["C", "F"]
    filters: list[dict[str, JSON]]


def v2_codecs(name: str, info: ArrayInfo) -> V2Codecs:
    """The v2 dtype string, order and filters equivalent to the codecs of variable `name`."""
    codecs = list(info.codecs)
    if any(_name(c) == "sharding_indexed" for c in codecs):
        raise UnsupportedFeatureError(
            f"variable {name!r} is sharded (Zarr v3 sharding codec): Zarr v2 has no shards, so "
            f"Kerchunk's references cannot address its inner chunks; write it to Icechunk "
            f"instead, or drop it with ds.drop_vars([{name!r}])"
        )
    spec = ArraySpec(
        shape=info.chunks,
        # zarr has no single dtype for numpy's object dtype; strings are what vcube keeps so
        dtype=parse_dtype(StringDType() if info.dtype.kind == "O" else info.dtype, zarr_format=3),
        fill_value=info.fill_value,
        config=ArrayConfig.from_dict({}),
        prototype=default_buffer_prototype(),
    )
    order: Literal["C", "F"] = "C"
    if codecs and isinstance(codecs[0], TransposeCodec):
        order = _order(name, codecs[0])
        spec = codecs[0].resolve_metadata(spec)
        codecs = codecs[1:]
    endian = next((_config(c).get("endian") for c in codecs if _name(c) == "bytes"), None)
    filters: list[dict[str, JSON]] = []
    for codec in codecs:
        # As zarr builds its pipeline: each codec completed from the chunk it sees (a
        # FixedScaleOffset's dtype, a Shuffle's element size), then the chunk it hands on.
        evolved = codec.evolve_from_array_spec(spec)
        filters += _filters(name, evolved, spec, endian)
        spec = evolved.resolve_metadata(spec)
    return V2Codecs(_dtype(info.dtype, endian), order, [_checked(name, f) for f in filters])


def _order(name: str, transpose: TransposeCodec) -> Literal["C", "F"]:
    axes = tuple(transpose.order)
    if axes == tuple(range(len(axes))):
        return "C"
    if axes == tuple(reversed(range(len(axes)))):
        return "F"  # a Fortran-ordered chunk is the C-ordered chunk of the transposed array
    raise UnsupportedFeatureError(
        f"variable {name!r} transposes its chunks to axis order {axes}, which Zarr v2's order "
        f"('C' or 'F') cannot express, so Kerchunk cannot reference it; write it to Icechunk "
        f"instead, or drop it with ds.drop_vars([{name!r}])"
    )


def _filters(name: str, codec: Codec, spec: ArraySpec, endian: JSON) -> list[dict[str, JSON]]:
    """The v2 filters of one v3 codec (none for `bytes`) seeing chunks described by `spec`."""
    codec_name, config = _name(codec), _config(codec)
    if codec_name.startswith(_NUMCODECS):
        return [{"id": codec_name.removeprefix(_NUMCODECS), **config}]
    if codec_name.startswith(_IMAGECODECS):
        return [_imagecodecs(name, codec, config, spec, endian)]
    if isinstance(codec, TransposeCodec) and list(codec.order) == sorted(codec.order):
        return []  # an identity transpose
    if isinstance(codec, ArrayArrayCodec):
        raise _no_v2(
            name, codec_name, "after another array codec" if codec_name == "transpose" else ""
        )
    if isinstance(codec, ArrayBytesCodec):
        if codec_name == "bytes":
            return []
        if codec_name in ("vlen-utf8", "vlen-bytes"):
            return [{"id": codec_name}]
        raise _no_v2(name, codec_name)
    return [_bytes_filter(name, codec_name, config)]


def _bytes_filter(name: str, codec_name: str, config: dict[str, JSON]) -> dict[str, JSON]:
    """The numcodecs config of one of zarr's own bytes->bytes codecs."""
    match codec_name:
        case "blosc":
            shuffle = config.get("shuffle", "shuffle")
            return {
                "id": "blosc",
                "cname": config.get("cname", "lz4"),
                "clevel": config.get("clevel", 5),
                "shuffle": _BLOSC_SHUFFLE.get(str(shuffle), 1),
                "blocksize": config.get("blocksize", 0),
            }
        case "zstd":
            return {
                "id": "zstd",
                "level": config.get("level", 0),
                "checksum": config.get("checksum", False),
            }
        case "gzip":
            return {"id": "gzip", "level": config.get("level", 5)}
        case "crc32c":
            return {"id": "crc32c"}
    raise _no_v2(name, codec_name)


def _imagecodecs(
    name: str, codec: Codec, config: dict[str, JSON], spec: ArraySpec, endian: JSON
) -> dict[str, JSON]:
    """The config of the numcodecs twin of an imagecodecs Zarr v3 codec. Before `bytes` a v2
    filter decodes bytes of the stored order (`endian`); an array->bytes codec has no `bytes`."""
    codec_id = _name(codec)
    twin = _imagecodecs_twins().get(codec_id)
    if twin is None:
        raise _no_v2(name, codec_id, "imagecodecs.numcodecs has no codec of that id")
    takes = set(inspect.signature(twin.__init__).parameters) - {"self"}
    unknown = takes - set(inspect.signature(type(codec).__init__).parameters)
    unknown -= _ENCODE_ONLY | _FROM_CHUNK
    if unknown:
        # The v3 codec finds these in the chunk some way its twin does not say: no verified match.
        raise _no_v2(name, codec_id, f"its numcodecs form also needs {sorted(unknown)}")
    chunk: dict[str, JSON] = {
        "shape": list(spec.shape),
        "dtype": _dtype(spec.dtype.to_native_dtype(), endian),
    }
    given = {k: v for k, v in chunk.items() if k in takes and config.get(k) is None}
    return {"id": codec_id, **config, **given}


@cache
def _imagecodecs_twins() -> dict[str, type[numcodecs.abc.Codec]]:
    """imagecodecs' numcodecs codecs by id, found without registering them with numcodecs."""
    import imagecodecs.numcodecs

    twins: dict[str, type[numcodecs.abc.Codec]] = {}
    for cls in vars(imagecodecs.numcodecs).values():
        if isinstance(cls, type) and issubclass(cls, numcodecs.abc.Codec):
            codec_id = getattr(cls, "codec_id", None)
            if isinstance(codec_id, str) and codec_id.startswith(_IMAGECODECS):
                twins[codec_id] = cls
    return twins


def _checked(name: str, config: dict[str, JSON]) -> dict[str, JSON]:
    """`config`, once numcodecs (or imagecodecs' numcodecs module) builds a codec from it, as a
    Zarr v2 reader will."""
    codec_id = str(config["id"])
    twin = _imagecodecs_twins().get(codec_id)
    try:
        if twin is not None:
            twin.from_config({k: v for k, v in config.items() if k != "id"})
        else:
            numcodecs.get_codec(dict(config))  # it pops "id"
    except (TypeError, ValueError) as err:
        raise UnsupportedFeatureError(
            f"variable {name!r}: numcodecs cannot build the Zarr v2 filter {config!r} "
            f"({err}), so Kerchunk cannot reference it; install the package providing "
            f"{codec_id!r}, or write the variable to Icechunk instead"
        ) from err
    return config


def _dtype(dtype: np.dtype[Any], endian: JSON) -> str:
    """The v2 dtype string: `dtype` in the byte order of the `bytes` codec."""
    if dtype.kind in "OT":
        return "|O"
    if endian in ("little", "big") and dtype.itemsize > 1:
        return dtype.newbyteorder("<" if endian == "little" else ">").str
    return dtype.str


def _name(codec: Codec) -> str:
    return str(codec.to_dict()["name"])


def _config(codec: Codec) -> dict[str, JSON]:
    config = codec.to_dict().get("configuration")
    return dict(config) if isinstance(config, dict) else {}


def _no_v2(name: str, codec_name: str, why: str = "") -> UnsupportedFeatureError:
    because = f" ({why})" if why else ""
    return UnsupportedFeatureError(
        f"variable {name!r} uses the Zarr v3 codec {codec_name!r}{because}, which Kerchunk's "
        f"Zarr v2 metadata cannot express; write it to Icechunk instead, or drop it with "
        f"ds.drop_vars([{name!r}])"
    )
