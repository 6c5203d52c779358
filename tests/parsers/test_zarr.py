"""The Zarr parser over stores written by zarr-python 3 (Zarr v2 and v3, consolidated or not):
values read back through the references with plain xarray / zarr, through Kerchunk and Icechunk,
equal what zarr and xarray read from the store itself."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr
from conformance import (
    RAW,
    assert_conformant,
    assert_conformant_s3,
    assert_same,
    read_icechunk,
    read_store,
)
from docs_examples import run_docs
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ShardingCodec, ZstdCodec
from zarr.dtype import VariableLengthBytes

import vcube
from vcube import ManifestStore
from vcube.errors import SourceNotFoundError, UnsupportedFeatureError, UnsupportedFormatError
from vcube.parsers import detect_parser
from vcube.parsers.zarr import ZarrParser
from vcube.registry import ObjectStoreRegistry, normalize_url

if TYPE_CHECKING:
    from pathlib import Path

    from s3_server import S3Server

# zarr warns that consolidated metadata is not (yet) part of the Zarr v3 specification.
consolidated_v3_warning = pytest.mark.filterwarnings(
    "ignore:Consolidated metadata is currently not part:UserWarning"
)
V3_COMPRESSORS: dict[str, Any] = {
    "none": None,
    "zstd": ZstdCodec(level=3),
    "blosc": BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
    "gzip": GzipCodec(level=6),
}
V2_COMPRESSORS: dict[str, Any] = {
    "none": None,
    "zstd": numcodecs.Zstd(level=3),
    "blosc": numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE),
    "gzip": numcodecs.GZip(level=6),
    "zlib": numcodecs.Zlib(level=1),
}
DTYPES = ["i1", "u2", "<i4", ">i4", "<f4", ">f8", "u8", "bool", "c8"]


def store_path(tmp_path: Path, name: str = "x.zarr") -> Path:
    """Where a test writes its store: a directory the Icechunk container (its parent) covers."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return data / name


def values(dtype: str, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    n = int(np.prod(shape))
    if dtype == "bool":
        return (np.arange(n) % 3 == 0).reshape(shape)
    out = (np.arange(n) * 7 % 251 - (50 if np.dtype(dtype).kind in "ifc" else 0)).astype(dtype)
    return out.reshape(shape)


def write(
    path: Path,
    *,
    zarr_format: int,
    compressor: str = "zstd",
    consolidated: bool = False,
    missing: bool = False,
) -> None:
    """A group of arrays of many dtypes with partial edge chunks (shape 7 x 5, chunks 3 x 2);
    with `missing`, only the first rows are written, so later chunks are never stored."""
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format, attributes={"title": "t"})
    compressors = (V3_COMPRESSORS if zarr_format == 3 else V2_COMPRESSORS)[compressor]
    for dtype in DTYPES:
        data = values(dtype, (7, 5))
        array = _create(
            group,
            f"v_{dtype.replace('<', 'le').replace('>', 'be')}",
            zarr_format=zarr_format,
            shape=data.shape,
            chunks=(3, 2),
            dtype=dtype,
            compressors=compressors,
            dims=["y", "x"],
            attributes={"units": "m", "scale": 0.5},
        )
        if missing:
            array[:4] = data[:4]
        else:
            array[...] = data
    y = _create(
        group, "y", zarr_format=zarr_format, shape=(7,), chunks=(4,), dtype="f8", dims=["y"]
    )
    y[...] = np.linspace(0.0, 1.0, 7)
    if consolidated:
        zarr.consolidate_metadata(path)


def _create(
    group: zarr.Group, name: str, *, zarr_format: int, dims: list[str], **kwargs: Any
) -> zarr.Array[Any]:
    # Every chunk written, even one that equals the fill value: missing chunks only where a
    # test leaves them out.
    kwargs.setdefault("config", {"write_empty_chunks": True})
    if zarr_format == 3:
        return group.create_array(name, dimension_names=dims, **kwargs)
    attributes = {**kwargs.pop("attributes", {}), "_ARRAY_DIMENSIONS": dims}
    return group.create_array(name, attributes=attributes, **kwargs)


def expected(path: Path, *, consolidated: bool = False, **kwargs: Any) -> xr.Dataset:
    """What xarray (over zarr-python) reads from the store itself, not decoded."""
    with xr.open_zarr(path, chunks=None, consolidated=consolidated, **RAW, **kwargs) as ds:
        return ds.load()


# -- conformance: ManifestStore, detection, Kerchunk, Icechunk -----------------------------------


@pytest.mark.parametrize("compressor", sorted(V3_COMPRESSORS))
def test_v3_store_reads_back_exactly(compressor: str, tmp_path: Path) -> None:
    path = store_path(tmp_path)
    write(path, zarr_format=3, compressor=compressor)
    assert_conformant(path, expected(path), ZarrParser(), tmp_path)


@pytest.mark.parametrize("compressor", sorted(V2_COMPRESSORS))
def test_v2_store_reads_back_exactly(compressor: str, tmp_path: Path) -> None:
    path = store_path(tmp_path)
    write(path, zarr_format=2, compressor=compressor)
    assert_conformant(path, expected(path), ZarrParser(), tmp_path)


def test_v2_missing_chunks_stay_missing(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    write(path, zarr_format=2, missing=True)
    vds = assert_conformant(path, expected(path), ZarrParser(), tmp_path)
    # Rows 0-3 were written: chunk rows 0 and 1 of the 3 x 3 grid.
    manifest = vds["v_lei4"].data.manifest
    assert manifest.grid_shape == (3, 3)
    assert manifest.nrefs == 6
    np.testing.assert_array_equal(manifest.path_ids[2] < 0, True)


def test_v3_missing_chunks_stay_missing(tmp_path: Path) -> None:
    """xarray (over zarr) writes no chunk that holds only the fill value."""
    path = store_path(tmp_path)
    t = np.arange(35, dtype="f4").reshape(7, 5)
    t[4:] = np.nan
    n = np.arange(35, dtype="i2").reshape(7, 5)
    n[:, 2:] = 0
    ds = xr.Dataset({"t": (("y", "x"), t), "n": (("y", "x"), n)}, attrs={"source": "xarray"})
    encoding = {
        "t": {"chunks": (3, 2), "_FillValue": np.float32(np.nan)},
        "n": {"chunks": (3, 2), "_FillValue": np.int16(0)},
    }
    ds.to_zarr(path, zarr_format=3, consolidated=False, encoding=encoding)
    vds = assert_conformant(path, expected(path), ZarrParser(), tmp_path)
    t_refs, n_refs = vds["t"].data.manifest, vds["n"].data.manifest
    np.testing.assert_array_equal(t_refs.path_ids >= 0, [[1, 1, 1], [1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(n_refs.path_ids >= 0, [[1, 0, 0], [1, 0, 0], [1, 0, 0]])


@consolidated_v3_warning
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_consolidated_metadata_is_one_request(zarr_format: int, tmp_path: Path) -> None:
    path = store_path(tmp_path)
    write(path, zarr_format=zarr_format, consolidated=True)
    parser = ZarrParser()
    assert_conformant(path, expected(path, consolidated=True), parser, tmp_path, detect=False)
    assert parser.stats.requests == 2  # the listing and the consolidated document


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_without_consolidated_metadata_every_document_is_read(
    zarr_format: int, tmp_path: Path
) -> None:
    path = store_path(tmp_path)
    write(path, zarr_format=zarr_format)
    parser = ZarrParser()
    parser(str(path))
    docs = [".zgroup", ".zarray", ".zattrs"] if zarr_format == 2 else ["zarr.json"]
    n_docs = sum(1 for p in path.rglob("*") if p.name in docs)
    assert n_docs == (len(DTYPES) + 2) * (2 if zarr_format == 2 else 1)
    assert parser.stats.requests == 1 + n_docs


def test_v2_slash_dimension_separator_and_fill_values(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    group = zarr.open_group(path, mode="w", zarr_format=2)
    slash = {"name": "v2", "separator": "/"}
    for name, dtype, fill in [("f", "<f8", np.nan), ("i", ">i2", -9), ("u", "u1", 255)]:
        array = group.create_array(
            name,
            shape=(5, 4, 3),
            chunks=(2, 3, 2),
            dtype=dtype,
            fill_value=fill,
            chunk_key_encoding=slash,
            attributes={"_ARRAY_DIMENSIONS": ["a", "b", "c"]},
        )
        array[:3, :, 1:] = values(dtype, (3, 4, 2))
    assert (path / "f" / "0" / "0" / "0").is_file()
    vds = assert_conformant(path, expected(path), ZarrParser(), tmp_path)
    assert vds["i"].attrs["_FillValue"] == -9
    assert vds["f"].data.manifest.nrefs == 2 * 2 * 2  # chunk rows 0, 1 only


@pytest.mark.parametrize(
    ("name", "separator", "key"),
    [("default", ".", "c.1.0.2"), ("v2", ".", "1.0.2"), ("v2", "/", "1/0/2")],
)
def test_v3_chunk_key_encodings(name: str, separator: str, key: str, tmp_path: Path) -> None:
    path = store_path(tmp_path)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    encoding = {"name": name, "configuration": {"separator": separator}}
    array = _create(
        group,
        "a",
        zarr_format=3,
        shape=(5, 2, 7),
        chunks=(3, 2, 3),
        dtype="u2",
        dims=["z", "y", "x"],
        chunk_key_encoding=encoding,
    )
    array[...] = values("u2", (5, 2, 7))
    assert (path / "a" / key).is_file()
    vds = assert_conformant(path, expected(path), ZarrParser(), tmp_path)
    assert vds["a"].data.manifest[(1, 0, 2)].path.endswith(f"/a/{key}")


@consolidated_v3_warning
@pytest.mark.parametrize(("zarr_format", "consolidated"), [(3, False), (3, True), (2, True)])
def test_nested_groups_and_the_group_option(
    zarr_format: Literal[2, 3], consolidated: bool, tmp_path: Path
) -> None:
    path = store_path(tmp_path)
    root = zarr.open_group(path, mode="w", zarr_format=zarr_format, attributes={"level": 0})
    inner = root.create_group("outer", attributes={"level": 1}).create_group("inner")
    inner.attrs["level"] = 2
    for g, n in [(root, 3), (root["outer"], 4), (inner, 5)]:
        assert isinstance(g, zarr.Group)
        array = _create(
            g, "v", zarr_format=zarr_format, shape=(n,), chunks=(2,), dtype="i4", dims=["d"]
        )
        array[...] = np.arange(n, dtype="i4") * n
    if consolidated:
        zarr.consolidate_metadata(path)
    parser = ZarrParser()
    store = parser(str(path))
    assert parser.stats.requests == (2 if consolidated else 7)  # 3 groups, 3 arrays
    assert store.group.groups["outer"].groups["inner"].attributes == {"level": 2}
    for group in [None, "outer", "outer/inner"]:
        want = expected(path, group=group, consolidated=consolidated)
        assert_same(read_store(store, group=group), want)
    # The option opens the subgroup (its subgroups kept), through every output path.
    parser = ZarrParser(group="outer")
    sub = parser(str(path))
    assert list(sub.group.groups) == ["inner"]
    assert sub.group.attributes == {"level": 1}
    assert_conformant(path, expected(path, group="outer"), parser, tmp_path, detect=False)
    assert_conformant(
        path,
        expected(path, group="outer/inner"),
        ZarrParser(group="/outer/inner/"),
        tmp_path / "inner",
        detect=False,
    )


def test_drop_variables(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    write(path, zarr_format=2)
    vds = vcube.open_virtual_dataset(path, drop_variables=["v_i1", "v_u2"])
    assert "v_i1" not in vds.variables
    assert "v_u2" not in vds.variables
    assert "v_lei4" in vds.variables
    assert "v_i1" not in ZarrParser(drop_variables=["v_i1"])(str(path)).group.arrays


@pytest.mark.parametrize("index_location", ["end", "start"])
def test_sharded_v3_array_references_whole_shards(index_location: str, tmp_path: Path) -> None:
    path = store_path(tmp_path)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    data = values("<f4", (10, 9))
    sharded = group.create_array(
        "s",
        shape=data.shape,
        chunks=(4, 6),  # the shards: the chunk grid of the array's metadata
        serializer=ShardingCodec(
            chunk_shape=(2, 3),
            codecs=[BytesCodec(), ZstdCodec(level=1)],
            index_location=index_location,
        ),
        compressors=None,
        dtype="f4",
        fill_value=np.nan,
        dimension_names=["y", "x"],
        attributes={"_FillValue": "AAAAAAAA+H8="},  # NaN, as xarray writes it
    )
    sharded[:8] = data[:8]  # the last shard row (rows 8-9) is never written
    vds = vcube.open_virtual_dataset(path, parser=ZarrParser())
    manifest = vds["s"].data.manifest
    assert vds["s"].data.chunks == (4, 6)
    assert manifest.grid_shape == (3, 2)
    assert manifest.nrefs == 4
    shard = path / "s" / "c" / "1" / "1"
    assert manifest[(1, 1)] is not None
    assert manifest[(1, 1)].length == shard.stat().st_size
    assert (
        json.loads((path / "s" / "zarr.json").read_text())["codecs"][0]["configuration"][
            "index_location"
        ]
        == index_location
    )
    want = expected(path)
    assert_same(read_store(ManifestStore.from_virtual_dataset(vds)), want)
    assert_same(read_icechunk(vds, path.parent, tmp_path / "repo"), want)
    # zarr reads inner chunks of a shard with byte-range requests: a small selection.
    array = zarr.open_array(ZarrParser()(str(path)), path="s", mode="r", zarr_format=3)
    np.testing.assert_array_equal(array[5:7, 4:5], data[5:7, 4:5], strict=True)


def test_v2_filters_and_fortran_order(tmp_path: Path) -> None:
    """v2 filters become array->array codecs, order "F" a transpose codec; Kerchunk writes
    them back as v2 filters and order "F"."""
    path = store_path(tmp_path)
    group = zarr.open_group(path, mode="w", zarr_format=2)
    dims = {"_ARRAY_DIMENSIONS": ["y", "x"]}
    delta = group.create_array(
        "delta",
        shape=(6, 5),
        chunks=(4, 2),
        dtype=">i8",
        filters=[numcodecs.Delta(dtype=">i8")],
        compressors=numcodecs.Zstd(level=1),
        attributes=dims,
    )
    delta[...] = values(">i8", (6, 5))
    scaled = group.create_array(
        "scaled",
        shape=(6, 5),
        chunks=(4, 2),
        dtype="f8",
        filters=[numcodecs.FixedScaleOffset(offset=0, scale=8, dtype="f8", astype="i2")],
        compressors=numcodecs.Blosc(cname="lz4", clevel=1, shuffle=numcodecs.Blosc.AUTOSHUFFLE),
        attributes=dims,
    )
    scaled[...] = values("f8", (6, 5)) / 8
    fortran = group.create_array(
        "fortran", shape=(6, 5), chunks=(4, 2), dtype="u2", order="F", attributes=dims
    )
    fortran[...] = values("u2", (6, 5))
    assert json.loads((path / "fortran" / ".zarray").read_text())["order"] == "F"
    vds = vcube.open_virtual_dataset(path, parser=ZarrParser())
    assert [c.to_dict()["name"] for c in vds["delta"].data.codecs] == [
        "numcodecs.delta",
        "bytes",
        "zstd",
    ]
    assert vds["fortran"].data.codecs[0].to_dict()["name"] == "transpose"
    assert_conformant(path, expected(path), ZarrParser(), tmp_path)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_strings_and_scalars(zarr_format: int, tmp_path: Path) -> None:
    path = store_path(tmp_path)
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    words = np.array(["a", "bb", "", "dddd", "é"], dtype=object)
    arrays: list[tuple[str, Any, Any, list[str]]] = [
        ("text", str, words, ["n"]),
        ("fixed", "S3", np.array([b"ab", b"c", b"", b"xyz", b"q"]), ["n"]),
        ("unicode", "<U2", np.array(["ab", "c", "", "é", "xy"]), ["n"]),
        ("time", "<M8[s]", np.arange(5).astype("M8[D]").astype("M8[s]"), ["n"]),
        ("scalar", "f8", np.float64(2.5), []),
        ("unwritten_scalar", "i4", None, []),
    ]
    for name, dtype, data, dims in arrays:
        array = _create(
            group,
            name,
            zarr_format=zarr_format,
            shape=() if not dims else (5,),
            chunks=() if not dims else (2,),
            dtype=dtype,
            dims=dims,
            **({"fill_value": 7, "attributes": {"_FillValue": 7}} if data is None else {}),
        )
        if data is not None:
            array[...] = data
    want = expected(path)
    if zarr_format == 2:
        # xarray reads a v2 fill_value as _FillValue but cannot decode it from Zarr v3 metadata
        # for strings, bytes and times (vcube leaves it out there); the values are the same.
        for name in ["text", "fixed", "unicode", "time"]:
            del want[name].attrs["_FillValue"]
    assert_conformant(path, want, ZarrParser(), tmp_path)
    manifest = ZarrParser()(str(path)).group.arrays["scalar"].manifest
    assert manifest.grid_shape == ()
    assert manifest.nrefs == 1


def test_store_that_is_one_array(tmp_path: Path) -> None:
    path = store_path(tmp_path, "temperature.zarr")
    data = values("<f4", (4, 6))
    array = zarr.create_array(path, shape=data.shape, chunks=(3, 4), dtype="f4", zarr_format=3)
    array[...] = data
    store = ZarrParser()(str(path))
    assert list(store.group.arrays) == ["temperature"]
    read = zarr.open_array(store, path="temperature", mode="r", zarr_format=3)
    np.testing.assert_array_equal(read[...], zarr.open_array(path, mode="r")[...], strict=True)


def test_objects_that_are_not_chunks_are_ignored(tmp_path: Path) -> None:
    """Chunks left outside the grid by a shrinking resize, and stray files, reference nothing."""
    path = store_path(tmp_path)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    array = _create(
        group, "a", zarr_format=3, shape=(7, 5), chunks=(3, 2), dtype="i4", dims=["y", "x"]
    )
    array[...] = values("i4", (7, 5))
    array.resize((4, 3))
    # zarr deletes chunks outside the new grid; one left behind (as by an interrupted resize):
    (path / "a" / "c" / "2").mkdir(exist_ok=True)
    (path / "a" / "c" / "2" / "2").write_bytes(b"junk")
    for stray in ["c/0/x", "c/00/1", "c/0/5/0", "c/-1/0", "c/0.1", ".DS_Store", "c/1/+1"]:
        file = path / "a" / stray
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"junk")
    vds = assert_conformant(path, expected(path), ZarrParser(), tmp_path)
    manifest = vds["a"].data.manifest
    assert manifest.grid_shape == (2, 2)
    assert manifest.nrefs == 4
    assert sorted(p.rsplit("/c/", 1)[1] for p in manifest.paths) == ["0/0", "0/1", "1/0", "1/1"]


# -- object storage ------------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_over_s3_reads_back_exactly(
    zarr_format: int, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    path = store_path(tmp_path)
    write(path, zarr_format=zarr_format, consolidated=zarr_format == 2, missing=zarr_format == 2)
    want = expected(path, consolidated=zarr_format == 2)
    vds = assert_conformant_s3(path, want, ZarrParser(), s3_server, s3_bucket)
    assert vds["v_u2"].data.manifest.paths[0] == f"s3://{s3_bucket}/x.zarr/v_u2/" + (
        "0.0" if zarr_format == 2 else "c/0/0"
    )


def test_sharded_over_s3_reads_back_exactly(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    path = store_path(tmp_path)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    data = values("<i4", (9, 8))
    array = group.create_array(
        "s", shape=data.shape, chunks=(2, 2), shards=(4, 4), dtype="i4", dimension_names=["y", "x"]
    )
    array[...] = data
    assert_conformant_s3(path, expected(path), ZarrParser(), s3_server, s3_bucket)


def upload_tree(server: S3Server, path: Path, bucket: str) -> str:
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        server.upload(file, bucket, f"{path.name}/{file.relative_to(path)}")
    return f"s3://{bucket}/{path.name}"


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_requests_do_not_grow_with_the_number_of_chunks(
    zarr_format: int, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """One listing gives every chunk's size: a store of 4 chunks and one of 36 chunks cost the
    same requests (the listing and the metadata documents)."""
    registry = ObjectStoreRegistry({f"s3://{s3_bucket}": s3_server.store(s3_bucket)})
    counts = []
    for name, chunks in [("few.zarr", (6, 6)), ("many.zarr", (2, 2))]:
        path = store_path(tmp_path, name)
        group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
        array = _create(
            group,
            "a",
            zarr_format=zarr_format,
            shape=(12, 12),
            chunks=chunks,
            dtype="u1",
            dims=["y", "x"],
        )
        array[...] = values("u1", (12, 12))
        url = upload_tree(s3_server, path, s3_bucket)
        before = len(s3_server.requests(s3_bucket))
        parser = ZarrParser()
        store = parser(url, registry)
        requests = s3_server.requests(s3_bucket)[before:]
        counts.append(len(requests))
        assert store.group.arrays["a"].manifest.nrefs == 144 // (chunks[0] * chunks[1])
        # One listing (GET /bucket?list-type=2...), then metadata documents only: no chunk.
        assert [r.path for r in requests].count(f"/{s3_bucket}") == 1
        docs = {"zarr.json", ".zgroup", ".zarray", ".zattrs"}
        assert all(r.path.rsplit("/", 1)[1] in docs for r in requests[1:])
        assert parser.stats.requests == len(requests)
        got = zarr.open_array(store, path="a", mode="r", zarr_format=3)[...]
        np.testing.assert_array_equal(got, values("u1", (12, 12)), strict=True)
    assert counts[0] == counts[1] == (1 + 4 if zarr_format == 2 else 1 + 2)


# -- detection and errors ------------------------------------------------------------------------


@consolidated_v3_warning
@pytest.mark.parametrize(("zarr_format", "consolidated"), [(2, False), (2, True), (3, False)])
def test_detected_from_the_documents_at_the_top(
    zarr_format: int, consolidated: bool, tmp_path: Path
) -> None:
    path = store_path(tmp_path)
    write(path, zarr_format=zarr_format, consolidated=consolidated)
    parser = detect_parser(normalize_url(path), ObjectStoreRegistry())
    assert isinstance(parser, ZarrParser)
    assert_same(read_store(parser(str(path))), expected(path, consolidated=consolidated))


def test_directory_without_zarr_metadata(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    write(path, zarr_format=3)
    (path / "zarr.json").unlink()
    with pytest.raises(UnsupportedFormatError, match=r"no Zarr metadata .* group=") as info:
        ZarrParser()(str(path))
    assert normalize_url(path) in str(info.value)
    # An array's chunk directory holds chunks but no metadata document.
    with pytest.raises(UnsupportedFormatError, match="group 'v_i1/c': no Zarr metadata"):
        ZarrParser(group="v_i1/c")(str(path))


def test_missing_store_or_group_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=re.escape("nonesuch.zarr: not found")):
        ZarrParser()(str(tmp_path / "nonesuch.zarr"))
    path = store_path(tmp_path)
    write(path, zarr_format=2)
    with pytest.raises(SourceNotFoundError, match="group 'nonesuch': not found"):
        ZarrParser(group="nonesuch")(str(path))


@pytest.mark.parametrize(
    ("document", "text", "message"),
    [
        ("zarr.json", "{not json", "not a valid JSON document"),
        ("zarr.json", "[1, 2]", "not a JSON object"),
        ("zarr.json", '{"zarr_format": 3, "node_type": "table"}', "not Zarr v3 metadata"),
        (
            "a/zarr.json",
            '{"zarr_format": 3, "node_type": "array"}',
            "array 'a': invalid Zarr v3 array metadata",
        ),
        ("a/zarr.json", "{", "a/zarr.json: not a valid JSON document"),
    ],
)
def test_corrupt_v3_metadata(document: str, text: str, message: str, tmp_path: Path) -> None:
    path = store_path(tmp_path)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    _create(group, "a", zarr_format=3, shape=(3,), chunks=(2,), dtype="i2", dims=["x"])
    (path / document).write_text(text)
    with pytest.raises((UnsupportedFormatError, UnsupportedFeatureError), match=re.escape(message)):
        ZarrParser()(str(path))


def test_invalid_array_metadata(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    group = zarr.open_group(path, mode="w", zarr_format=2)
    _create(group, "a", zarr_format=2, shape=(3,), chunks=(2,), dtype="i2", dims=["x"])
    zarray = json.loads((path / "a" / ".zarray").read_text())
    del zarray["shape"]
    (path / "a" / ".zarray").write_text(json.dumps(zarray))
    with pytest.raises(UnsupportedFormatError, match="array 'a': invalid Zarr v2 array metadata"):
        ZarrParser()(str(path))


def edit_v3(path: Path, name: str, change: dict[str, Any]) -> None:
    document = path / name / "zarr.json"
    document.write_text(json.dumps({**json.loads(document.read_text()), **change}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"codecs": [{"name": "bytes"}, {"name": "no-such-codec"}]}, "no installed Zarr v3 codec"),
        (
            {"chunk_grid": {"name": "rectilinear", "configuration": {"chunk_shapes": [[2, 1]]}}},
            "chunk grid 'rectilinear' is not supported",
        ),
        ({"storage_transformers": [{"name": "x"}]}, "storage transformers"),
        ({"chunk_key_encoding": {"name": "custom"}}, "unsupported chunk key encoding"),
    ],
)
def test_unsupported_v3_features(change: dict[str, Any], message: str, tmp_path: Path) -> None:
    path = store_path(tmp_path)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    _create(group, "a", zarr_format=3, shape=(3,), chunks=(2,), dtype="i2", dims=["x"])
    edit_v3(path, "a", change)
    with pytest.raises(UnsupportedFeatureError, match=re.escape(message)) as info:
        ZarrParser()(str(path))
    assert "array 'a'" in str(info.value)
    # The array can be left out.
    assert not ZarrParser(drop_variables=["a"])(str(path)).group.arrays


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_variable_length_bytes_are_refused(zarr_format: int, tmp_path: Path) -> None:
    """vcube's arrays carry a numpy dtype, and numpy's object dtype does not say "bytes"."""
    path = store_path(tmp_path)
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    blobs = _create(
        group,
        "blobs",
        zarr_format=zarr_format,
        shape=(3,),
        chunks=(2,),
        dtype=VariableLengthBytes(),
        dims=["n"],
    )
    blobs[...] = np.array([b"a", b"bcd", b""], dtype=object)
    _create(group, "n", zarr_format=zarr_format, shape=(3,), chunks=(2,), dtype="i1", dims=["n"])
    with pytest.raises(UnsupportedFeatureError, match=r"array 'blobs': cannot be described"):
        ZarrParser()(str(path))
    assert list(ZarrParser(drop_variables=["blobs"])(str(path)).group.arrays) == ["n"]


@pytest.mark.parametrize(
    ("filters", "compressor", "message"),
    [
        # A filter that makes bytes, then one that needs an array: no v3 pipeline says that.
        ([{"id": "zlib", "level": 1}, {"id": "delta", "dtype": "<i2"}], None, "follows a filter"),
        (None, {"id": "no-such-compressor"}, "no installed Zarr v3 codec"),
    ],
)
def test_unsupported_v2_pipelines(
    filters: list[Any] | None, compressor: Any, message: str, tmp_path: Path
) -> None:
    path = store_path(tmp_path)
    group = zarr.open_group(path, mode="w", zarr_format=2)
    _create(group, "a", zarr_format=2, shape=(3,), chunks=(2,), dtype="<i2", dims=["x"])
    zarray = json.loads((path / "a" / ".zarray").read_text())
    (path / "a" / ".zarray").write_text(
        json.dumps({**zarray, "filters": filters, "compressor": compressor})
    )
    with pytest.raises(UnsupportedFeatureError, match=re.escape(message)):
        ZarrParser()(str(path))


def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_docs("zarr.md")
