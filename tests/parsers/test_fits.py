"""The FITS parser over files written by astropy: raw values read back through the references
equal astropy's unscaled read (`do_not_scale_image_data=True`), and CF-decoded values equal
astropy's scaled read, through the ManifestStore, Kerchunk and Icechunk."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from conformance import (
    assert_conformant,
    assert_conformant_s3,
    icechunk_repo,
    read_kerchunk,
    read_store,
)
from docs_examples import python_blocks, run_docs
from numpy.dtypes import StringDType

import vcube
from vcube import (
    ManifestStore,
    NotVirtualizableError,
    UnsupportedFeatureError,
    UnsupportedFormatError,
    VcubeError,
)
from vcube.manifests.manifest import INLINE
from vcube.parsers.fits import HEADER_READ, FITSParser
from vcube.readers import ReadOptions
from vcube.registry import normalize_url
from vcube.writers.icechunk import to_icechunk
from vcube.writers.kerchunk import to_kerchunk

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from s3_server import S3Server

RNG = np.random.default_rng(7)


def write(path: Path, *hdus: Any) -> Path:
    """`hdus` after an empty primary HDU (or as they are, when the first is a PrimaryHDU)."""
    if not hdus or not isinstance(hdus[0], fits.PrimaryHDU):
        hdus = (fits.PrimaryHDU(), *hdus)
    fits.HDUList(list(hdus)).writeto(path)
    return path


def expected_attrs(header: Any) -> dict[str, Any]:
    """The attributes the docs promise: cards by keyword (first of repeats), COMMENT / HISTORY
    joined by newlines, blank keywords left out, undefined as None, CF scaling and fill."""
    attrs: dict[str, Any] = {}
    for key in header:
        if key in ("COMMENT", "HISTORY", "") or key in attrs:
            continue
        value = header[key]
        if isinstance(value, fits.card.Undefined):
            value = None
        elif isinstance(value, complex):
            value = [value.real, value.imag]
        attrs[key] = value
    for key in ("COMMENT", "HISTORY"):
        if key in header:
            attrs[key] = "\n".join(header[key])
    if header.get("BSCALE", 1) != 1:
        attrs["scale_factor"] = float(header["BSCALE"])
    if header.get("BZERO", 0) != 0:
        attrs["add_offset"] = float(header["BZERO"])
    if "BLANK" in header and header["BITPIX"] > 0:
        attrs["_FillValue"] = header["BLANK"]
    return attrs


def dims(name: str, ndim: int) -> tuple[str, ...]:
    return tuple(f"{name}_naxis{ndim - j}" for j in range(ndim))


def expected_raw(path: Path, names: dict[int, str]) -> xr.Dataset:
    """astropy's unscaled values of the HDUs `names` (index -> array name)."""
    variables = {}
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        for index, name in names.items():
            hdu = hdul[index]
            raw = np.asarray(hdu.data)
            raw = raw.astype(raw.dtype.newbyteorder("="))
            variables[name] = xr.Variable(
                dims(name, raw.ndim), raw, attrs=expected_attrs(hdu.header)
            )
        primary = hdul[0]
        attrs = expected_attrs(primary.header) if primary.header["NAXIS"] == 0 else {}
    return xr.Dataset(variables, attrs=attrs)


def astropy_scaled(path: Path, index: int) -> np.ndarray[Any, Any]:
    with fits.open(path) as hdul:
        return np.array(hdul[index].data)


def assert_decodes_as_astropy(decoded: xr.Dataset, path: Path, names: dict[int, str]) -> None:
    """CF-decoded values equal astropy's scaled values. Where astropy scales (BSCALE / BZERO,
    the unsigned conventions) xarray decodes to float64: JSON attributes carry no float32."""
    for index, name in names.items():
        expected = astropy_scaled(path, index)
        actual = decoded[name].values
        with fits.open(path) as hdul:
            header = hdul[index].header
        scaled = header.get("BSCALE", 1) != 1 or header.get("BZERO", 0) != 0
        assert actual.dtype == (np.float64 if scaled else expected.dtype.newbyteorder("=")), name
        np.testing.assert_array_equal(actual, expected, err_msg=name)


# -- images of every BITPIX, astropy's unsigned conventions included ---------------------------

DTYPES = ["float32", "float64", "int16", "int32", "int64", "uint8", "uint16", "uint32", "int8"]


def sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    kind = np.dtype(dtype)
    if kind.kind == "f":
        values = RNG.standard_normal(shape).astype(dtype)
        values.flat[0] = np.nan
        return values
    info = np.iinfo(kind)
    values = RNG.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    values.flat[:2] = [info.min, info.max]
    return values


@pytest.mark.parametrize("dtype", DTYPES)
def test_primary_image_every_dtype(dtype: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = write(data / "x.fits", fits.PrimaryHDU(sample(dtype, (5, 7))))
    expected = expected_raw(path, {0: "PRIMARY"})
    vds = assert_conformant(path, expected, FITSParser(), tmp_path)
    assert vds["PRIMARY"].dims == ("PRIMARY_naxis2", "PRIMARY_naxis1")
    store = ManifestStore.from_virtual_dataset(vds)
    decoded = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None).load()
    assert_decodes_as_astropy(decoded, path, {0: "PRIMARY"})


def test_unsigned_16_bit_convention(tmp_path: Path) -> None:
    """BITPIX=16, BZERO=32768: the stored int16 are referenced raw; decoding adds the offset
    once, giving astropy's uint16 values (as float64)."""
    values = np.array([[0, 1, 32767], [32768, 65534, 65535]], dtype=np.uint16)
    path = write(tmp_path / "u.fits", fits.ImageHDU(values, name="U16"))
    raw = read_store(ManifestStore.from_virtual_dataset(vcube.open_virtual_dataset(path)))
    assert raw["U16"].dtype == np.int16
    np.testing.assert_array_equal(raw["U16"].values, values.astype(np.int32) - 32768)
    assert raw["U16"].attrs["add_offset"] == 32768.0
    decoded = xr.open_zarr(
        ManifestStore.from_virtual_dataset(vcube.open_virtual_dataset(path)),
        zarr_format=3,
        consolidated=False,
        chunks=None,
    ).load()
    assert astropy_scaled(path, 1).dtype == np.uint16
    np.testing.assert_array_equal(decoded["U16"].values, values)
    np.testing.assert_array_equal(decoded["U16"].values.astype(np.uint16), values)


# -- files of several HDUs ---------------------------------------------------------------------


def write_multi(path: Path) -> Path:
    """An empty primary with a rich header, two SCI/ERR pairs (EXTVER 1 and 2), a uint8 mask
    and an unnamed int16 extension."""
    primary = fits.PrimaryHDU()
    header = primary.header
    header["OBJECT"] = "M31"
    header["EXPTIME"] = 12.5
    header["FLAG"] = True
    header["UNDEF"] = None
    header["CPLX"] = 1 + 2j
    header["LONGSTR"] = "a long value " * 12
    header["HIERARCH ESO DET CHIP"] = "abc"
    header.append(("DUP", 1))
    header.append(("DUP", 2))
    header["COMMENT"] = "first comment"
    header["COMMENT"] = "second comment"
    header["HISTORY"] = "made by astropy"
    header.append(("", "a blank keyword card"))
    hdus = [primary]
    for ver in (1, 2):
        sci = fits.ImageHDU(sample("float32", (6, 4)), name="SCI", ver=ver)
        sci.header["BUNIT"] = "electron/s"
        hdus += [sci, fits.ImageHDU(sample("float32", (6, 4)), name="ERR", ver=ver)]
    hdus += [fits.ImageHDU(sample("uint8", (6, 4)), name="MASK")]
    hdus += [fits.ImageHDU(sample("int16", (3, 2)))]
    return write(path, *hdus)


MULTI_NAMES = {1: "SCI_1", 2: "ERR_1", 3: "SCI_2", 4: "ERR_2", 5: "MASK", 6: "HDU6"}


def test_multi_extension_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = write_multi(data / "multi.fits")
    expected = expected_raw(path, MULTI_NAMES)
    vds = assert_conformant(path, expected, FITSParser(), tmp_path)
    assert list(vds.data_vars) == list(MULTI_NAMES.values())
    assert vds.attrs["OBJECT"] == "M31"
    assert vds.attrs["DUP"] == 1
    assert vds.attrs["UNDEF"] is None
    assert vds.attrs["CPLX"] == [1.0, 2.0]
    assert vds.attrs["LONGSTR"] == ("a long value " * 12).rstrip()
    assert vds.attrs["ESO DET CHIP"] == "abc"
    assert vds.attrs["COMMENT"] == "first comment\nsecond comment"
    assert "" not in vds.attrs
    assert vds["SCI_2"].attrs["EXTVER"] == 2


@pytest.mark.s3
def test_multi_extension_file_over_s3(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    path = write_multi(tmp_path / "multi.fits")
    expected = expected_raw(path, MULTI_NAMES)
    parser = FITSParser()
    assert_conformant_s3(path, expected, parser, s3_server, s3_bucket)
    assert parser.stats.requests == 2  # head and one range: the headers of a small file


def test_hdu_selection_and_drop(tmp_path: Path) -> None:
    path = write_multi(tmp_path / "multi.fits")
    vds = vcube.open_virtual_dataset(path, parser=FITSParser(hdus=[1, "err_2"]))
    assert list(vds.data_vars) == ["SCI_1", "ERR_2"]
    vds = vcube.open_virtual_dataset(path, parser=FITSParser(hdus="sci"))  # EXTNAME, any case
    assert list(vds.data_vars) == ["SCI_1", "SCI_2"]
    vds = vcube.open_virtual_dataset(path, drop_variables=["SCI_1", "HDU6"])
    assert list(vds.data_vars) == ["ERR_1", "SCI_2", "ERR_2", "MASK"]
    with pytest.raises(VcubeError, match=r"no HDU 'NOPE' \(the file has HDUs 0 'PRIMARY', 1"):
        FITSParser(hdus=["NOPE"])(str(path))


# -- BSCALE / BZERO and BLANK --------------------------------------------------------------------


def write_scaled(path: Path) -> Path:
    """int16 pixels with BSCALE / BZERO (exact in float32), one with BLANK too, and an unscaled
    integer image with BLANK."""
    raw = np.array([[-32768, -3, 0], [5, 7, 32767]], dtype=np.int16)
    scaled = fits.ImageHDU(raw, name="SCALED")
    scaled.header["BSCALE"] = 0.5
    scaled.header["BZERO"] = 10.0
    blanked = fits.ImageHDU(raw, name="BLANKED")
    blanked.header["BSCALE"] = 0.25
    blanked.header["BZERO"] = -4.0
    blanked.header["BLANK"] = -32768
    plain = fits.ImageHDU(np.array([[1, -999, 3]], dtype=np.int32), name="PLAIN")
    plain.header["BLANK"] = -999
    return write(path, scaled, blanked, plain)


SCALED_NAMES = {1: "SCALED", 2: "BLANKED", 3: "PLAIN"}


def decoded_expectation(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """astropy's scaled values; for the unscaled BLANK image (which astropy leaves as integers)
    the CF reading: NaN where the pixel is BLANK."""
    out = {name: astropy_scaled(path, i) for i, name in SCALED_NAMES.items()}
    plain = out["PLAIN"].astype(np.float64)
    plain[out["PLAIN"] == -999] = np.nan
    out["PLAIN"] = plain
    return out


def assert_scaled_once(decoded: xr.Dataset, path: Path) -> None:
    for name, expected in decoded_expectation(path).items():
        np.testing.assert_array_equal(decoded[name].values, expected, err_msg=name)
    assert np.isnan(decoded["BLANKED"].values[0, 0])


def test_scaled_and_blank_images(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = write_scaled(data / "scaled.fits")
    vds = assert_conformant(path, expected_raw(path, SCALED_NAMES), FITSParser(), tmp_path)
    attrs = vds["BLANKED"].attrs
    assert (attrs["scale_factor"], attrs["add_offset"], attrs["_FillValue"]) == (0.25, -4.0, -32768)
    store = ManifestStore.from_virtual_dataset(vds)
    decoded = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None).load()
    assert_scaled_once(decoded, path)


def test_scaling_applied_once_through_kerchunk_and_icechunk(tmp_path: Path) -> None:
    """Decoded with xarray's defaults after each round trip: astropy's scaled values, BSCALE /
    BZERO applied once, BLANK masked."""
    data = tmp_path / "data"
    data.mkdir()
    path = write_scaled(data / "scaled.fits")
    unsigned = write(data / "u16.fits", fits.ImageHDU(np.arange(6, dtype=np.uint16) * 13000))
    for file, check in ((path, assert_scaled_once), (unsigned, assert_unsigned)):
        vds = vcube.open_virtual_dataset(file)
        refs = to_kerchunk(vds)
        kerchunk = read_kerchunk(refs, decode=True)
        check(kerchunk, file)
        repo = icechunk_repo(data, tmp_path / f"repo-{file.stem}")
        session = repo.writable_session("main")
        to_icechunk(vds, session.store)
        session.commit("fits")
        store = repo.readonly_session("main").store
        check(xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None).load(), file)


def assert_unsigned(decoded: xr.Dataset, path: Path) -> None:
    expected = astropy_scaled(path, 1)
    assert expected.dtype == np.uint16
    np.testing.assert_array_equal(decoded["HDU1"].values, expected)


def test_inexact_scaling_is_xarrays_float64_arithmetic(tmp_path: Path) -> None:
    """With a BSCALE float32 cannot hold, astropy's float32 result is rounded; xarray computes
    raw * scale_factor + add_offset in float64."""
    raw = np.arange(-50, 50, dtype=np.int16).reshape(10, 10)
    hdu = fits.ImageHDU(raw, name="S")
    hdu.header["BSCALE"] = 0.1
    hdu.header["BZERO"] = 3.7
    path = write(tmp_path / "s.fits", hdu)
    store = ManifestStore.from_virtual_dataset(vcube.open_virtual_dataset(path))
    decoded = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None).load()
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        stored = np.asarray(hdul[1].data).astype(np.float64)
    np.testing.assert_array_equal(decoded["S"].values, stored * 0.1 + 3.7)
    np.testing.assert_allclose(decoded["S"].values, astropy_scaled(path, 1), rtol=1e-6)


# -- cubes and chunks ------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_cube(chunk_rows: int | None, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = write(data / "cube.fits", fits.ImageHDU(sample("float64", (5, 4, 3)), name="CUBE"))
    parser = FITSParser(chunk_rows=chunk_rows)
    vds = assert_conformant(path, expected_raw(path, {1: "CUBE"}), parser, tmp_path)
    assert vds["CUBE"].dims == ("CUBE_naxis3", "CUBE_naxis2", "CUBE_naxis1")
    assert vds["CUBE"].data.chunks == ((5, 4, 3) if chunk_rows is None else (2, 4, 3))


def test_chunk_rows_splits_at_offsets(tmp_path: Path) -> None:
    """10 rows in chunks of 3: the last chunk of FIRST reads on into the next HDU (values zarr
    drops); LAST fills its blocks exactly, so its partial last chunk is read and held inline."""
    data = tmp_path / "data"
    data.mkdir()
    first = fits.ImageHDU(sample("int32", (10, 7)), name="FIRST")
    last = fits.ImageHDU(sample("float32", (10, 720)), name="LAST")  # 2880 bytes a row
    path = write(data / "split.fits", first, last)
    parser = FITSParser(chunk_rows=3)
    vds = assert_conformant(path, expected_raw(path, {1: "FIRST", 2: "LAST"}), parser, tmp_path)
    with fits.open(path) as hdul:
        starts = [hdul[i].fileinfo()["datLoc"] for i in (1, 2)]
    manifest = vds["FIRST"].data.manifest
    assert manifest.grid_shape == (4, 1)
    np.testing.assert_array_equal(manifest.offsets.ravel(), starts[0] + np.arange(4) * 3 * 7 * 4)
    np.testing.assert_array_equal(manifest.lengths.ravel(), [84] * 4)
    assert not (manifest.path_ids == INLINE).any()
    manifest = vds["LAST"].data.manifest
    assert (manifest.path_ids.ravel() == INLINE).tolist() == [False, False, False, True]
    np.testing.assert_array_equal(manifest.offsets.ravel()[:3], starts[1] + np.arange(3) * 8640)


def test_chunk_bytes_picks_whole_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "x.fits", fits.ImageHDU(sample("int16", (10, 7)), name="A"))
    for chunk_bytes, chunks in ((50, (3, 7)), (1, (1, 7)), (10**6, (10, 7))):  # rows of 14 bytes
        vds = vcube.open_virtual_dataset(path, parser=FITSParser(chunk_bytes=chunk_bytes))
        assert vds["A"].data.info.chunks == chunks


@pytest.mark.parametrize(
    "options",
    [
        {"chunk_rows": 0},
        {"chunk_rows": 2.5},
        {"chunk_bytes": True},
        {"chunk_rows": 2, "chunk_bytes": 8},
    ],
)
def test_chunk_options_are_checked(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="chunk_"):
        FITSParser(**options)


# -- requests ----------------------------------------------------------------------------------


def test_big_data_sections_are_never_read(tmp_path: Path) -> None:
    """Three HDUs of 2 MiB: a head request and one range per header, about 64 KiB each."""
    hdus = [fits.ImageHDU(np.zeros((1024, 512), dtype=np.float32), name=f"B{i}") for i in range(3)]
    path = write(tmp_path / "big.fits", fits.PrimaryHDU(np.ones((512, 1024), "f4")), *hdus)
    for strategy in ("ranges", "blocks"):
        parser = FITSParser(read_options=ReadOptions(strategy=strategy))
        vds = vcube.open_virtual_dataset(path, parser=parser)
        assert list(vds.data_vars) == ["PRIMARY", "B0", "B1", "B2"]
        assert parser.stats.requests == 1 + 4
        assert parser.stats.bytes <= 4 * HEADER_READ


def test_long_header_is_read_in_few_requests(tmp_path: Path) -> None:
    hdu = fits.ImageHDU(np.zeros((300, 300), dtype=np.int16), name="LONG")
    for i in range(1500):  # 1500 cards: 120 kB of header
        hdu.header[f"KEY{i}"] = i
    path = write(tmp_path / "long.fits", hdu)
    parser = FITSParser()
    vds = vcube.open_virtual_dataset(path, parser=parser)
    assert vds["LONG"].attrs["KEY1499"] == 1499
    assert parser.stats.requests <= 3  # head, the first 64 KiB, the rest of the header


# -- unsupported HDUs ------------------------------------------------------------------------------


def compressed(name: str = "COMP") -> fits.CompImageHDU:
    return fits.CompImageHDU(sample("int16", (20, 30)), name=name, compression_type="RICE_1")


def table(name: str = "EVENTS") -> fits.BinTableHDU:
    columns = [
        fits.Column(name="TIME", format="D", unit="s", array=np.arange(4) * 0.5),
        fits.Column(name="PHA", format="2J", array=np.arange(8).reshape(4, 2)),
        fits.Column(name="NAME", format="5A", array=np.array(["ab", "cde", "f", "ghijk"])),
    ]
    return fits.BinTableHDU.from_columns(columns, name=name)


def ascii_table() -> fits.TableHDU:
    column = fits.Column(name="X", format="E10.3", array=np.array([1.5, 2.5]))
    return fits.TableHDU.from_columns([column], name="ASCII")


@pytest.mark.parametrize(
    ("make", "name", "problem"),
    [
        (compressed, "COMP", "tile-compressed image (ZCMPTYPE = 'RICE_1')"),
        (table, "EVENTS", "table HDU (XTENSION = 'BINTABLE')"),
        (ascii_table, "ASCII", "table HDU (XTENSION = 'TABLE')"),
    ],
)
def test_compressed_and_table_hdus_raise(
    make: Callable[[], Any], name: str, problem: str, tmp_path: Path
) -> None:
    path = write(tmp_path / "x.fits", fits.ImageHDU(np.zeros((2, 2), "f4"), name="IMG"), make())
    message = f"{normalize_url(path)}: HDU 2 ('{name}') is a {problem}"
    with pytest.raises(UnsupportedFeatureError, match=re.escape(message)):
        FITSParser()(str(path))
    with pytest.raises(UnsupportedFeatureError, match=re.escape(f"drop_variables=['{name}']")):
        vcube.open_virtual_dataset(path)
    # Left out, or not selected, the rest of the file is read.
    assert list(vcube.open_virtual_dataset(path, drop_variables=[name]).data_vars) == ["IMG"]
    assert list(vcube.open_virtual_dataset(path, parser=FITSParser(hdus=["IMG"]))) == ["IMG"]


def test_random_groups_raise(tmp_path: Path) -> None:
    data = fits.GroupData(
        np.zeros((3, 2, 2), dtype=np.float32), parnames=["a"], pardata=[np.zeros(3)], bitpix=-32
    )
    path = tmp_path / "g.fits"
    fits.GroupsHDU(data).writeto(path)
    with pytest.raises(UnsupportedFeatureError, match=r"HDU 0 \('PRIMARY'\) holds random groups"):
        FITSParser()(str(path))


def test_small_compressed_image_and_table_can_be_loaded(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = write(data / "x.fits", compressed(), table())
    with fits.open(path) as hdul:
        image = np.array(hdul[1].data)
        events = hdul[2].data
        columns = {f"EVENTS.{c}": np.array(events[c]) for c in ("TIME", "PHA", "NAME")}
        image_attrs = expected_attrs(hdul[1].header)
    expected = xr.Dataset(
        {
            "COMP": (dims("COMP", 2), image.astype(image.dtype.newbyteorder("=")), image_attrs),
            "EVENTS.TIME": ("EVENTS_row", columns["EVENTS.TIME"], {"units": "s"}),
            "EVENTS.PHA": (("EVENTS_row", "EVENTS.PHA_dim1"), columns["EVENTS.PHA"]),
            # zarr reads variable-length strings as numpy's StringDType
            "EVENTS.NAME": ("EVENTS_row", columns["EVENTS.NAME"].astype(StringDType())),
        },
        attrs=expected_attrs(fits.getheader(path, 0)),
    )
    expected["EVENTS.TIME"] = expected["EVENTS.TIME"].astype(np.float64)
    expected["EVENTS.PHA"] = expected["EVENTS.PHA"].astype(np.int32)
    parser = FITSParser(load_unsupported=True)
    vds = assert_conformant(path, expected, parser, tmp_path, loadable_variables=["COMP", "EVENTS"])
    assert isinstance(vds["COMP"].data, np.ndarray)
    # Asking to load by name, with the parser detected, goes through loadable_variables.
    vds = vcube.open_virtual_dataset(path, loadable_variables=["COMP"], drop_variables=["EVENTS"])
    np.testing.assert_array_equal(vds["COMP"].values, image)


def test_loading_is_refused_above_max_load_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "x.fits", compressed())
    parser = FITSParser(load_unsupported=["COMP"], max_load_bytes=1000)
    with pytest.raises(NotVirtualizableError, match=r"HDU 1 \('COMP'\).*max_load_bytes=1000"):
        parser(str(path))


def test_variable_length_table_column_is_refused(tmp_path: Path) -> None:
    column = fits.Column(
        name="VAR", format="PJ()", array=np.array([np.arange(2), np.arange(3)], dtype=object)
    )
    path = write(tmp_path / "x.fits", fits.BinTableHDU.from_columns([column], name="V"))
    with pytest.raises(UnsupportedFeatureError, match=r"column 'VAR' holds variable-length"):
        FITSParser(load_unsupported=True)(str(path))


# -- damaged files ---------------------------------------------------------------------------------


def no_end(data: bytes) -> bytes:
    return data.replace(b"END" + b" " * 77, b"XND" + b" " * 77)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: b"JUNK" + d[4:], "not a FITS file at byte 0"),
        (lambda d: d[:300], "has no END card"),
        (lambda d: d[:2000], "truncated file: the header ends at byte 2880"),
        (lambda d: d[:6000], "truncated file: the data section ends at byte"),
        (lambda d: d[:-3000], "truncated file"),
        (no_end, "has no END card"),
        (lambda d: d + b"garbage" + bytes(2873), "no FITS extension header (HDU 3)"),
        (lambda d: b"", "not a FITS file"),
    ],
)
def test_damaged_files_raise_unsupported_format(
    damage: Callable[[bytes], bytes], problem: str, tmp_path: Path
) -> None:
    good = write(
        tmp_path / "good.fits",
        fits.ImageHDU(np.zeros((40, 40), "f4"), name="A"),
        fits.ImageHDU(np.zeros((40, 40), "f4"), name="B"),
    )
    bad = tmp_path / "bad.fits"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(UnsupportedFormatError, match=re.escape(normalize_url(bad))) as info:
        FITSParser()(str(bad))
    assert problem in str(info.value)


def test_unparsable_card_is_kept_as_its_text(tmp_path: Path) -> None:
    path = write(tmp_path / "x.fits", fits.ImageHDU(np.arange(4, dtype="f4"), name="A"))
    data = path.read_bytes()
    at = data.index(b"EXTNAME ")
    cards = b"BROKEN  = 'unterminated".ljust(80) + b"BADNUM  = 1.2.3 / x".ljust(80)
    end = data[at + 80 : at + 160]
    path.write_bytes(data[:at] + cards + end + data[at + 240 :])  # EXTNAME out, padding shorter
    vds = vcube.open_virtual_dataset(path)
    assert vds["HDU1"].attrs["BROKEN"] == "'unterminated"
    assert vds["HDU1"].attrs["BADNUM"] == "1.2.3"


def test_empty_image_hdus_are_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path / "x.fits", fits.ImageHDU(name="EMPTY"), fits.ImageHDU(np.ones(3), name="A")
    )
    vds = vcube.open_virtual_dataset(path)
    assert list(vds.data_vars) == ["A"]
    assert vds.attrs["NAXIS"] == 0  # the empty primary's header


def test_trailing_zero_padding_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path / "x.fits", fits.ImageHDU(np.arange(4, dtype="f4"), name="A"))
    path.write_bytes(path.read_bytes() + bytes(2880))
    assert list(vcube.open_virtual_dataset(path).data_vars) == ["A"]


def test_docs_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(python_blocks("fits.md")) == 2
    monkeypatch.chdir(tmp_path)
    run_docs("fits.md")
