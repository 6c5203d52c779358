"""The TIFF parser over files written by tifffile: values read back through the references with
plain zarr / xarray / fsspec / icechunk equal what tifffile reads, for every layout (strips, tiles,
contiguous and separate samples, several pages), compression and predictor vcube supports."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import imagecodecs.numcodecs
import numpy as np
import pytest
import tifffile
import xarray as xr
from conformance import (
    assert_conformant,
    assert_conformant_s3,
    assert_same,
    read_icechunk,
    read_store,
)

import vcube
from vcube import ManifestStore, UnsupportedFeatureError, UnsupportedFormatError, VcubeError
from vcube.errors import NotVirtualizableError
from vcube.manifests.manifest import INLINE
from vcube.parsers import detect_parser
from vcube.parsers.tiff import TIFFParser
from vcube.readers import ReadOptions
from vcube.registry import ObjectStoreRegistry, normalize_url

if TYPE_CHECKING:
    from pathlib import Path

    from s3_server import S3Server

# Zarr v2 readers find the LZW / PackBits / predictor / image codec filters by id
imagecodecs.numcodecs.register_codecs()

RNG = np.random.default_rng(42)
GRAY = RNG.integers(0, 60000, (50, 40), dtype="u2")  # 50 rows: strips of 16 leave a short one
RGB = RNG.integers(0, 256, (50, 40, 3), dtype="u1")
FLOAT = (RNG.random((50, 40)) * 1000 - 500).astype("f4")
SEPARATE = RNG.integers(-30000, 30000, (3, 50, 40), dtype="i2")

# name -> (data, tifffile.imwrite keywords): layouts and bytes->bytes codecs.
CASES: dict[str, tuple[np.ndarray[Any, Any], dict[str, Any]]] = {
    "one_strip": (GRAY, {}),
    "strips_short_last": (GRAY, {"rowsperstrip": 16}),
    "strips_exact": (GRAY[:48], {"rowsperstrip": 16}),
    "tiles": (GRAY, {"tile": (16, 16)}),
    "adobe_deflate": (GRAY, {"compression": "zlib", "rowsperstrip": 16}),
    "deflate": (GRAY, {"compression": "deflate", "tile": (16, 32)}),
    "lzw": (GRAY, {"compression": "lzw", "rowsperstrip": 16}),
    "zstd": (GRAY, {"compression": "zstd", "tile": (32, 16)}),
    "packbits": (RGB, {"compression": "packbits", "rowsperstrip": 16, "photometric": "rgb"}),
    "lzma": (FLOAT, {"compression": "lzma"}),
    "big_endian": (FLOAT, {"byteorder": ">", "rowsperstrip": 16}),
    "big_endian_zlib": (GRAY, {"byteorder": ">", "compression": "zlib", "tile": (16, 16)}),
    "bigtiff": (GRAY, {"bigtiff": True, "compression": "zlib", "tile": (16, 16)}),
    "bigtiff_big_endian": (GRAY, {"bigtiff": True, "byteorder": ">", "rowsperstrip": 16}),
    "rgb_contig": (RGB, {"photometric": "rgb", "rowsperstrip": 16}),
    "rgb_contig_tiles": (RGB, {"photometric": "rgb", "tile": (16, 16), "compression": "zlib"}),
    "planar_separate": (
        SEPARATE,
        {"planarconfig": "separate", "photometric": "minisblack", "rowsperstrip": 16},
    ),
    "planar_separate_tiles": (
        SEPARATE,
        {
            "planarconfig": "separate",
            "photometric": "minisblack",
            "tile": (16, 16),
            "compression": "zstd",
        },
    ),
}

# Predictors and image codecs: array->array / array->bytes codecs, Zarr v2 filters in Kerchunk.
ARRAY_CODEC_CASES: dict[str, tuple[np.ndarray[Any, Any], dict[str, Any]]] = {
    "predictor2": (GRAY, {"compression": "zlib", "predictor": 2, "rowsperstrip": 16}),
    "predictor2_rgb": (RGB, {"compression": "lzw", "predictor": 2, "photometric": "rgb"}),
    "predictor2_big_endian": (GRAY, {"compression": "zlib", "predictor": 2, "byteorder": ">"}),
    "predictor2_separate": (
        SEPARATE,
        {
            "compression": "zstd",
            "predictor": 2,
            "planarconfig": "separate",
            "photometric": "rgb",
            "tile": (16, 16),
        },
    ),
    "predictor3": (FLOAT, {"compression": "zlib", "predictor": 3, "rowsperstrip": 16}),
    "predictor3_big_endian": (FLOAT, {"compression": "zlib", "predictor": 3, "byteorder": ">"}),
    "predictor3_rgb_f8": (
        RNG.random((50, 40, 3)),
        {"compression": "zstd", "predictor": 3, "photometric": "rgb", "tile": (16, 16)},
    ),
    "predictor3_x2": (FLOAT, {"compression": "zlib", "predictor": 34894, "tile": (16, 16)}),
    "predictor3_x4": (FLOAT, {"compression": "lzw", "predictor": 34895, "rowsperstrip": 16}),
    "jpeg_rgb": (RGB, {"compression": "jpeg", "photometric": "rgb"}),
    "jpeg_rgb_tiles": (RGB, {"compression": "jpeg", "photometric": "rgb", "tile": (16, 16)}),
    "jpeg_rgb_strips": (
        RGB[:48],
        {"compression": "jpeg", "photometric": "rgb", "rowsperstrip": 16},
    ),
    "jpeg_gray": (RGB[..., 0].copy(), {"compression": "jpeg", "tile": (16, 32)}),
    "png": (RGB, {"compression": "png", "photometric": "rgb", "tile": (16, 16)}),
    "webp": (RGB, {"compression": "webp", "photometric": "rgb", "tile": (16, 16)}),
    "jpeg2000": (GRAY, {"compression": "jpeg2000", "tile": (16, 16)}),
    "jpegxl": (RGB, {"compression": "jpegxl", "photometric": "rgb", "tile": (16, 16)}),
    "jpegxr": (RGB, {"compression": "jpegxr", "photometric": "rgb", "tile": (16, 16)}),
}

GEO_TAGS: list[tuple[int, str, int, Any, bool]] = [
    (33550, "d", 3, (0.25, 0.25, 0.0), True),  # ModelPixelScale
    (33922, "d", 6, (0.0, 0.0, 0.0, 10.0, 50.0, 0.0), True),  # ModelTiepoint
    (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 2, 1025, 0, 1, 1, 2048, 0, 1, 4326), True),
    (34736, "d", 2, (6378137.0, 298.257223563), True),  # GeoDoubleParams
    (34737, "s", 0, "WGS 84|", True),  # GeoAsciiParams
    (42112, "s", 0, '<GDALMetadata><Item name="UNITS">m</Item></GDALMetadata>', True),
    (42113, "s", 0, "-9999", True),  # GDAL_NODATA
]


def write(directory: Path, name: str, data: np.ndarray[Any, Any], **kwargs: Any) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.tif"
    tifffile.imwrite(path, data, **kwargs)
    return path


def dims_of(page: tifffile.TiffPage | tifffile.TiffFrame) -> tuple[str, ...]:
    assert isinstance(page, tifffile.TiffPage)
    if page.samplesperpixel == 1:
        return ("y", "x")
    return ("y", "x", "sample") if page.planarconfig == 1 else ("sample", "y", "x")


def tifffile_dataset(path: Path) -> xr.Dataset:
    """Every page as tifffile reads it, named and dimensioned as the parser documents."""
    with tifffile.TiffFile(path) as tif:
        return xr.Dataset({str(i): (dims_of(p), p.asarray()) for i, p in enumerate(tif.pages)})


@pytest.mark.parametrize("case", CASES)
def test_conformance(case: str, tmp_path: Path) -> None:
    data, kwargs = CASES[case]
    path = write(tmp_path / "data", case, data, **kwargs)
    expected = tifffile_dataset(path)
    np.testing.assert_array_equal(expected["0"].values, tifffile.imread(path))
    assert_conformant(path, expected, TIFFParser(), tmp_path)


@pytest.mark.parametrize("case", ARRAY_CODEC_CASES)
def test_predictors_and_image_codecs(case: str, tmp_path: Path) -> None:
    data, kwargs = ARRAY_CODEC_CASES[case]
    path = write(tmp_path / "data", case, data, **kwargs)
    assert_conformant(path, tifffile_dataset(path), TIFFParser(), tmp_path)


def test_jpeg_decodes_as_tifffile_does(tmp_path: Path) -> None:
    """Lossy: the values differ from what was written, and equal tifffile's decoding."""
    path = write(tmp_path, "x", RGB, compression="jpeg", photometric="rgb", tile=(16, 16))
    vds = vcube.open_virtual_dataset(path, parser=TIFFParser())
    actual = read_store(ManifestStore.from_virtual_dataset(vds))["0"].values
    assert not np.array_equal(actual, RGB)
    np.testing.assert_array_equal(actual, tifffile.imread(path))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"compression": "zlib", "predictor": 2},
        {"compression": "lzw"},
        {"compression": "packbits"},
        {"compression": "zstd", "predictor": 3},
        {},
    ],
)
def test_short_last_strip_at_end_of_file_is_inlined(kwargs: dict[str, Any], tmp_path: Path) -> None:
    data = FLOAT if kwargs.get("predictor") == 3 else GRAY
    path = write(tmp_path, "x", data, rowsperstrip=16, **kwargs)
    store = TIFFParser()(str(path))
    manifest = store.group.arrays["0"].manifest
    assert manifest.grid_shape == (4, 1)
    assert manifest.path_ids[-1, 0] == INLINE  # 2 of 16 rows, re-encoded to a full chunk
    assert (manifest.path_ids[:-1] == 0).all()
    actual = read_store(store)
    np.testing.assert_array_equal(actual["0"].values, tifffile.imread(path))


def test_short_uncompressed_strip_before_more_data_is_referenced_in_full(tmp_path: Path) -> None:
    path = tmp_path / "x.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(GRAY, rowsperstrip=16)  # its last strip is followed by the next page
        tif.write(GRAY[:30], rowsperstrip=16)  # its last strip ends the file
    store = TIFFParser()(str(path))
    first, last = store.group.arrays["0"].manifest, store.group.arrays["1"].manifest
    assert (first.path_ids == 0).all()
    assert first.lengths[-1, 0] == 16 * 40 * 2  # the 2 rows and bytes of what follows
    assert last.path_ids[-1, 0] == INLINE
    expected = xr.Dataset({"0": (("y", "x"), GRAY), "1": (("y_1", "x"), GRAY[:30])})
    assert_same(read_store(store), expected)


def test_short_jpeg_strip_is_not_virtualizable(tmp_path: Path) -> None:
    path = write(tmp_path, "x", RGB, compression="jpeg", photometric="rgb", rowsperstrip=16)
    with pytest.raises(NotVirtualizableError, match=r"page 0: its last strip .* JPEG.* tiled"):
        TIFFParser()(str(path))


def test_pages_are_separate_arrays(tmp_path: Path) -> None:
    """Pages shaped like the first share its dimensions; the others get their index as suffix."""
    data = tmp_path / "data"
    data.mkdir()
    path = data / "x.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(GRAY, compression="zlib")
        tif.write(GRAY[::-1], tile=(16, 16))
        tif.write(GRAY[:20, :10], rowsperstrip=8)  # a thumbnail
        tif.write(RGB, photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        pages = [p.asarray() for p in tif.pages]
    expected = xr.Dataset(
        {
            "0": (("y", "x"), pages[0]),
            "1": (("y", "x"), pages[1]),
            "2": (("y_2", "x_2"), pages[2]),
            "3": (("y", "x", "sample"), pages[3]),  # the first page with samples
        }
    )
    assert_conformant(path, expected, TIFFParser(), tmp_path)
    selected = vcube.open_virtual_dataset(path, parser=TIFFParser(pages=[2, 3]))
    assert list(selected.data_vars) == ["2", "3"]
    assert selected["3"].dims == ("y_3", "x_3", "sample")  # the first selected page sets y, x
    dropped = vcube.open_virtual_dataset(path, parser=TIFFParser(), drop_variables=["1"])
    assert list(dropped.data_vars) == ["0", "2", "3"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"compression": "zlib", "rowsperstrip": 16},
        {"compression": "zlib", "predictor": 2, "tile": (16, 16)},
        {"rowsperstrip": 16},  # short last strips: referenced in full, the very last inlined
    ],
)
def test_stacked_pages(kwargs: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "data"
    frames = RNG.integers(0, 60000, (5, 50, 40), dtype="u2")
    path = write(data, "x", frames, **kwargs)
    expected = xr.Dataset({"0": (("page", "y", "x"), tifffile.imread(path))})
    assert expected["0"].shape == (5, 50, 40)
    if "predictor" in kwargs:
        vds = vcube.open_virtual_dataset(path, parser=TIFFParser(stack=True))
        assert_same(read_store(ManifestStore.from_virtual_dataset(vds)), expected)
        assert_same(read_icechunk(vds, data, tmp_path / "repo"), expected)
    else:
        assert_conformant(path, expected, TIFFParser(stack=True), tmp_path, detect=False)
    some = vcube.open_virtual_dataset(path, parser=TIFFParser(stack=True, pages=[3, 1]))
    actual = read_store(ManifestStore.from_virtual_dataset(some))
    np.testing.assert_array_equal(actual["3"].values, frames[[3, 1]])


def test_stacking_pages_of_other_layouts_fails(tmp_path: Path) -> None:
    path = tmp_path / "x.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(GRAY, compression="zlib")
        tif.write(GRAY, compression="lzw")
    with pytest.raises(UnsupportedFeatureError, match=r"page 1 cannot be stacked .* codecs"):
        TIFFParser(stack=True)(str(path))
    assert TIFFParser(stack=True, pages=[1])(str(path)).group.arrays["1"].shape == (1, 50, 40)


def test_missing_page_index(tmp_path: Path) -> None:
    path = write(tmp_path, "x", GRAY)
    with pytest.raises(VcubeError, match="no page 1; the file has pages 0 to 0"):
        TIFFParser(pages=[1])(str(path))


def test_geotiff_tags_are_attributes_and_nodata_the_fill_value(tmp_path: Path) -> None:
    path = write(
        tmp_path / "data", "geo", FLOAT, tile=(16, 16), compression="zlib", extratags=GEO_TAGS
    )
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags  # type: ignore[union-attr]
        attrs: dict[str, Any] = {
            tags[code].name: tags[code].value for code, *_ in GEO_TAGS if code in tags
        }
    assert len(attrs) == len(GEO_TAGS)
    attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()}
    expected = xr.Dataset(
        {"0": (("y", "x"), tifffile.imread(path), {**attrs, "_FillValue": np.float32(-9999)})}
    )
    vds = assert_conformant(path, expected, TIFFParser(), tmp_path)
    assert vds["0"].attrs["GDAL_NODATA"] == "-9999"
    assert vds["0"].attrs["ModelPixelScaleTag"] == [0.25, 0.25, 0.0]
    assert vds["0"].data.info.fill_value == -9999


def test_nodata_masks_when_decoded_and_fills_sparse_tiles(tmp_path: Path) -> None:
    def tiles() -> Any:
        for i in range(6):
            yield None if i in (1, 4) else np.full((16, 16), i, dtype="i2")

    path = tmp_path / "sparse.tif"
    tifffile.imwrite(
        path,
        tiles(),
        shape=(32, 48),
        dtype="i2",
        tile=(16, 16),
        compression="zlib",
        extratags=[(42113, "s", 0, "-99", True)],
    )
    store = TIFFParser()(str(path))
    assert store.group.arrays["0"].manifest.nrefs == 4
    raw = read_store(store)
    np.testing.assert_array_equal(raw["0"].values, tifffile.imread(path))  # -99 in the gaps
    decoded = xr.open_zarr(TIFFParser()(str(path)), zarr_format=3, consolidated=False).load()
    assert decoded["0"].dtype == np.float32
    assert np.isnan(decoded["0"].values[0, 16:32]).all()
    assert decoded["0"].values[0, 0] == 0


def test_nodata_outside_the_dtype_is_no_fill_value(tmp_path: Path) -> None:
    path = write(tmp_path, "x", RGB[..., 0].copy(), extratags=[(42113, "s", 0, "-9999", True)])
    array = TIFFParser()(str(path)).group.arrays["0"]
    assert "_FillValue" not in array.info.attributes
    assert array.info.attributes["GDAL_NODATA"] == "-9999"
    assert array.info.fill_value == 0


def test_only_the_ifds_are_read(tmp_path: Path) -> None:
    frames = RNG.integers(0, 60000, (4, 512, 512), dtype="u2")  # 2 MiB of pixels
    path = write(tmp_path, "x", frames, tile=(128, 128), photometric="minisblack")
    parser = TIFFParser(read_options=ReadOptions(strategy="ranges"))
    store = parser(str(path))
    assert len(store.group.arrays) == 4
    assert parser.stats.bytes < 2**14  # the IFDs and their offsets and byte counts
    blocks = TIFFParser()
    blocks(str(path))
    assert blocks.stats.requests <= 8  # head, then about one 64 KiB block per page


@pytest.mark.parametrize("magic", [b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"])
def test_detected_by_magic(magic: bytes, tmp_path: Path) -> None:
    path = write(
        tmp_path, "x", GRAY, byteorder="<" if magic[:2] == b"II" else ">", bigtiff=b"+" in magic
    )
    assert path.read_bytes()[:4] == magic
    assert isinstance(detect_parser(normalize_url(path), ObjectStoreRegistry()), TIFFParser)


# -- errors ------------------------------------------------------------------------------------


def test_unsupported_compression_names_it_the_page_and_the_url(tmp_path: Path) -> None:
    path = write(tmp_path, "x", FLOAT, compression="lerc")
    url = normalize_url(path)
    with pytest.raises(UnsupportedFeatureError, match=rf"{re.escape(url)}: page 0 .* LERC"):
        TIFFParser()(str(path))


def set_tag(path: Path, code: int, value: int) -> None:
    """Overwrite the (SHORT) value of a tag of the first IFD of a little-endian classic TIFF."""
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].tags[code].valueoffset  # type: ignore[union-attr]
    data = bytearray(path.read_bytes())
    data[offset : offset + 2] = value.to_bytes(2, "little")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("code", "name"), [(34661, "JBIG"), (60000, "60000")])
def test_unknown_compression_tag_value(code: int, name: str, tmp_path: Path) -> None:
    path = write(tmp_path, "x", GRAY, compression="zlib")
    set_tag(path, 259, code)
    with pytest.raises(UnsupportedFeatureError, match=rf"page 0 is compressed with {name}"):
        TIFFParser()(str(path))


def test_unsupported_predictor_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, "x", GRAY, compression="zlib", predictor=2)
    set_tag(path, 317, 34892)  # horizontal differencing every 2 samples: no imagecodecs codec
    with pytest.raises(UnsupportedFeatureError, match="predictor HORIZONTALX2 \\(34892\\)"):
        TIFFParser()(str(path))


def test_bilevel_pages_are_unsupported(tmp_path: Path) -> None:
    path = write(tmp_path, "x", GRAY > 30000)
    with pytest.raises(UnsupportedFeatureError, match="page 0 has 1-bit samples"):
        TIFFParser()(str(path))


@pytest.mark.parametrize("keep", [0, 3, 7, 100])
def test_truncated_header_raises_unsupported_format(keep: int, tmp_path: Path) -> None:
    path = write(tmp_path, "x", GRAY, tile=(16, 16))
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(UnsupportedFormatError, match=re.escape(normalize_url(path))):
        TIFFParser()(str(path))


def test_truncated_pixel_data_raises_unsupported_format(tmp_path: Path) -> None:
    path = write(tmp_path, "x", GRAY, compression="zlib", tile=(16, 16))
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size - 10])
    with pytest.raises(UnsupportedFormatError, match=r"page 0: .* past the end .* truncated"):
        TIFFParser()(str(path))


@pytest.mark.parametrize("head", [b"XX*\x00", b"II\x2b\x01", b"CDF\x01", b"\x89HDF\r\n\x1a\n"])
def test_wrong_magic_raises_unsupported_format(head: bytes, tmp_path: Path) -> None:
    path = write(tmp_path, "x", GRAY)
    path.write_bytes(head + path.read_bytes()[len(head) :])
    with pytest.raises(UnsupportedFormatError, match="not a TIFF file"):
        TIFFParser()(str(path))


# -- S3 ----------------------------------------------------------------------------------------


@pytest.mark.s3
def test_conformance_s3(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    path = write(tmp_path, "geo", GRAY, tile=(16, 16), compression="lzw")
    expected = tifffile_dataset(path)
    parser = TIFFParser()
    assert_conformant_s3(path, expected, parser, s3_server, s3_bucket)
    assert parser.stats.requests == 2  # head and one block with the IFD


@pytest.mark.s3
def test_over_s3_with_inlined_strips_and_predictor(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    path = write(tmp_path, "x", FLOAT, compression="zlib", predictor=3, rowsperstrip=16)
    url = s3_server.upload(path, s3_bucket, "tiff/x.tif")
    registry = ObjectStoreRegistry({f"s3://{s3_bucket}": s3_server.store(s3_bucket)})
    store = TIFFParser()(url, registry)
    assert store.group.arrays["0"].manifest.path_ids[-1, 0] == INLINE
    assert_same(read_store(store), tifffile_dataset(path))
