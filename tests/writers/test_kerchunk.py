"""`to_kerchunk`: references written as a dict, JSON and Parquet, read back with the real clients
(fsspec's `ReferenceFileSystem` under xarray's Zarr v2 reader, and kerchunk's xarray backend),
equal what netCDF4 reads from the files; kerchunk's own references of the same files match
vcube's chunk for chunk."""

from __future__ import annotations

import base64
import json
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import fastparquet.api
import fastparquet.core
import fastparquet.encoding
import fsspec
import h5py
import imagecodecs.numcodecs
import netCDF4
import numcodecs
import numpy as np
import obstore
import pandas as pd
import pyarrow.parquet as pq
import pytest
import tifffile
import xarray as xr
import zarr
from fsspec.implementations.reference import LazyReferenceMapper
from hdf5_files import NETCDF_CASES, write
from imagecodecs.zarr import Bitshuffle, Delta, Xor
from kerchunk.hdf import SingleHdf5ToZarr
from obstore.fsspec import FsspecStore
from parsers.test_hdf5 import RAW, assert_same_dtype, groups_of, is_packed
from zarr.codecs import BloscCodec, BytesCodec, TransposeCodec, ZstdCodec
from zarr.codecs.numcodecs import BZ2, Fletcher32, Shuffle, Zlib
from zarr.codecs.scale_offset import ScaleOffset

import vcube
from vcube import ChunkManifest, HDFParser, ManifestArray, ObjectStoreRegistry
from vcube.codecs import HDF5Filter, hdf5_filters_to_codecs
from vcube.errors import (
    StoreNotFoundError,
    UnsupportedFeatureError,
    UnsupportedFormatError,
    VcubeError,
)
from vcube.manifests.manifest import MISSING
from vcube.manifests.metadata import array_metadata
from vcube.parsers.tiff import TIFFParser
from vcube.parsers.zarr import ZarrParser
from vcube.writers import to_kerchunk
from vcube.writers.kerchunk import (
    KerchunkFillValueWarning,
    KerchunkRefs,
    NoVirtualVariablesWarning,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from zarr.abc.codec import Codec

FORMATS = ("dict", "json", "parquet")
REGION = "us-east-1"  # the S3 test server's region (s3_server.py)

# Zarr v2 readers find imagecodecs filters (LZF, LZ4, predictors, JPEG) by id only after this.
imagecodecs.numcodecs.register_codecs()


# -- sources and readers -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Where the NetCDF files live: `publish(path)` gives the URL to virtualize; `remote` is what
    fsspec's `ReferenceFileSystem` needs to reach them."""

    publish: Callable[[Path], str]
    registry: ObjectStoreRegistry | None
    remote: dict[str, Any]


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def source(request: pytest.FixtureRequest) -> Source:
    if request.param == "local":
        return Source(str, None, {"remote_protocol": "file"})
    server = request.getfixturevalue("s3_server")
    bucket = server.create_bucket()
    # obstore's fsspec filesystem (no s3fs here): the chunks are read by fsspec, through obstore.
    s3 = FsspecStore(
        "s3",
        config={
            "endpoint": server.endpoint,
            "region": REGION,
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "virtual_hosted_style_request": False,
        },
        client_options={"allow_http": True},
        asynchronous=True,
    )
    return Source(
        lambda path: server.upload(path, bucket, f"data/{path.name}"),
        ObjectStoreRegistry({f"s3://{bucket}": server.store(bucket)}),
        {"fs": {"s3": s3}},
    )


def write_refs(vds: xr.Dataset, fmt: str, directory: Path, **kwargs: Any) -> KerchunkRefs | str:
    """The references of `vds` in format `fmt`: the dict, or the path of the file written."""
    if fmt == "dict":
        return to_kerchunk(vds, **kwargs)
    target = directory / f"refs.{fmt}"
    to_kerchunk(vds, target, format=fmt, **kwargs)  # type: ignore[call-overload]
    return str(target)


def open_refs(fo: KerchunkRefs | str, remote: dict[str, Any], **kwargs: Any) -> xr.Dataset:
    """What xarray reads through fsspec's `reference://` file system (Zarr v2)."""
    options = {"fo": fo, **remote}
    return xr.open_dataset(
        "reference://",
        engine="zarr",
        zarr_format=2,
        consolidated=False,
        storage_options=options,
        chunks=None,
        **kwargs,
    ).load()


def fastparquet_arrow_strings(monkeypatch: pytest.MonkeyPatch, *, on: bool) -> None:
    """Make fastparquet read strings as pandas >= 3 does outside pytest (nulls as NaN), or as
    pandas < 3 does (nulls as None). fastparquet decides at import, by reading a pandas option
    that warns, and under pytest's `filterwarnings = error` the warning makes it pick None."""
    for module in (fastparquet.encoding, fastparquet.api, fastparquet.core):
        monkeypatch.setattr(module, "_USE_ARROW_STRINGS", on)


def missing_chunks(vds: xr.Dataset) -> dict[str, tuple[bool, bool]]:
    """For each virtual variable: (has a missing chunk, has a present chunk)."""
    out = {}
    for name, var in vds.variables.items():
        if isinstance(var.data, ManifestArray):
            missing = var.data.manifest.path_ids == MISSING
            out[str(name)] = (bool(missing.any()), bool((~missing).any()))
    return out


def assert_refs_read_as_netcdf4(
    fo: KerchunkRefs | str,
    remote: dict[str, Any],
    vds: xr.Dataset,
    path: Path,
    group: str | None,
    drop: Sequence[str] = (),
) -> None:
    """Raw and decoded values equal netCDF4's. Zarr v2 has one fill value, which xarray takes
    for `_FillValue`: a variable without `_FillValue` whose chunks are not all written reads
    with its missing-chunk fill value as `_FillValue`, masked as netCDF4-python masks it."""
    raw_expected = xr.open_dataset(path, engine="netcdf4", group=group, **RAW)
    raw_expected = raw_expected.drop_vars(drop).load()
    raw_actual = open_refs(fo, remote, drop_variables=drop, **RAW)
    unmasked = [
        name
        for name, (missing, _) in missing_chunks(vds).items()
        if missing and name not in drop and "_FillValue" not in raw_expected[name].attrs
    ]
    for name in unmasked:
        fill = raw_actual[name].attrs.pop("_FillValue")
        assert fill == vds[name].data.fill_value, name
    xr.testing.assert_identical(raw_actual, raw_expected)
    for name in raw_expected.variables:
        assert_same_dtype(raw_actual[name], raw_expected[name])

    expected = xr.open_dataset(path, engine="netcdf4", group=group).drop_vars(drop).load()
    actual = open_refs(fo, remote, drop_variables=drop)
    with netCDF4.Dataset(path) as nc:
        node = nc[group] if group else nc
        for name in unmasked:
            masked = node[name][...]  # netCDF4-python masks the default fill value
            values = np.ma.filled(masked.astype(actual[name].dtype), np.nan)
            expected[name] = expected[name].copy(data=values)
    packed = [k for k, v in raw_expected.variables.items() if is_packed(v)]
    xr.testing.assert_identical(actual.drop_vars(packed), expected.drop_vars(packed))
    for name in packed:
        # JSON attributes carry no float32: xarray unpacks in float64 (netCDF4 in float32).
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-6)


# -- round trip over the NetCDF battery ----------------------------------------------------------


@pytest.mark.parametrize("case", sorted(NETCDF_CASES))
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_reads_as_netcdf4(fmt: str, case: str, source: Source, tmp_path: Path) -> None:
    path = write(case, tmp_path)
    url = source.publish(path)
    for i, group in enumerate(groups_of(path)):
        vds = vcube.open_virtual_dataset(
            url, registry=source.registry, parser=HDFParser(group=group)
        )
        out = tmp_path / f"group{i}"
        fo = write_refs(vds, fmt, out)
        # fsspec reads a null path of a Parquet record as NaN with pandas >= 3 and then fails:
        # variables whose record mixes missing and present chunks are tested (xfail) below.
        drop = (
            [k for k, (missing, present) in missing_chunks(vds).items() if missing and present]
            if fmt == "parquet"
            else []
        )
        assert_refs_read_as_netcdf4(fo, source.remote, vds, path, group, drop)


def test_parquet_record_mixing_missing_and_present_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing chunk is a row with a null path: read as missing with object strings."""
    fastparquet_arrow_strings(monkeypatch, on=False)  # pandas < 3 (and pytest, see below)
    path = write("missing_and_unwritten", tmp_path)
    fo = write_refs(vcube.open_virtual_dataset(path)[["partial"]], "parquet", tmp_path)
    actual = open_refs(fo, {"remote_protocol": "file"}, **RAW)
    expected = xr.open_dataset(path, engine="netcdf4", **RAW)[["partial"]].load()
    xr.testing.assert_identical(actual, expected)


@pytest.mark.xfail(
    reason="fsspec's LazyReferenceMapper._load_one_key returns [nan] for a null path read as "
    "NaN (pandas >= 3 strings, or a categorical), and ReferenceFileSystem._cat_file fails on it",
    raises=TypeError,
    strict=True,
)
def test_parquet_record_mixing_missing_and_present_chunks_pandas3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fastparquet_arrow_strings(monkeypatch, on=True)
    path = write("missing_and_unwritten", tmp_path)
    fo = write_refs(vcube.open_virtual_dataset(path)[["partial"]], "parquet", tmp_path)
    open_refs(fo, {"remote_protocol": "file"}, **RAW)


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_kerchunk_xarray_backend_reads_the_references(fmt: str, tmp_path: Path) -> None:
    path = write("chunked_zlib_shuffle", tmp_path)
    fo = write_refs(vcube.open_virtual_dataset(path), fmt, tmp_path)
    actual = xr.open_dataset(
        fo,
        engine="kerchunk",
        storage_options={"remote_protocol": "file"},
        open_dataset_options={"chunks": None, **RAW},
    ).load()
    xr.testing.assert_identical(actual, xr.open_dataset(path, engine="netcdf4", **RAW).load())


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_virtualizarr_parsers_read_the_references(fmt: str, tmp_path: Path) -> None:
    """VirtualiZarr's Kerchunk parsers (an optional test dependency) open what vcube writes."""
    vz = pytest.importorskip("virtualizarr")
    from obspec_utils.registry import ObjectStoreRegistry as VzRegistry
    from obstore.store import LocalStore
    from virtualizarr.parsers import KerchunkJSONParser, KerchunkParquetParser

    path = write("fill_values_nan_and_cf_packing", tmp_path)
    fo = write_refs(vcube.open_virtual_dataset(path), fmt, tmp_path)
    parser = KerchunkJSONParser() if fmt == "json" else KerchunkParquetParser()
    expected = xr.open_dataset(path, engine="netcdf4", decode_times=False).load()
    with vz.open_virtual_dataset(
        f"file://{fo}",
        registry=VzRegistry({"file://": LocalStore()}),
        parser=parser,
        loadable_variables=list(expected.variables),
        decode_times=False,
    ) as actual:
        for name, var in expected.variables.items():
            # VirtualiZarr decodes loaded variables; packed ones unpack in float64 here
            np.testing.assert_allclose(actual[name].values, var.values, rtol=1e-6, err_msg=name)


def test_hdf5_filters_read_back_as_h5py(tmp_path: Path) -> None:
    """Blosc, Zstd, bzip2, LZF, LZ4 and gzip+shuffle as Zarr v2 filters, decoded by numcodecs."""
    path = write("hdf5plugin_filters", tmp_path)
    actual = open_refs(to_kerchunk(vcube.open_virtual_dataset(path)), {"remote_protocol": "file"})
    with h5py.File(path) as f:
        assert sorted(actual.data_vars) == sorted(f)
        for name in f:
            np.testing.assert_array_equal(actual[name].values, f[name][()], strict=True)


# -- interoperability with kerchunk --------------------------------------------------------------


def chain(zarray: dict[str, Any]) -> list[dict[str, Any]]:
    """The whole v2 codec chain (filters, then compressor), without blosc's blocksize hint."""
    codecs = [*(zarray["filters"] or []), *([zarray["compressor"]] if zarray["compressor"] else [])]
    return [
        {k: v for k, v in c.items() if not (c["id"] == "blosc" and k == "blocksize")}
        for c in codecs
    ]


@pytest.mark.parametrize("case", [*sorted(NETCDF_CASES), "hdf5plugin_filters"])
def test_matches_kerchunk_chunk_for_chunk(case: str, tmp_path: Path) -> None:
    path = write(case, tmp_path)
    with warnings.catch_warnings():
        # kerchunk warns and leaves out what it cannot translate (fletcher32, bzip2, LZF, LZ4,
        # scalar strings); those variables are not compared.
        warnings.simplefilter("ignore", UserWarning)
        theirs = SingleHdf5ToZarr(str(path), inline_threshold=0).translate()["refs"]
    ours = to_kerchunk(vcube.open_virtual_dataset(path, loadable_variables=[]))["refs"]
    with h5py.File(path) as f:
        arrays = {
            name: f[name]
            for name in f
            if isinstance(f[name], h5py.Dataset) and f"{name}/.zarray" in theirs
        }
        compared = 0
        for name, dataset in arrays.items():
            if dataset.fletcher32:
                continue  # kerchunk drops the checksum and trims 4 bytes off every chunk
            mine = json.loads(ours[f"{name}/.zarray"])
            their = json.loads(theirs[f"{name}/.zarray"])
            refs = {
                k: v
                for k, v in theirs.items()
                if k.rpartition("/")[0] == name and not k.endswith((".zarray", ".zattrs"))
            }
            if not refs or not all(isinstance(v, list) for v in refs.values()):
                continue  # kerchunk embedded the values (strings) or lost them (compact layout)
            if not all(isinstance(ours.get(k), list) for k in refs):
                # HDF5 skipped a filter on these chunks (filter mask): kerchunk drops the filter
                # from the array, vcube holds the chunks inline, encoded with the whole pipeline.
                continue
            for key in ("shape", "chunks", "dtype"):
                assert mine[key] == their[key], (name, key)
            assert chain(mine) == chain(their), name
            if "_FillValue" in dataset.attrs:
                assert mine["fill_value"] == their["fill_value"], name
            for key, ref in refs.items():
                if isinstance(ref, list):
                    url, offset, length = ours[key]
                    assert (os.path.realpath(url), offset, length) == (
                        os.path.realpath(ref[0]),
                        ref[1],
                        ref[2],
                    ), key
                    compared += 1
            chunk_keys = {k for k in ours if k.rpartition("/")[0] == name} - {
                f"{name}/.zarray",
                f"{name}/.zattrs",
            }
            assert chunk_keys == set(refs), name
    if case != "compact_layout":
        assert compared, "no chunk reference was compared"


# -- what the references hold --------------------------------------------------------------------


def test_scalar_variables_keep_their_value(tmp_path: Path) -> None:
    path = write("contiguous_and_scalar", tmp_path)
    vds = vcube.open_virtual_dataset(path)
    refs = to_kerchunk(vds)["refs"]
    assert json.loads(refs["scalar/.zarray"])["shape"] == []
    assert isinstance(refs["scalar/0"], list)  # VirtualiZarr writes "scalar/", read as fill
    assert isinstance(refs["scalar_int/0"], list)
    for fmt in FORMATS:
        actual = open_refs(write_refs(vds, fmt, tmp_path / fmt), {"remote_protocol": "file"})
        assert actual["scalar"].item() == 3.25
        assert actual["scalar_int"].item() == -7
        assert actual["scalar"].attrs["note"] == "a scalar"


def test_loaded_variables_are_inline_chunks(tmp_path: Path) -> None:
    path = write("chunked_zlib_shuffle", tmp_path)
    vds = vcube.open_virtual_dataset(path)  # time, lat, lon loaded
    refs = to_kerchunk(vds)["refs"]
    lat = refs["lat/0"]
    assert isinstance(lat, str)
    assert lat.startswith("base64:")
    expected = xr.open_dataset(path, engine="netcdf4", **RAW)["lat"].values
    assert base64.b64decode(lat.removeprefix("base64:")) == expected.astype("<f4").tobytes()
    assert json.loads(refs["lat/.zarray"])["dtype"] == "<f4"
    assert isinstance(refs["air/0.0.0"], list)


def test_missing_chunks_are_absent(tmp_path: Path) -> None:
    path = write("missing_and_unwritten", tmp_path)
    vds = vcube.open_virtual_dataset(path)
    refs = to_kerchunk(vds)["refs"]
    assert [k for k in refs if k.startswith("partial/") and ".z" not in k] == ["partial/0.0"]
    assert not [k for k in refs if k.startswith("never_written/") and ".z" not in k]
    assert json.loads(refs["never_written/.zarray"])["fill_value"] == -99
    assert json.loads(refs["partial/.zarray"])["fill_value"] == -1.0
    # xarray's encoded form, read with use_zarr_fill_value_as_mask=False
    assert json.loads(refs["partial/.zattrs"])["_FillValue"] == "AAAAAAAA8L8="
    parquet = tmp_path / "refs.parquet"
    to_kerchunk(vds, parquet, format="parquet")
    # A record with no chunk at all is not written; fsspec reads its keys as missing.
    assert not (parquet / "never_written").exists()
    table = pq.read_table(parquet / "partial" / "refs.0.parq")
    assert table["path"].null_count == 3
    assert table["raw"].null_count == 4


def synthetic(
    nfiles: int, chunks_per_file: int, *, codecs: Sequence[Codec] = (), name: str = "v"
) -> xr.Dataset:
    """One virtual variable: `nfiles` files of `chunks_per_file` 4-element chunks each."""
    n = nfiles * chunks_per_file
    paths = np.repeat([f"s3://bucket/file-{i:03d}.nc" for i in range(nfiles)], chunks_per_file)
    manifest = ChunkManifest.from_arrays(
        paths=paths,
        offsets=np.tile(np.arange(chunks_per_file) * 16 + 100, nfiles),
        lengths=np.full(n, 16),
    )
    info = array_metadata(
        shape=(4 * n,), dtype=np.dtype("<f4"), chunks=(4,), codecs=codecs, dimension_names=["x"]
    )
    return xr.Dataset({name: xr.Variable(("x",), ManifestArray(info, manifest))})


def test_parquet_layout_records_and_categorical_paths(tmp_path: Path) -> None:
    vds = synthetic(4, 10)  # 40 chunks, 10 per path
    refs = to_kerchunk(vds)["refs"]
    categorical, plain = tmp_path / "cat.parq", tmp_path / "plain.parq"
    to_kerchunk(vds, categorical, format="parquet", record_size=16, categorical_threshold=4)
    to_kerchunk(vds, plain, format="parquet", record_size=16, categorical_threshold=11)
    zmetadata = json.loads((categorical / ".zmetadata").read_text())
    assert zmetadata["record_size"] == 16
    assert set(zmetadata["metadata"]) == {".zgroup", ".zattrs", "v/.zarray", "v/.zattrs"}
    files = sorted(p.name for p in (categorical / "v").iterdir())
    assert files == ["refs.0.parq", "refs.1.parq", "refs.2.parq"]  # rows 16, 16, 8
    rows = [pq.read_table(categorical / "v" / f).to_pydict() for f in files]
    assert [len(r["path"]) for r in rows] == [16, 16, 8]
    offsets = [o for r in rows for o in r["offset"]]
    assert offsets == [refs[f"v/{i}"][1] for i in range(40)]
    # 16 refs over 2 paths per record: a ratio of 8, categorical at threshold 4, not at 11.
    assert (
        pd.read_parquet(categorical / "v" / "refs.1.parq", engine="fastparquet")["path"].dtype
        == "category"
    )
    assert pq.read_schema(plain / "v" / "refs.1.parq").field("path").type == "string"
    for store in (categorical, plain):
        mapper = LazyReferenceMapper(str(store))
        for key, ref in refs.items():
            if ".z" not in key:
                assert list(mapper[key]) == ref, key


def test_parquet_raw_column_is_binary_even_when_all_null(tmp_path: Path) -> None:
    to_kerchunk(synthetic(1, 3), tmp_path / "r.parq", format="parquet")
    assert (
        str(pq.read_schema(tmp_path / "r.parq" / "v" / "refs.0.parq").field("raw").type) == "binary"
    )
    df = pd.read_parquet(tmp_path / "r.parq" / "v" / "refs.0.parq", engine="fastparquet")
    assert df["raw"].isna().all()
    assert df["offset"].dtype == np.int64


def test_json_equals_the_dict(tmp_path: Path) -> None:
    vds = synthetic(3, 5).merge(xr.Dataset({"c": ("y", np.arange(3.0))}))
    refs = to_kerchunk(vds)
    to_kerchunk(vds, tmp_path / "refs.json", format="json")
    assert json.loads((tmp_path / "refs.json").read_text()) == refs
    assert refs["refs"]["c/0"] == "base64:" + base64.b64encode(np.arange(3.0).tobytes()).decode()


@pytest.mark.s3
def test_json_and_parquet_written_to_s3(tmp_path: Path, s3_server: Any, s3_bucket: str) -> None:
    store = s3_server.store(s3_bucket)
    registry = ObjectStoreRegistry({f"s3://{s3_bucket}": store})
    vds = synthetic(2, 4)
    to_kerchunk(vds, f"s3://{s3_bucket}/refs/r.json", format="json", registry=registry)
    data = bytes(obstore.get(store, "refs/r.json").bytes())
    assert json.loads(data) == to_kerchunk(vds)
    to_kerchunk(vds, f"s3://{s3_bucket}/refs/r.parq", format="parquet", registry=registry)
    to_kerchunk(vds, tmp_path / "r.parq", format="parquet")
    listed = {o["path"] for o in obstore.list(store, "refs/r.parq").collect()}
    assert listed == {"refs/r.parq/.zmetadata", "refs/r.parq/v/refs.0.parq"}
    for key in listed:
        local = tmp_path / "r.parq" / key.removeprefix("refs/r.parq/")
        assert bytes(obstore.get(store, key).bytes()) == local.read_bytes()


# -- codecs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codecs", "filters"),
    [
        (
            [Shuffle(elementsize=4), Zlib(level=4)],
            [{"id": "shuffle", "elementsize": 4}, {"id": "zlib", "level": 4}],
        ),
        ([Fletcher32()], [{"id": "fletcher32"}]),
        ([BZ2(level=9)], [{"id": "bz2", "level": 9}]),
        (
            [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle", typesize=4)],
            [{"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2, "blocksize": 0}],
        ),
        ([ZstdCodec(level=4)], [{"id": "zstd", "level": 4, "checksum": False}]),
        (
            hdf5_filters_to_codecs([HDF5Filter(32000)], itemsize=4, variable="v"),
            [{"id": "imagecodecs_lzf", "header": False}],
        ),
        (
            hdf5_filters_to_codecs([HDF5Filter(32004)], itemsize=4, variable="v"),
            [{"id": "imagecodecs_lz4h5"}],
        ),
    ],
)
def test_codecs_become_numcodecs_filters(
    codecs: list[Codec], filters: list[dict[str, Any]]
) -> None:
    zarray = json.loads(to_kerchunk(synthetic(1, 2, codecs=codecs))["refs"]["v/.zarray"])
    assert zarray["filters"] == filters
    assert zarray["compressor"] is None
    for config in filters:
        assert numcodecs.get_codec(dict(config)).get_config()["id"] == config["id"]


def test_big_endian_dtype_string(tmp_path: Path) -> None:
    path = write("big_endian", tmp_path)
    refs = to_kerchunk(vcube.open_virtual_dataset(path))["refs"]
    assert json.loads(refs["be_f8/.zarray"])["dtype"] == ">f8"
    assert json.loads(refs["be_i4/.zarray"])["dtype"] == ">i4"


# -- array codecs: filters and order --------------------------------------------------------------

RNG = np.random.default_rng(7)
GRAY = RNG.integers(0, 60000, (50, 40), dtype="u2")
RGB = RNG.integers(0, 256, (50, 40, 3), dtype="u1")
FLOAT = (RNG.random((50, 40)) * 1000 - 500).astype("f4")
TIFF_CASES: dict[str, tuple[np.ndarray[Any, Any], dict[str, Any], str]] = {
    "predictor2": (GRAY, {"compression": "zlib", "predictor": 2, "rowsperstrip": 16}, "delta"),
    "predictor2_big_endian": (
        GRAY,
        {"compression": "zlib", "predictor": 2, "byteorder": ">", "tile": (16, 16)},
        "delta",
    ),
    "predictor2_rgb": (RGB, {"compression": "lzw", "predictor": 2, "photometric": "rgb"}, "delta"),
    "predictor3": (FLOAT, {"compression": "zlib", "predictor": 3, "rowsperstrip": 16}, "floatpred"),
    "predictor3_big_endian": (
        FLOAT,
        {"compression": "zstd", "predictor": 3, "byteorder": ">", "tile": (16, 32)},
        "floatpred",
    ),
    "jpeg": (RGB, {"compression": "jpeg", "photometric": "rgb", "tile": (16, 16)}, "jpeg"),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", TIFF_CASES)
def test_tiff_predictors_and_jpeg_read_back_as_tifffile(
    case: str, fmt: str, tmp_path: Path
) -> None:
    """TIFF predictors and JPEG as imagecodecs filters, which numcodecs builds from the .zarray
    (once `imagecodecs.numcodecs.register_codecs()` ran) and which decode as tifffile does."""
    data, kwargs, codec = TIFF_CASES[case]
    path = tmp_path / f"{case}.tif"
    tifffile.imwrite(path, data, **kwargs)
    vds = vcube.open_virtual_dataset(path, parser=TIFFParser())
    zarray = json.loads(to_kerchunk(vds)["refs"]["0/.zarray"])
    first = zarray["filters"][0]
    assert first["id"] == f"imagecodecs_{codec}"
    if codec != "jpeg":  # a predictor undoes differences along rows of the chunk, as stored
        assert first["shape"] == list(vds["0"].data.chunks)
        assert first["dtype"] == zarray["dtype"]
    for config in zarray["filters"]:
        assert numcodecs.get_codec(dict(config)).codec_id == config["id"]
    actual = open_refs(write_refs(vds, fmt, tmp_path), {"remote_protocol": "file"}, **RAW)
    np.testing.assert_array_equal(actual["0"].values, tifffile.imread(path), strict=True)


def v2_filtered_store(path: Path) -> None:
    """Zarr v2 arrays with filters (numcodecs delta and fixedscaleoffset) and order F."""
    group = zarr.open_group(path, mode="w", zarr_format=2)

    def create(name: str, dtype: str, shape: tuple[int, ...], **kwargs: Any) -> None:
        dims = ["y", "x", "z"][: len(shape)]
        array = group.create_array(
            name,
            shape=shape,
            chunks=(4, 3, 2)[: len(shape)],
            dtype=dtype,
            attributes={"_ARRAY_DIMENSIONS": dims},
            **kwargs,
        )
        n = int(np.prod(shape))
        array[...] = (np.arange(n) * 7919 % 10007 - 5000).astype(dtype).reshape(shape) / (
            8 if np.dtype(dtype).kind == "f" else 1
        )

    create("delta", ">i8", (7, 5), filters=[numcodecs.Delta(dtype=">i8")])
    create(
        "scaled",
        "f8",
        (7, 5),
        filters=[numcodecs.FixedScaleOffset(offset=0, scale=8, dtype="f8", astype="i2")],
        compressors=numcodecs.Blosc(cname="lz4", shuffle=numcodecs.Blosc.AUTOSHUFFLE),
    )
    create("fortran", "<u2", (7, 5, 3), order="F", compressors=numcodecs.Zlib(level=1))
    create(
        "delta_fortran",
        "<i4",
        (7, 5),
        order="F",
        filters=[numcodecs.Delta(dtype="<i4"), numcodecs.Delta(dtype="<i4")],
        compressors=None,
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_zarr_v2_filters_and_fortran_order_read_back_as_zarr(fmt: str, tmp_path: Path) -> None:
    """Through ZarrParser (filters as array->array codecs, order F as a transpose) and back: the
    same v2 dtype, order and filters (then the compressor) as the store's own .zarray."""
    path = tmp_path / "filtered.zarr"
    v2_filtered_store(path)
    vds = vcube.open_virtual_dataset(path, parser=ZarrParser())
    refs = to_kerchunk(vds)["refs"]
    for name in vds.data_vars:
        written = json.loads(str(refs[f"{name}/.zarray"]))
        original = json.loads((path / str(name) / ".zarray").read_text())
        assert written["dtype"] == original["dtype"]
        assert written["order"] == original["order"]
        assert [c["id"] for c in chain(written)] == [c["id"] for c in chain(original)]
    actual = open_refs(write_refs(vds, fmt, tmp_path), {"remote_protocol": "file"}, **RAW)
    with xr.open_zarr(path, consolidated=False, chunks=None, **RAW) as expected:
        xr.testing.assert_identical(actual, expected.load())
        for name, var in expected.variables.items():
            assert actual[name].dtype == var.dtype, name


def test_v3_imagecodecs_filters_see_the_transposed_big_endian_chunk(tmp_path: Path) -> None:
    """An imagecodecs filter after a reversing transpose and before a big-endian `bytes` codec
    gets the chunk's shape as transposed and the dtype in the stored byte order."""
    path = tmp_path / "v3.zarr"
    data = (np.arange(7 * 6 * 5, dtype="i4").reshape(7, 6, 5) * 7919 % 10007) - 5000
    array = zarr.create_array(
        path,
        shape=data.shape,
        chunks=(4, 3, 2),
        dtype="i4",
        filters=[TransposeCodec(order=(2, 1, 0)), Delta(axis=-1), Xor(axis=-2)],
        serializer=BytesCodec(endian="big"),
        compressors=[ZstdCodec(level=1)],
        dimension_names=["z", "y", "x"],
    )
    array[...] = data
    vds = vcube.open_virtual_dataset(path.parent / path.name, parser=ZarrParser())
    name = next(iter(vds.data_vars))
    zarray = json.loads(str(to_kerchunk(vds)["refs"][f"{name}/.zarray"]))
    assert (zarray["dtype"], zarray["order"]) == (">i4", "F")
    delta, xor, zstd = zarray["filters"]
    assert delta == {
        "id": "imagecodecs_delta",
        "axis": -1,
        "dist": 1,
        "shape": [2, 3, 4],
        "dtype": ">i4",
    }
    assert (xor["id"], xor["shape"], xor["dtype"]) == ("imagecodecs_xor", [2, 3, 4], ">i4")
    assert zstd["id"] == "zstd"
    actual = open_refs(to_kerchunk(vds), {"remote_protocol": "file"}, **RAW)
    np.testing.assert_array_equal(actual[name].values, data, strict=True)


def test_identity_transpose_is_order_c() -> None:
    zarray = json.loads(
        to_kerchunk(synthetic(1, 1, codecs=[TransposeCodec(order=(0,)), BytesCodec()]))["refs"][
            "v/.zarray"
        ]
    )
    assert zarray["order"] == "C"
    assert zarray["filters"] is None


def test_sharded_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sharded.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=3)
    array = group.create_array(
        "s", shape=(8, 8), chunks=(2, 2), shards=(4, 4), dtype="i4", dimension_names=["y", "x"]
    )
    array[...] = np.arange(64, dtype="i4").reshape(8, 8)
    group.create_array("plain", shape=(8,), chunks=(4,), dtype="i4", dimension_names=["y"])[...] = 1
    vds = vcube.open_virtual_dataset(path, parser=ZarrParser())
    with pytest.raises(UnsupportedFeatureError, match=r"variable 's' is sharded.*Icechunk"):
        to_kerchunk(vds)
    refs = to_kerchunk(vds.drop_vars(["s"]))["refs"]  # what the message says to do
    assert "s/.zarray" not in refs
    assert "plain/.zarray" in refs


@pytest.mark.parametrize(
    ("codecs", "match"),
    [
        ([TransposeCodec(order=(1, 0, 2)), BytesCodec()], r"axis order \(1, 0, 2\).*Kerchunk"),
        (
            [Delta(), TransposeCodec(order=(2, 1, 0)), BytesCodec()],
            r"'transpose' \(after another array codec\).*Kerchunk",
        ),
        ([ScaleOffset(offset=1, scale=2), BytesCodec()], r"'scale_offset'.*Kerchunk"),
        ([Bitshuffle()], r"'imagecodecs_bitshuffle' .*needs \['itemsize'\]"),
    ],
)
def test_array_codecs_without_v2_form_are_refused(codecs: list[Codec], match: str) -> None:
    manifest = ChunkManifest.from_arrays(
        paths=np.full((1, 1, 1), "/f.bin"),
        offsets=np.zeros((1, 1, 1)),
        lengths=np.full((1, 1, 1), 96),
    )
    info = array_metadata(
        shape=(2, 3, 4),
        dtype=np.dtype("<i4"),
        chunks=(2, 3, 4),
        codecs=codecs,
        dimension_names=["a", "b", "c"],
    )
    vds = xr.Dataset({"v": xr.Variable(("a", "b", "c"), ManifestArray(info, manifest))})
    with pytest.raises(UnsupportedFeatureError, match=match) as err:
        to_kerchunk(vds)
    assert "'v'" in str(err.value)


# -- errors --------------------------------------------------------------------------------------


def test_unknown_format_names_the_allowed_ones() -> None:
    with pytest.raises(UnsupportedFormatError, match="'dict', 'json', 'parquet'") as info:
        to_kerchunk(synthetic(1, 1), "refs.zarr", format="zarr")  # type: ignore[call-overload]
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, VcubeError)


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_file_formats_need_a_path(fmt: str) -> None:
    with pytest.raises(UnsupportedFormatError, match="filepath"):
        to_kerchunk(synthetic(1, 1), format=fmt)  # type: ignore[call-overload]


def test_record_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormatError, match="record_size"):
        to_kerchunk(synthetic(1, 1), tmp_path / "r.parq", format="parquet", record_size=0)


def test_no_virtual_variables_warns_and_writes_inline(tmp_path: Path) -> None:
    loaded = xr.Dataset({"a": ("x", np.arange(3, dtype="i2"))}, attrs={"title": "t"})
    with pytest.warns(NoVirtualVariablesWarning, match="no virtual variables"):
        refs = to_kerchunk(loaded)
    actual = open_refs(refs, {"remote_protocol": "file"})
    xr.testing.assert_identical(actual, loaded)


def test_object_store_url_without_registered_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match="s3://nowhere"):
        to_kerchunk(synthetic(1, 1), "s3://nowhere/refs.json", format="json")


def test_fill_value_that_zarr_v2_cannot_keep_apart_warns() -> None:
    manifest = ChunkManifest.from_arrays(paths=["/f.nc", ""], offsets=[0, 0], lengths=[16, 0])
    info = array_metadata(
        shape=(8,),
        dtype=np.dtype("<i4"),
        chunks=(4,),
        fill_value=0,
        dimension_names=["x"],
    )
    variable = xr.Variable(("x",), ManifestArray(info, manifest), attrs={"_FillValue": -1})
    vds = xr.Dataset({"v": variable})
    with pytest.warns(KerchunkFillValueWarning, match="missing chunks read as -1"):
        refs = to_kerchunk(vds)
    assert json.loads(refs["refs"]["v/.zarray"])["fill_value"] == -1


def test_fsspec_opens_the_json_file(tmp_path: Path) -> None:
    path = write("chunked_zlib_shuffle", tmp_path)
    to_kerchunk(vcube.open_virtual_dataset(path), tmp_path / "r.json", format="json")
    fs = fsspec.filesystem("reference", fo=str(tmp_path / "r.json"), remote_protocol="file")
    assert (
        fs.cat("air/.zarray")
        == json.dumps(
            json.loads(to_kerchunk(vcube.open_virtual_dataset(path))["refs"]["air/.zarray"]),
            separators=(",", ":"),
        ).encode()
    )
