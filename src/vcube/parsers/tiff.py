"""`TIFFParser`: TIFF, BigTIFF and GeoTIFF files as virtual Zarr arrays, with tifffile for the IFDs.

tifffile reads the file structure through an `ObjectReader` (range requests through obstore): the
image file directories, their tags and the offsets and byte counts of the strips or tiles. Every
strip or tile is one Zarr chunk: a tile of (tilelength, tilewidth[, samples]) or a strip of
(rowsperstrip, width[, samples]). Compressions and predictors become Zarr v3 codecs: zarr's own
for deflate, zstd and LZMA, imagecodecs-zarr's for LZW, PackBits, the predictors and the image
codecs (JPEG, PNG, WebP, JPEG 2000, JPEG XL, JPEG XR), which decode as tifffile decodes.

Pixel data is not read, with one exception: a page whose height is not a multiple of its rows per
strip ends with a shorter strip, while Zarr decodes every chunk at full size. An uncompressed one
is referenced at full length when the file has the bytes after it (rows past the image are never
shown); otherwise the strip is read, padded and re-encoded into an inline chunk.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final, Literal, cast

import numpy as np
import tifffile
from imagecodecs.zarr import (
    Delta,
    Floatpred,
    Jpeg,
    Jpeg2k,
    Jpegxl,
    Jpegxr,
    Lzw,
    Packbits,
    Png,
    Webp,
)
from tifffile.tifffile import jpeg_decode_colorspace
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.codecs.numcodecs import LZMA, Zlib

from vcube.errors import (
    NotVirtualizableError,
    UnsupportedFeatureError,
    UnsupportedFormatError,
    VcubeError,
)
from vcube.manifests import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore
from vcube.manifests.array_api import grid_shape
from vcube.manifests.attrs import encode_attributes
from vcube.manifests.inline import ChunkEncoder
from vcube.manifests.manifest import stack
from vcube.manifests.metadata import array_metadata
from vcube.readers import ObjectReader, ReadOptions, ReadStats
from vcube.registry import ObjectStoreRegistry, normalize_url

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from zarr.abc.codec import Codec

    from vcube.manifests.metadata import ArrayInfo

__all__ = ["TIFFParser", "dimension_names", "page_axes"]

# IFDs are small and, in most files, next to their tag values: 64 KiB blocks read one with its
# values in one request without fetching much pixel data around it.
BLOCK_SIZE: Final = 64 * 2**10
# TIFF compression -> the bytes->bytes codec that decodes it (1, none, needs none).
COMPRESSORS: Final[dict[int, Callable[[], Codec]]] = {
    5: Lzw,  # LZW
    8: Zlib,  # ADOBE_DEFLATE
    32946: Zlib,  # DEFLATE
    32773: Packbits,
    34925: LZMA,  # xz streams, as libtiff writes them
    50000: ZstdCodec,
}
JPEG: Final = 7
# Image compressions whose codec decodes a whole strip or tile into its array (no `bytes`).
IMAGE_CODECS: Final[dict[int, Callable[[], Codec]]] = {
    34712: Jpeg2k,  # JPEG2000
    34933: Png,
    34934: Jpegxr,
    50001: Webp,
    50002: Jpegxl,
}
# TIFF predictor -> (codec, distance): horizontal differencing undoes as an array->array Delta;
# the floating-point predictor's Floatpred also turns bytes into the array (it replaces `bytes`).
PREDICTORS: Final[dict[int, tuple[type[Delta | Floatpred], int]]] = {
    2: (Delta, 1),
    3: (Floatpred, 1),
    34894: (Floatpred, 2),
    34895: (Floatpred, 4),
}
# ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory, GeoDoubleParams,
# GeoAsciiParams, GDAL_METADATA, GDAL_NODATA: kept as attributes under tifffile's tag names.
GEO_TAGS: Final = (33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113)
GDAL_NODATA: Final = 42113


@dataclass(frozen=True)
class TIFFParser:
    """Parse TIFF, BigTIFF and GeoTIFF files into a `ManifestStore`.

    Each page (IFD of the main chain) is an array named by its index: ``"0"``, ``"1"``, ...

    Parameters
    ----------
    pages
        Indices of the pages to read (default: all of them).
    stack
        Stack the pages into one array along a new leading ``page`` dimension, named after the
        first page; the pages must agree in shape, dtype, chunks, codecs and fill value.
    drop_variables
        Arrays (page names) to leave out.
    read_options
        How the file is read (default: read-ahead blocks of 64 KiB).
    """

    pages: Collection[int] | None = None
    stack: bool = False
    drop_variables: Collection[str] = ()
    read_options: ReadOptions = field(default_factory=lambda: ReadOptions(block_size=BLOCK_SIZE))
    stats: ReadStats = field(default_factory=ReadStats, compare=False)
    """Requests and bytes of every parse made with this parser (in this process)."""

    def __call__(self, url: str, registry: ObjectStoreRegistry | None = None) -> ManifestStore:
        url = normalize_url(url)
        registry = registry or ObjectStoreRegistry()
        stats = ReadStats()
        store, path = registry.resolve(url)
        reader = ObjectReader(store, path, url=url, options=self.read_options, stats=stats)
        try:
            with tifffile.TiffFile(cast("IO[bytes]", reader)) as tif:
                pages = _File(tif, reader, url).pages(self.pages)
        except VcubeError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, OSError, EOFError, struct.error) as e:
            raise UnsupportedFormatError(f"{url}: not a TIFF file, or a corrupt one ({e})") from e
        arrays = _stacked(pages, url) if self.stack and pages else _named(pages)
        group = ManifestGroup(
            arrays={k: v for k, v in arrays.items() if k not in self.drop_variables}
        )
        self.stats.merge(stats)
        return ManifestStore(group, registry=registry, read_stats=stats)


@dataclass(frozen=True, slots=True)
class _Page:
    """One page as an array: its metadata (dimension names not yet unique) and manifest."""

    index: int
    info: ArrayInfo
    manifest: ChunkManifest

    def array(self, name: str, dims: tuple[str, ...]) -> ManifestArray:
        return ManifestArray(self.info.replace(dimension_names=dims), self.manifest, name=name)


class _File:
    """One open TIFF file: builds the array of each page it is asked for."""

    def __init__(self, tif: tifffile.TiffFile, reader: ObjectReader, url: str) -> None:
        self.tif = tif
        self.reader = reader
        self.url = url
        self.encoders: dict[str, ChunkEncoder] = {}  # by layout: pages often share one

    def pages(self, indices: Collection[int] | None) -> list[_Page]:
        self.tif.pages.useframes = False  # full pages: every tag, not only the first page's
        if indices is None:  # in file order: each IFD is read once
            return [self.page(_full(p), i) for i, p in enumerate(self.tif.pages)]
        count = len(self.tif.pages)
        wrong = [i for i in indices if not 0 <= i < count]
        if wrong:
            raise VcubeError(f"{self.url}: no page {wrong[0]}; the file has pages 0 to {count - 1}")
        return [self.page(_full(self.tif.pages[i]), i) for i in indices]

    def page(self, page: tifffile.TiffPage, index: int) -> _Page:
        where = f"{self.url}: page {index}"
        _check_supported(page, where)
        shape, chunks, dims = _geometry(page)
        dtype = np.dtype(page.dtype)
        nodata = _nodata(page, dtype)
        attrs = {page.tags[t].name: page.tags[t].value for t in GEO_TAGS if t in page.tags}
        if nodata is not None:
            attrs["_FillValue"] = nodata
        info = array_metadata(
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            codecs=_codecs(page, where),
            fill_value=0 if nodata is None else nodata,
            dimension_names=dims,
            attributes=encode_attributes(attrs, dtype),
        )
        grid = grid_shape(shape, chunks)
        offsets = np.asarray(page.dataoffsets, dtype=np.uint64)
        lengths = np.asarray(page.databytecounts, dtype=np.uint64)
        if offsets.size != math.prod(grid) or lengths.size != offsets.size:
            raise UnsupportedFormatError(
                f"{where}: {offsets.size} offsets and {lengths.size} byte counts for a grid of "
                f"{math.prod(grid)} strips or tiles (corrupt file)"
            )
        missing = lengths == 0  # sparse files leave unwritten tiles at zero bytes
        end = int((offsets + lengths)[~missing].max(initial=0))
        if end > self.reader.size:
            raise UnsupportedFormatError(
                f"{where}: its pixel data ends at byte {end}, past the end of the file "
                f"({self.reader.size} bytes): the file is truncated"
            )
        manifest = ChunkManifest.from_file(
            self.url,
            offsets=offsets.reshape(grid),
            lengths=lengths.reshape(grid),
            missing=missing.reshape(grid),
        )
        y = dims.index("y")
        if not page.is_tiled and shape[y] % chunks[y]:
            manifest = self.last_strips(page, info, manifest, y, where)
        return _Page(index, info, manifest)

    def last_strips(
        self, page: tifffile.TiffPage, info: ArrayInfo, manifest: ChunkManifest, y: int, where: str
    ) -> ChunkManifest:
        """Make the short last strip of a page (one per separate sample plane) decode as a full
        chunk: referenced at full length when uncompressed and followed by enough bytes, else
        read, padded and re-encoded inline."""
        last = tuple(-1 if axis == y else slice(None) for axis in range(len(info.chunks)))
        full = np.uint64(math.prod(info.chunks) * info.dtype.itemsize)
        short = manifest.path_ids[last] >= 0
        lengths = manifest.lengths
        if len(info.codecs) == 1 and isinstance(info.codecs[0], BytesCodec):
            # The bytes after the strip decode as rows past the image, which readers never show.
            fits = manifest.offsets[last] + full <= np.uint64(self.reader.size)
            lengths = lengths.copy()
            lengths[last] = np.where(short & fits, full, lengths[last])
            short &= ~fits
        manifest = ChunkManifest(
            paths=manifest.paths,
            path_ids=manifest.path_ids,
            offsets=manifest.offsets,
            lengths=lengths,
            inline=manifest.inline,
        )
        if not short.any():
            return manifest
        if not any(isinstance(c, BytesCodec | Floatpred) for c in info.codecs):
            raise NotVirtualizableError(
                f"{where}: its last strip holds fewer rows than the others and is compressed "
                f"with {_name(page.compression)}, a lossy or image codec that cannot be "
                f"re-encoded to the full chunk Zarr needs, so it cannot be read virtually. "
                f"Rewrite the file tiled, or with RowsPerStrip dividing the image height."
            )
        row = manifest.grid_shape[y] - 1
        indices = [(*map(int, ix[:y]), row, *map(int, ix[y:])) for ix in np.argwhere(short)]
        chunks = [self.reencoded(page, info, manifest, ix, y) for ix in indices]
        return manifest.with_inline(indices, chunks)

    def reencoded(
        self,
        page: tifffile.TiffPage,
        info: ArrayInfo,
        manifest: ChunkManifest,
        index: tuple[int, ...],
        y: int,
    ) -> bytes:
        """A short strip read, decoded by tifffile, padded to a full chunk and encoded again."""
        data = self.reader.read_range(int(manifest.offsets[index]), int(manifest.lengths[index]))
        flat = int(np.ravel_multi_index(index, manifest.grid_shape))
        # (1, rows of the strip, width, contiguous samples), whatever the page's layout
        segment, _, _ = page.decode(data, flat, jpegtables=page.jpegtables)
        assert segment is not None  # tifffile returns None only when given no data
        padded = np.full((1, info.chunks[y], *segment.shape[2:]), info.fill_value, info.dtype)
        padded[:, : segment.shape[1]] = segment
        key = repr((info.chunks, info.dtype, info.codecs, info.fill_value))
        encoder = self.encoders.get(key) or self.encoders.setdefault(key, ChunkEncoder(info))
        return encoder(padded.reshape(info.chunks))


def _full(page: tifffile.TiffPage | tifffile.TiffFrame) -> tifffile.TiffPage:
    return page if isinstance(page, tifffile.TiffPage) else page.aspage()


def _check_supported(page: tifffile.TiffPage, where: str) -> None:
    problem = None
    if page.dtype is None:
        problem = f"sample format {page.sampleformat} with {page.bitspersample} bits"
    elif page.bitspersample != page.dtype.itemsize * 8:
        problem = f"{page.bitspersample}-bit samples (packed below a byte boundary)"
    elif isinstance(formats := page.tags.valueof(339), tuple) and len(set(formats)) > 1:
        problem = f"samples of different sample formats {formats}"
    elif page.imagedepth > 1:
        problem = "volumetric (ImageDepth) data"
    elif page.fillorder != 1:
        problem = "bit order FillOrder=2"
    elif page.is_subsampled and page.compression != JPEG and page.compression not in IMAGE_CODECS:
        problem = "chroma-subsampled YCbCr samples"
    elif 0 in (page.imagelength, page.imagewidth, page.samplesperpixel):
        problem = "an empty image"
    if problem:
        raise UnsupportedFeatureError(f"{where} has {problem}, which vcube cannot read virtually")


def _geometry(
    page: tifffile.TiffPage,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]]:
    """Shape, chunk shape and dimension names; separate sample planes are a leading axis."""
    height, width, samples = page.imagelength, page.imagewidth, page.samplesperpixel
    if page.is_tiled:
        rows, cols = page.tilelength, page.tilewidth
    else:
        rows, cols = min(page.rowsperstrip, height), width
    axes = page_axes(page)
    if samples == 1:
        return (height, width), (rows, cols), axes
    if page.planarconfig == 1:
        return (height, width, samples), (rows, cols, samples), axes
    return (samples, height, width), (1, rows, cols), axes


def page_axes(page: tifffile.TiffPage) -> tuple[str, ...]:
    """A page's dimension names: separate sample planes are a leading axis."""
    if page.samplesperpixel == 1:
        return ("y", "x")
    return ("y", "x", "sample") if page.planarconfig == 1 else ("sample", "y", "x")


def dimension_names(
    index: int, axes: Sequence[str], shape: Sequence[int], seen: dict[str, int]
) -> tuple[str, ...]:
    """Page `index`'s dimension names: a name keeps its plain form (``y``) when it is as long as
    in the first page that used it (`seen`, updated), else gets the page index (``y_3``)."""
    return tuple(
        d if seen.setdefault(d, n) == n else f"{d}_{index}"
        for d, n in zip(axes, shape, strict=True)
    )


def _codecs(page: tifffile.TiffPage, where: str) -> list[Codec]:
    """The Zarr v3 codecs of one strip or tile: [Delta], bytes | Floatpred, [compressor]."""
    compression, predictor = int(page.compression), int(page.predictor)
    image = compression == JPEG or compression in IMAGE_CODECS
    if compression != 1 and not image and compression not in COMPRESSORS:
        raise UnsupportedFeatureError(
            f"{where} is compressed with {_name(page.compression)} (compression {compression}), "
            f"for which vcube knows no Zarr codec, so it cannot be read virtually. Leave the "
            f"page out with TIFFParser(pages=[...]), or convert the file."
        )
    if predictor != 1 and not image and predictor not in PREDICTORS:
        raise UnsupportedFeatureError(
            f"{where} uses the predictor {_name(page.predictor)} ({predictor}), which no Zarr "
            f"codec undoes, so it cannot be read virtually. Leave the page out with "
            f"TIFFParser(pages=[...]), or convert the file."
        )
    try:
        return _pipeline(page, compression, predictor)
    except ValueError as err:  # imagecodecs built without this codec
        raise UnsupportedFeatureError(f"{where}: no usable Zarr codec ({err})") from err


def _pipeline(page: tifffile.TiffPage, compression: int, predictor: int) -> list[Codec]:
    # Image codecs ignore any predictor, as libtiff and tifffile do.
    if compression == JPEG:
        return [_jpeg(page)]
    if compression in IMAGE_CODECS:
        if compression == 50001 and page.samplesperpixel == 4:
            return [Webp(hasalpha=True)]  # tifffile's decoding of RGBA WebP
        return [IMAGE_CODECS[compression]()]
    itemsize = page.dtype.itemsize if page.dtype is not None else 1
    endian: Literal["big", "little"] | None = None
    if itemsize > 1:
        endian = "big" if page.parent.byteorder == ">" else "little"
    codecs: list[Codec] = []
    serializer: Codec = BytesCodec(endian=endian)
    if predictor != 1:
        codec, dist = PREDICTORS[predictor]
        # Differences run along a row: over pixels, sample by sample when interleaved.
        axis = -2 if page.planarconfig == 1 and page.samplesperpixel > 1 else -1
        if codec is Delta:
            codecs.append(Delta(axis=axis, dist=dist))
        else:
            serializer = Floatpred(axis=axis, dist=dist)
    codecs.append(serializer)
    if compression != 1:
        codecs.append(COMPRESSORS[compression]())
    return codecs


def _jpeg(page: tifffile.TiffPage) -> Jpeg:
    """The JPEG codec decoding as tifffile does: same tables and color spaces."""
    # Only RGB pages need to know whether the JPEG streams are JFIF (4 bytes of the first one).
    jfif = page.photometric == 2 and not page.extrasamples and page.is_jfif
    colorspace, outcolorspace = jpeg_decode_colorspace(
        page.photometric, page.planarconfig, page.extrasamples, jfif
    )
    return Jpeg(
        tables=page.jpegtables,
        header=page.jpegheader,
        colorspace_jpeg=colorspace,
        colorspace_data=outcolorspace,
        bitspersample=page.bitspersample,
    )


def _nodata(page: tifffile.TiffPage, dtype: np.dtype[Any]) -> int | float | None:
    """GDAL_NODATA as a value of `dtype`, when it is one (as tifffile parses it)."""
    text = page.tags.valueof(GDAL_NODATA)
    if not isinstance(text, str):
        return None
    try:
        value: int | float = type(dtype.type(0).item())(text.strip().replace(",", "."))
    except (ValueError, TypeError):
        return None
    return value if np.can_cast(np.min_scalar_type(value), dtype) else None


def _name(value: object) -> str:
    return str(getattr(value, "name", value))


def _named(pages: list[_Page]) -> dict[str, ManifestArray]:
    """One array per page. A dimension keeps its plain name (``y``, ``x``, ``sample``) when it is
    as long as in the first page that used the name; otherwise the page index is appended
    (``y_3``), so pages of other sizes never conflict."""
    seen: dict[str, int] = {}
    arrays = {}
    for p in pages:
        assert p.info.dimension_names is not None
        dims = dimension_names(p.index, p.info.dimension_names, p.info.shape, seen)
        arrays[str(p.index)] = p.array(str(p.index), dims)
    return arrays


def _stacked(pages: list[_Page], url: str) -> dict[str, ManifestArray]:
    """The pages as one array along a new leading ``page`` axis."""
    first = pages[0].info
    for p in pages[1:]:
        for what in ("shape", "dtype", "chunks", "codecs", "fill_value"):
            if repr(getattr(p.info, what)) != repr(getattr(first, what)):
                raise UnsupportedFeatureError(
                    f"{url}: page {p.index} cannot be stacked with page {pages[0].index}: its "
                    f"{what} differs ({getattr(p.info, what)!r}, not "
                    f"{getattr(first, what)!r}). Choose pages of one layout with "
                    f"TIFFParser(stack=True, pages=[...]), or read them as separate arrays."
                )
    assert first.dimension_names is not None
    info = first.replace(
        shape=(len(pages), *first.shape),
        chunks=(1, *first.chunks),
        dimension_names=("page", *first.dimension_names),
    )
    manifest = stack([p.manifest for p in pages], axis=0)
    name = str(pages[0].index)
    return {name: ManifestArray(info, manifest, name=name)}
