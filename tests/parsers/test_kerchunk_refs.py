"""The Kerchunk reference parsers (JSON and Parquet) over references written by kerchunk itself,
by fsspec's `LazyReferenceMapper`, by vcube's writer and by hand after the spec: values read back
through the virtual references with plain xarray / zarr equal what the original library reads,
and what fsspec's `ReferenceFileSystem` reads from the same references."""

from __future__ import annotations

import base64
import json
import re
import shutil
from typing import TYPE_CHECKING, Any, Literal

import kerchunk.df
import kerchunk.fits
import kerchunk.hdf
import kerchunk.netCDF3
import kerchunk.tiff
import netCDF4
import numcodecs
import numpy as np
import pytest
import tifffile
import xarray as xr
import zarr
from astropy.io import fits
from conformance import RAW, assert_conformant, assert_conformant_s3, assert_same, read_store
from docs_examples import run_docs
from numpy.dtypes import StringDType
from zarr.storage import LocalStore

import vcube
from vcube import ManifestStore, UnsupportedFeatureError, UnsupportedFormatError, VcubeError
from vcube.errors import SourceNotFoundError
from vcube.parsers import detect_parser
from vcube.parsers.kerchunk import KerchunkJSONParser, KerchunkParquetParser
from vcube.registry import ObjectStoreRegistry, normalize_url
from vcube.writers.kerchunk import to_kerchunk

if TYPE_CHECKING:
    from pathlib import Path

    from s3_server import S3Server


# -- helpers -----------------------------------------------------------------------------------


def write_json(refs: dict[str, Any], path: Path) -> Path:
    """References as a JSON file (kerchunk's FITS and TIFF translators hold bytes values)."""

    def text(value: Any) -> Any:
        return value.decode() if isinstance(value, bytes) else value

    if "refs" in refs:
        refs = {**refs, "refs": {k: text(v) for k, v in refs["refs"].items()}}
    else:
        refs = {k: text(v) for k, v in refs.items()}
    path.write_text(json.dumps(refs))
    return path


def read_fsspec(fo: Any, **options: Any) -> xr.Dataset:
    """What xarray reads through fsspec's ReferenceFileSystem (the references' own reader)."""
    return xr.open_dataset(
        "reference://",
        engine="zarr",
        zarr_format=2,
        consolidated=False,
        storage_options={"fo": fo, **options},
        chunks=None,
        **RAW,
    ).load()


def read_vcube(url: Any, parser: Any, registry: Any = None, **kwargs: Any) -> xr.Dataset:
    ds: xr.Dataset = read_store(parser(str(url), registry), **kwargs)
    return ds


def netcdf4_expected(path: Path, group: str | None = None) -> xr.Dataset:
    """netCDF4's raw reading; zarr reads variable-length strings as numpy's StringDType."""
    ds = xr.open_dataset(path, engine="netcdf4", group=group, **RAW).load()
    for name, var in ds.variables.items():
        if var.dtype.kind in "OU":
            ds[name] = var.astype(StringDType())
    return ds


def write_netcdf4(path: Path) -> Path:
    """Compressed chunks, an unlimited dimension, big-endian and fill values, a string variable,
    a scalar, a partly written variable (missing chunks) and a nested group."""
    with netCDF4.Dataset(path, "w") as d:
        d.createDimension("time", None)
        d.createDimension("x", 4)
        time = d.createVariable("time", "f8", ("time",))
        time.units = "days since 2000-01-01"
        temp = d.createVariable(
            "temp",
            "f4",
            ("time", "x"),
            zlib=True,
            shuffle=True,
            chunksizes=(1, 2),
            fill_value=np.float32(-999),
        )
        temp.units = "K"
        d.createVariable("big", ">i4", ("x",), endian="big")[:] = [5, -6, 7, 8]
        d.createVariable("count", "i2", ("x",), fill_value=np.int16(-1))[:] = [1, 2, 3, 4]
        d.createVariable("name", str, ("x",))[:] = np.array(["a", "bb", "ccc", ""], dtype=object)
        # kerchunk gives a scalar the netCDF default fill as Zarr fill_value (so xarray shows a
        # _FillValue that netCDF4 does not): an explicit one keeps the two readings identical.
        d.createVariable("scalar", "i8", (), fill_value=np.int64(-1))[...] = 42
        partial = d.createVariable("partial", "f8", ("x",), chunksizes=(1,), fill_value=-1.5)
        partial[1] = 3.25
        inner = d.createGroup("inner")
        inner.createVariable("deep", "u2", ("x",), zlib=True)[:] = [9, 8, 7, 6]
        inner.title = "inner group"
        time[:] = [0.0, 1.0, 2.5]
        temp[:] = np.arange(12, dtype="f4").reshape(3, 4)
        d.title = "a NetCDF4 file"
        d.version = np.int32(3)
    return path


def kerchunk_netcdf4(folder: Path, *, inline_threshold: int = 0) -> tuple[Path, Path]:
    """A NetCDF4 file and its references by kerchunk's HDF5 translator, side by side."""
    folder.mkdir(exist_ok=True)
    nc = write_netcdf4(folder / "data.nc")
    refs = kerchunk.hdf.SingleHdf5ToZarr(str(nc), inline_threshold=inline_threshold).translate()
    return nc, write_json(refs, folder / "refs.json")


# -- references written by kerchunk --------------------------------------------------------------


@pytest.mark.parametrize("inline_threshold", [0, 300])
def test_kerchunk_hdf_references_read_as_netcdf4(inline_threshold: int, tmp_path: Path) -> None:
    nc, refs = kerchunk_netcdf4(tmp_path / "data", inline_threshold=inline_threshold)
    vds = assert_conformant(refs, netcdf4_expected(nc), KerchunkJSONParser(), tmp_path)
    assert vds["temp"].data.manifest.nrefs == 6
    assert vds["partial"].data.manifest.nrefs == 1  # HDF5 never wrote the other chunks
    inner = read_vcube(refs, KerchunkJSONParser(group="inner"))
    assert_same(inner, netcdf4_expected(nc, group="inner"))
    # the same attributes and values as fsspec reads from the references themselves
    assert_same(read_vcube(refs, KerchunkJSONParser()), read_fsspec(str(refs)))


def test_kerchunk_netcdf3_references_read_as_netcdf4(tmp_path: Path) -> None:
    nc = tmp_path / "classic.nc"
    with netCDF4.Dataset(nc, "w", format="NETCDF3_64BIT_OFFSET") as d:
        d.createDimension("time", None)
        d.createDimension("x", 3)
        d.createVariable("time", "f8", ("time",))[:] = [0.0, 0.5]
        v = d.createVariable("v", "f4", ("time", "x"), fill_value=np.float32(-1))
        v[:] = np.arange(6, dtype="f4").reshape(2, 3)
        d.createVariable("fixed", "i2", ("x",))[:] = [1, -2, 3]
        d.title = "classic"
    refs = kerchunk.netCDF3.NetCDF3ToZarr(str(nc), inline_threshold=0).translate()
    path = write_json(refs, tmp_path / "refs.json")
    assert_conformant(path, netcdf4_expected(nc), KerchunkJSONParser(), tmp_path)


def test_kerchunk_fits_references_read_as_astropy(tmp_path: Path) -> None:
    image = np.arange(12, dtype=">i2").reshape(3, 4)
    hdu = fits.PrimaryHDU(image)
    hdu.header["OBJECT"] = "M31"
    hdu.writeto(tmp_path / "image.fits")
    refs = kerchunk.fits.process_file(str(tmp_path / "image.fits"))  # spec version 0
    path = write_json(refs, tmp_path / "refs.json")
    with fits.open(tmp_path / "image.fits") as f:
        values = f[0].data.astype("i2")
    expected = xr.Dataset({"PRIMARY": (("y", "x"), values)})
    vds = assert_conformant(path, expected, KerchunkJSONParser(), tmp_path, attrs=False)
    assert vds["PRIMARY"].attrs["OBJECT"] == "M31"
    assert_same(read_vcube(path, KerchunkJSONParser()), read_fsspec(str(path)))


def test_kerchunk_tiff_root_array_becomes_a_named_variable(tmp_path: Path) -> None:
    image = np.arange(64 * 48, dtype="u2").reshape(64, 48)
    tifffile.imwrite(
        tmp_path / "image.tif", image, tile=(16, 16), compression="zlib", metadata=None
    )
    refs = kerchunk.tiff.tiff_to_zarr(str(tmp_path / "image.tif"))  # a root array
    path = write_json(refs, tmp_path / "refs.json")
    expected = xr.Dataset({"image": (("Y", "X"), tifffile.imread(tmp_path / "image.tif"))})
    parser = KerchunkJSONParser(root_array_name="image")
    assert_conformant(path, expected, parser, tmp_path, attrs=False, detect=False)
    fsspec_values = zarr.open_array(
        zarr.storage.FsspecStore.from_url("reference://", storage_options={"fo": str(path)}),
        mode="r",
        zarr_format=2,
    )[...]
    np.testing.assert_array_equal(read_vcube(path, parser)["image"].values, fsspec_values)
    assert "data" in read_vcube(path, KerchunkJSONParser())  # the default name


# -- references written by hand after the spec ---------------------------------------------------


VALUES = np.arange(40, dtype="<f4").reshape(10, 4)
HEADER = 16  # bytes before the values in blob.bin


def write_blob(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "blob.bin"
    path.write_bytes(b"\xff" * HEADER + VALUES.tobytes())
    return path


def zarray(shape: list[int], chunks: list[int], dtype: str, **extra: Any) -> str:
    doc = {
        "zarr_format": 2,
        "shape": shape,
        "chunks": chunks,
        "dtype": dtype,
        "fill_value": None,
        "order": "C",
        "filters": None,
        "compressor": None,
        **extra,
    }
    return json.dumps(doc)


def dims(*names: str, **attrs: Any) -> str:
    return json.dumps({"_ARRAY_DIMENSIONS": list(names), **attrs})


def version1_refs(url: str) -> dict[str, Any]:
    """`v` fully generated (`gen`), `w` by templated references; `url` is the folder of the data
    as the references name it (a URL, an absolute path or a relative one)."""
    return {
        "version": 1,
        "templates": {"root": url, "name": "blob.bin"},
        "gen": [
            {
                "key": "v/{{i}}.0",
                "url": "{{root}}/{{name}}",
                "offset": "{{ 16 + i * 32 }}",
                "length": "32",
                "dimensions": {"i": {"stop": 5}},
            },
            {
                "key": "u/{{ j // 2 }}.{{ j % 2 }}",
                "url": "{{root}}/blob.bin",
                "offset": "{{16 + j * 8}}",
                "length": "{{4 * 2}}",
                "dimensions": {"j": [0, 1, 2, 3]},
            },
        ],
        "refs": {
            ".zgroup": json.dumps({"zarr_format": 2}),
            ".zattrs": json.dumps({"title": "by hand"}),
            "v/.zarray": zarray([10, 4], [2, 4], "<f4"),
            "v/.zattrs": dims("y", "x", units="m"),
            "w/.zarray": zarray([4], [4], "<f4"),
            "w/.zattrs": dims("x"),
            "w/0": ["{{root}}/{{name}}", HEADER + 32, 16],
            "u/.zarray": zarray([2, 4], [1, 2], "<f4"),  # rows 0 and 1 of the blob, in pairs
            "u/.zattrs": dims("y2", "x"),
        },
    }


def hand_expected() -> xr.Dataset:
    return xr.Dataset(
        {
            "v": (("y", "x"), VALUES, {"units": "m"}),
            "w": (("x",), VALUES[2]),
            "u": (("y2", "x"), VALUES[:2]),
        },
        attrs={"title": "by hand"},
    )


@pytest.mark.parametrize("how", ["absolute", "file-url", "relative"])
def test_version1_templates_and_gen(how: str, tmp_path: Path) -> None:
    data = write_blob(tmp_path / "data").parent
    root = {"absolute": str(data), "file-url": data.as_uri(), "relative": "."}[how]
    path = write_json(version1_refs(root), data / "refs.json")
    assert_conformant(path, hand_expected(), KerchunkJSONParser(), tmp_path)
    if how != "relative":  # fsspec resolves relative paths against the working directory
        fsspec = read_fsspec(str(path), simple_templates=False)
        assert_same(read_vcube(path, KerchunkJSONParser()), fsspec)


def test_relative_paths_against_fs_root(tmp_path: Path) -> None:
    data = write_blob(tmp_path / "elsewhere" / "sub").parent.parent
    (tmp_path / "refs").mkdir()
    path = write_json(version1_refs("sub"), tmp_path / "refs" / "refs.json")
    with pytest.raises(SourceNotFoundError, match=re.escape("refs/sub/blob.bin")):
        read_vcube(path, KerchunkJSONParser())  # resolved next to the references by default
    assert_same(read_vcube(path, KerchunkJSONParser(fs_root=str(data))), hand_expected())
    assert_same(read_vcube(path, KerchunkJSONParser(fs_root=data.as_uri())), hand_expected())
    store = KerchunkJSONParser(fs_root=str(data))(str(path))
    assert store.group.arrays["v"].manifest.paths == (normalize_url(data / "sub" / "blob.bin"),)


def test_version0_inline_whole_file_and_dict_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spec version 0 with metadata as JSON objects, inline chunks as base64 and as plain text,
    and a chunk referencing a whole file (`[url]`)."""
    write_blob(tmp_path)
    (tmp_path / "row9.bin").write_bytes(VALUES[8:].tobytes())
    refs = {
        ".zgroup": {"zarr_format": 2},
        "v/.zarray": json.loads(zarray([10, 4], [2, 4], "<f4", fill_value=-1.0)),
        "v/.zattrs": {"_ARRAY_DIMENSIONS": ["y", "x"]},
        "v/0.0": "base64:" + base64.b64encode(VALUES[:2].tobytes()).decode(),
        "v/1.0": [str(tmp_path / "blob.bin"), HEADER + 32, 32],
        "v/2.0": [str(tmp_path / "blob.bin"), HEADER + 64, 32],
        "v/4.0": ["row9.bin"],
        "letters/.zarray": zarray([6], [3], "|u1", fill_value=0),
        "letters/.zattrs": dims("n"),
        "letters/0": "abc",
        "letters/1": "base64:" + base64.b64encode(b"xyz").decode(),
    }
    path = write_json(refs, tmp_path / "refs.json")
    values = VALUES.copy()
    values[6:8] = -1.0  # chunk 3 is missing: fill value
    expected = xr.Dataset(
        {
            "v": (("y", "x"), values, {"_FillValue": -1.0}),
            "letters": (("n",), np.frombuffer(b"abcxyz", dtype="u1"), {"_FillValue": 0}),
        }
    )
    parser = KerchunkJSONParser()
    vds = assert_conformant(path, expected, parser, tmp_path)
    manifest = vds["v"].data.manifest
    assert manifest.nrefs == 4
    assert manifest[4, 0].length == 32  # the size of row9.bin, from a HEAD request
    monkeypatch.chdir(tmp_path)  # fsspec resolves relative paths against the working directory
    assert_same(read_vcube(path, parser), read_fsspec(str(path)))


def new_store(tmp_path: Path, *, zarr_format: Literal[2, 3]) -> tuple[Path, zarr.Group]:
    """An empty local Zarr group, titled after its format, for a test to fill and reference."""
    store = tmp_path / "store.zarr"
    group = zarr.open_group(LocalStore(store), mode="w", zarr_format=zarr_format)
    group.attrs["title"] = f"zarr v{zarr_format}"
    return store, group


def referenced(
    store: Path, tmp_path: Path, *, zarr_format: Literal[2, 3]
) -> tuple[Path, xr.Dataset]:
    """A JSON file of references to every file of `store`, and what xarray reads from the store
    itself."""
    path = write_json(store_refs(store), tmp_path / "refs.json")
    expected = xr.open_zarr(store, zarr_format=zarr_format, consolidated=False, chunks=None, **RAW)
    return path, expected.load()


@pytest.mark.parametrize("separator", [".", "/"])
def test_zarr_v2_store_files_as_references(separator: str, tmp_path: Path) -> None:
    store, group = new_store(tmp_path, zarr_format=2)
    values = np.arange(60, dtype=">i4").reshape(6, 10)
    a = group.create_array(
        "a",
        shape=values.shape,
        chunks=(4, 3),
        dtype=values.dtype,
        compressors=numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE),
        filters=[numcodecs.Delta(dtype=">i4")],
        chunk_key_encoding={"name": "v2", "separator": separator},
        fill_value=-7,
        attributes={"_ARRAY_DIMENSIONS": ["y", "x"], "note": "delta, blosc"},
    )
    a[:] = values
    b = group.create_array(
        "b",
        shape=(5,),
        chunks=(2,),
        dtype="f8",
        compressors=numcodecs.Zlib(level=1),
        attributes={"_ARRAY_DIMENSIONS": ["t"]},
    )
    b[:2] = [1.5, 2.5]  # chunks 1 and 2 never written
    path, expected = referenced(store, tmp_path, zarr_format=2)
    actual = read_vcube(path, KerchunkJSONParser())
    assert_same(actual, expected)
    assert_same(actual, read_fsspec(str(path)))


def test_zarr_v3_references(tmp_path: Path) -> None:
    store, group = new_store(tmp_path, zarr_format=3)
    values = np.arange(24, dtype="i4").reshape(4, 6)
    a = group.create_array(
        "a",
        shape=(4, 6),
        chunks=(2, 4),
        dtype="i4",
        dimension_names=["y", "x"],
        compressors=zarr.codecs.ZstdCodec(level=1),
        attributes={"units": "1"},
    )
    a[:] = values
    s = group.create_array("s", shape=(), dtype="f8", fill_value=np.nan)
    s[...] = 2.5
    path, expected = referenced(store, tmp_path, zarr_format=3)
    assert_same(read_vcube(path, KerchunkJSONParser()), expected)


def store_refs(store: Path) -> dict[str, Any]:
    """Kerchunk references to every file of a local Zarr store: documents inline, chunks as
    whole byte ranges of their files."""
    refs: dict[str, Any] = {}
    for file in sorted(p for p in store.rglob("*") if p.is_file()):
        key = str(file.relative_to(store))
        if file.name in (".zgroup", ".zarray", ".zattrs", "zarr.json"):
            refs[key] = file.read_text()
        else:
            refs[key] = [str(file), 0, file.stat().st_size]
    return {"version": 1, "refs": refs}


def test_group_and_drop_variables(tmp_path: Path) -> None:
    _, refs = kerchunk_netcdf4(tmp_path / "data")
    vds = vcube.open_virtual_dataset(refs, drop_variables=["temp", "name"])
    assert "temp" not in vds
    assert "name" not in vds
    assert "count" in vds
    store = KerchunkJSONParser(drop_variables=["deep"])(str(refs))
    assert store.group.groups["inner"].arrays == {}
    with pytest.raises(VcubeError, match="no group 'nope'"):
        KerchunkJSONParser(group="nope")(str(refs))


# -- Parquet --------------------------------------------------------------------------------------


def test_parquet_written_by_vcube(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    nc = write_netcdf4(data / "data.nc")
    vds = vcube.open_virtual_dataset(nc)
    parquet = data / "refs.parquet"
    # small records (several per array), categorical paths, inline coordinates, missing chunks
    to_kerchunk(vds, parquet, format="parquet", record_size=5, categorical_threshold=2)
    assert (parquet / "temp" / "refs.1.parq").exists()
    assert_conformant(parquet, netcdf4_expected(nc), KerchunkParquetParser(), tmp_path)
    parsed = KerchunkParquetParser()(str(parquet)).group.arrays
    assert parsed["partial"].manifest.nrefs == 1
    assert parsed["time"].manifest.is_inline
    for name in ("temp", "partial"):
        assert parsed[name].manifest.equals(vds[name].data.manifest)


@pytest.mark.parametrize("categorical_threshold", [1, 100])
def test_parquet_written_by_fsspec_lazy_reference_mapper(
    categorical_threshold: int, tmp_path: Path
) -> None:
    """kerchunk's `refs_to_dataframe` writes through fsspec's `LazyReferenceMapper`: records
    padded to `record_size`, inline chunks in `raw`, missing chunks as null rows."""
    nc, refs = kerchunk_netcdf4(tmp_path / "data", inline_threshold=100)
    parquet = tmp_path / "data" / "refs.parq"
    kerchunk.df.refs_to_dataframe(
        str(refs), str(parquet), record_size=4, categorical_threshold=categorical_threshold
    )
    vds = assert_conformant(parquet, netcdf4_expected(nc), KerchunkParquetParser(), tmp_path)
    assert vds["partial"].data.manifest.nrefs == 1
    from_json = dict(KerchunkJSONParser()(str(refs)).group.walk())
    from_parquet = dict(KerchunkParquetParser()(str(parquet)).group.walk())
    assert from_json.keys() == from_parquet.keys()
    for name, array in from_json.items():
        if isinstance(array, vcube.ManifestArray):
            assert from_parquet[name].manifest.equals(array.manifest), name  # type: ignore[union-attr]
    # fsspec's LazyReferenceMapper fails on the nested group: compare with the JSON's reading
    assert_same(read_vcube(parquet, KerchunkParquetParser()), read_fsspec(str(refs)))


def test_parquet_reads_only_the_records_of_the_arrays_asked_for(tmp_path: Path) -> None:
    nc, refs = kerchunk_netcdf4(tmp_path / "data")
    parquet = tmp_path / "refs.parq"
    kerchunk.df.refs_to_dataframe(str(refs), str(parquet), record_size=4)
    (parquet / "temp" / "refs.0.parq").write_bytes(b"not parquet")  # never read when dropped
    shutil.rmtree(parquet / "name")
    with pytest.raises(UnsupportedFormatError, match=r"temp/refs\.0\.parq: not a Kerchunk"):
        KerchunkParquetParser()(str(parquet))
    parser = KerchunkParquetParser(drop_variables=["temp", "name"])
    actual = read_vcube(parquet, parser)
    assert_same(actual, netcdf4_expected(nc).drop_vars(["temp", "name"]))
    assert not [u for u in parser.stats.urls if "/temp/" in u or "/name/" in u]
    assert parser.stats.requests == 1 + 6  # .zmetadata and one record of each array read
    inner = KerchunkParquetParser(group="inner")
    assert_same(read_vcube(parquet, inner), netcdf4_expected(nc, group="inner"))
    assert {u.rsplit("/", 2)[-2] for u in inner.stats.urls} == {"refs.parq", "deep"}


def test_parquet_with_missing_records_and_relative_paths(tmp_path: Path) -> None:
    write_blob(tmp_path / "folder")
    expanded = read_fsspec_refs(version1_refs("folder"))  # relative URLs: folder/blob.bin
    parquet = tmp_path / "refs.parq"
    kerchunk.df.refs_to_dataframe(expanded, str(parquet), record_size=2)
    (parquet / "v" / "refs.1.parq").unlink()  # chunks 2 and 3 of v: missing
    expected = hand_expected()
    expected["v"][4:8] = 0.0  # the default fill value
    parser = KerchunkParquetParser()
    store = parser(str(parquet))
    manifest = store.group.arrays["v"].manifest
    assert manifest.paths == (normalize_url(tmp_path / "folder" / "blob.bin"),)
    assert manifest.nrefs == 3
    assert_same(read_store(store), expected)


def read_fsspec_refs(refs: dict[str, Any]) -> dict[str, Any]:
    """Version 1 references expanded to version 0 by fsspec (gen and templates)."""
    from fsspec.implementations.reference import ReferenceFileSystem

    fs = ReferenceFileSystem(refs, simple_templates=False)
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in fs.references.items()}


# -- S3 -------------------------------------------------------------------------------------------


@pytest.mark.s3
def test_json_and_parquet_over_s3(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    nc, refs = kerchunk_netcdf4(tmp_path / "data")
    expected = netcdf4_expected(nc)
    assert_conformant_s3(refs, expected, KerchunkJSONParser(), s3_server, s3_bucket)
    parquet = tmp_path / "parq"
    kerchunk.df.refs_to_dataframe(str(refs), str(parquet), record_size=4)
    assert_conformant_s3(parquet, expected, KerchunkParquetParser(), s3_server, s3_bucket)


@pytest.mark.s3
def test_relative_references_resolve_in_the_bucket(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    blob = write_blob(tmp_path)
    path = write_json(version1_refs("."), tmp_path / "refs.json")
    s3_server.upload(blob, s3_bucket, "cube/blob.bin")
    url = s3_server.upload(path, s3_bucket, "cube/refs.json")
    registry = ObjectStoreRegistry({f"s3://{s3_bucket}": s3_server.store(s3_bucket)})
    store = KerchunkJSONParser()(url, registry)
    assert store.group.arrays["v"].manifest.paths == (f"s3://{s3_bucket}/cube/blob.bin",)
    assert_same(read_store(store), hand_expected())


# -- detection and errors -------------------------------------------------------------------------


def test_detected_by_first_byte_and_by_zmetadata(tmp_path: Path) -> None:
    _, refs = kerchunk_netcdf4(tmp_path / "data")
    parquet = tmp_path / "refs.parq"
    kerchunk.df.refs_to_dataframe(str(refs), str(parquet))
    registry = ObjectStoreRegistry()
    assert isinstance(detect_parser(normalize_url(refs), registry), KerchunkJSONParser)
    assert isinstance(detect_parser(normalize_url(parquet), registry), KerchunkParquetParser)


def good_refs() -> dict[str, Any]:
    return {
        ".zgroup": '{"zarr_format": 2}',
        "v/.zarray": zarray([4], [2], "<f4"),
        "v/.zattrs": dims("x"),
        "v/0": ["blob.bin", 16, 8],
    }


BAD_JSON = {
    "binary": (b"\x89HDF\r\n\x1a\n", UnsupportedFormatError, "not JSON"),
    "truncated": (b'{"version": 1, "refs": {', UnsupportedFormatError, "not JSON"),
    "list": (b"[1, 2]", UnsupportedFormatError, "is a list, not an object"),
    "no zarr metadata": (b'{"a": "b"}', UnsupportedFormatError, "no Zarr metadata"),
    "zarr.json": (
        b'{"zarr_format": 3, "node_type": "group"}',
        UnsupportedFormatError,
        "Zarr metadata document",
    ),
    "parquet .zmetadata": (
        b'{"metadata": {}, "record_size": 10}',
        UnsupportedFormatError,
        "KerchunkParquetParser",
    ),
    "version 2": (b'{"version": 2, "refs": {}}', UnsupportedFormatError, "version 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_not_references(case: str, tmp_path: Path) -> None:
    data, error, message = BAD_JSON[case]
    path = tmp_path / "refs.json"
    path.write_bytes(data)
    with pytest.raises(error, match=re.escape(normalize_url(path)) + ".*" + message):
        KerchunkJSONParser()(str(path))


BAD_REFS: dict[str, tuple[dict[str, Any], type[Exception], str]] = {
    "missing .zarray": (
        {"w/0": ["blob.bin", 0, 4]},
        UnsupportedFormatError,
        r"under 'w'.*no w/.zarray",
    ),
    ".zattrs without .zarray": (
        {"v/.zarray": None},
        UnsupportedFormatError,
        r"v/.zattrs describes an array, but there is no v/.zarray",
    ),
    "two-element reference": (
        {"v/1": ["blob.bin", 24]},
        UnsupportedFormatError,
        r"malformed reference at chunk '1': \['blob.bin', 24\]",
    ),
    "string offset": (
        {"v/1": ["blob.bin", "24", 8]},
        UnsupportedFormatError,
        "malformed reference at chunk '1'",
    ),
    "negative length": (
        {"v/1": ["blob.bin", 24, -8]},
        UnsupportedFormatError,
        "malformed reference at chunk '1'",
    ),
    "number as a reference": ({"v/1": 12}, UnsupportedFormatError, "malformed reference"),
    "null URL": ({"v/1": [None, 24, 8]}, UnsupportedFormatError, "null URL"),
    "bad base64": ({"v/1": "base64:@@@"}, UnsupportedFormatError, "not valid base64"),
    "key outside the grid": (
        {"v/7": ["blob.bin", 24, 8]},
        UnsupportedFormatError,
        r"'7' is outside its chunk grid \(2,\)",
    ),
    "key not a chunk key": (
        {"v/0.1": ["blob.bin", 24, 8]},
        UnsupportedFormatError,
        r"'0.1' is not a chunk key",
    ),
    "invalid .zarray": (
        {"v/.zarray": '{"shape": [4]}'},
        UnsupportedFormatError,
        "invalid Zarr v2 metadata",
    ),
    "unknown codec": (
        {"v/.zarray": zarray([4], [2], "<f4", compressor={"id": "no-such-codec"})},
        UnsupportedFeatureError,
        "codec 'no-such-codec' has no Zarr v3 codec",
    ),
    "object dtype": (
        {"v/.zarray": zarray([4], [2], "|O", filters=[{"id": "json2"}])},
        UnsupportedFeatureError,
        "object dtype",
    ),
    "jinja filter": (
        {
            "version": 1,
            "gen": [
                {"key": "v/{{i}}", "url": "{{ 'x' | upper }}", "dimensions": {"i": {"stop": 2}}}
            ],
        },
        UnsupportedFeatureError,
        "is not supported",
    ),
    "gen offset without length": (
        {
            "version": 1,
            "gen": [{"key": "v/{{i}}", "url": "a", "offset": "0", "dimensions": {"i": [0]}}],
        },
        UnsupportedFormatError,
        "'offset' and 'length' together",
    ),
    "function template": (
        {"version": 1, "templates": {"f": "{{c}}"}},
        UnsupportedFeatureError,
        "not a plain string",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REFS))
def test_malformed_references(case: str, tmp_path: Path) -> None:
    write_blob(tmp_path)
    changes, error, message = BAD_REFS[case]
    refs: dict[str, Any] = good_refs()
    if "version" in changes:
        doc = {**changes, "refs": refs}
    else:
        refs.update(changes)
        doc = {"version": 1, "refs": {k: v for k, v in refs.items() if v is not None}}
    path = tmp_path / "refs.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(error, match=re.escape(normalize_url(path)) + ".*" + message):
        KerchunkJSONParser()(str(path))


def test_whole_file_reference_to_a_missing_file(tmp_path: Path) -> None:
    refs = {"version": 1, "refs": {**good_refs(), "v/1": ["gone.bin"]}}
    path = write_json(refs, tmp_path / "refs.json")
    with pytest.raises(
        SourceNotFoundError, match=re.escape("gone.bin (referenced as a whole file by")
    ):
        KerchunkJSONParser()(str(path))


def test_parquet_errors(tmp_path: Path) -> None:
    _, refs = kerchunk_netcdf4(tmp_path)
    with pytest.raises(UnsupportedFormatError, match="a file, not a Kerchunk Parquet directory"):
        KerchunkParquetParser()(str(refs))
    with pytest.raises(SourceNotFoundError, match="no Kerchunk Parquet references here"):
        KerchunkParquetParser()(str(tmp_path / "nowhere"))
    consolidated = tmp_path / "consolidated"
    consolidated.mkdir()
    (consolidated / ".zmetadata").write_text('{"zarr_consolidated_format": 1, "metadata": {}}')
    with pytest.raises(UnsupportedFormatError, match="'record_size'"):
        KerchunkParquetParser()(str(consolidated))


def test_manifest_store_serves_parsed_references_to_zarr(tmp_path: Path) -> None:
    """The store a parser returns is a plain Zarr v3 store: zarr opens the nested group."""
    nc, refs = kerchunk_netcdf4(tmp_path / "data")
    store = KerchunkJSONParser()(str(refs))
    assert isinstance(store, ManifestStore)
    deep = zarr.open_array(store, path="inner/deep", mode="r", zarr_format=3)
    with netCDF4.Dataset(nc) as d:
        np.testing.assert_array_equal(deep[...], d["inner"]["deep"][...])


def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_docs("kerchunk-input.md")
