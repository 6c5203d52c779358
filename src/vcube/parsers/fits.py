"""`FITSParser`: the image HDUs of FITS files as virtual Zarr arrays.

vcube walks the headers itself, in as few range requests as they need (one per HDU whose header
is not already among the bytes read, never the data), and parses each header's cards with astropy
(`Header.fromstring`). An uncompressed image's data follows its header as one contiguous
big-endian block: one chunk per HDU, or chunks of `chunk_rows` (or `chunk_bytes`) along the
first numpy axis.
BSCALE / BZERO become CF `scale_factor` / `add_offset` and BLANK becomes `_FillValue`, so the
stored integers are referenced raw and a CF reader (xarray) applies the scaling exactly once.
Tile-compressed images and tables are not pixels at a byte range: they raise, or are read with
astropy into inline arrays when the user asks (`load_unsupported`).
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
from zarr.codecs import BytesCodec

from vcube.errors import (
    NotVirtualizableError,
    UnsupportedFeatureError,
    UnsupportedFormatError,
    VcubeError,
)
from vcube.manifests import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore
from vcube.manifests.array_api import grid_shape
from vcube.manifests.attrs import encode_attributes, json_value
from vcube.manifests.inline import inline_array
from vcube.manifests.metadata import array_metadata
from vcube.readers import ObjectReader, ReadOptions, ReadStats
from vcube.registry import ObjectStoreRegistry, normalize_url

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

__all__ = ["FITSParser", "hdu_names", "image_dims"]

BLOCK: Final = 2880
CARD: Final = 80
HEADER_READ: Final = 23 * BLOCK  # about 64 KiB: most headers, and small files whole
END_KEYWORD: Final = np.frombuffer(b"END     ", dtype=np.uint8)
BITPIX_DTYPES: Final = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
COMMENTARY: Final = ("COMMENT", "HISTORY")
# An empty primary HDU, put before one extension's bytes so that astropy can open it alone.
PRIMARY_STUB: Final = b"".join(
    card.ljust(CARD).encode()
    for card in (
        "SIMPLE  =                    T",
        "BITPIX  =                    8",
        "NAXIS   =                    0",
        "EXTEND  =                    T",
        "END",
    )
).ljust(BLOCK)

HDUKind = Literal["image", "compressed", "table", "groups", "other"]


@dataclass(frozen=True)
class FITSParser:
    """Parse the image HDUs of a FITS file into a `ManifestStore`.

    Parameters
    ----------
    hdus
        HDUs to read, by index or by name (the array name or EXTNAME, any case); None reads all.
    drop_variables
        Arrays (HDU names) to leave out.
    chunk_rows
        Split each image into chunks of this many positions along its first numpy axis
        (NAXISn); None keeps one chunk per HDU.
    chunk_bytes
        Or split into chunks of at most this many bytes (at least one row each).
    load_unsupported
        Tile-compressed images and tables (names, or True for all) to read with astropy at
        parse time into inline arrays instead of raising `UnsupportedFeatureError`.
    max_load_bytes
        Refuse to load an HDU larger than this.
    read_options
        ``"ranges"`` and ``"blocks"`` read the headers in exact range requests; ``"whole"``
        downloads the file.
    """

    hdus: int | str | Collection[int | str] | None = None
    drop_variables: Collection[str] = ()
    chunk_rows: int | None = None
    chunk_bytes: int | None = None
    load_unsupported: bool | Collection[str] = False
    max_load_bytes: int = 64 * 2**20
    read_options: ReadOptions = field(default_factory=ReadOptions)
    stats: ReadStats = field(default_factory=ReadStats, compare=False)
    """Requests and bytes of every parse made with this parser (in this process)."""

    def __post_init__(self) -> None:
        for option in ("chunk_rows", "chunk_bytes"):
            value: object = getattr(self, option)  # checked as given: a bool or float is a mistake
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{option} must be a positive integer or None, not {value!r}")
        if self.chunk_rows is not None and self.chunk_bytes is not None:
            raise ValueError("give chunk_rows or chunk_bytes, not both")

    def __call__(self, url: str, registry: ObjectStoreRegistry | None = None) -> ManifestStore:
        url = normalize_url(url)
        registry = registry or ObjectStoreRegistry()
        stats = ReadStats()
        store, path = registry.resolve(url)
        options = self.read_options
        if options.strategy == "blocks":  # blocks would fetch megabytes of pixels
            options = dataclasses.replace(options, strategy="ranges")
        reader = ObjectReader(store, path, url=url, options=options, stats=stats)
        hdus = _read_hdus(reader, url)
        names = hdu_names([h.cards for h in hdus])
        arrays: dict[str, ManifestArray] = {}
        for i in self._selected(hdus, names, url):
            hdu, name = hdus[i], names[i]
            if name in self.drop_variables or (hdu.kind == "image" and hdu.data_size == 0):
                continue
            if hdu.kind == "image":
                arrays[name] = _image_array(hdu, name, url, self._rows(hdu), reader)
            elif hdu.kind in ("compressed", "table") and self._loads(name):
                arrays |= self._load(hdu, name, url, reader)
            else:
                raise _unsupported(hdu, name, url)
        primary = hdus[0]
        attributes = primary.cards if primary.data_size == 0 else {}
        group = ManifestGroup(
            arrays={k: v for k, v in arrays.items() if k not in self.drop_variables},
            groups={},
            attributes=json_value(attributes),
        )
        self.stats.merge(stats)
        return ManifestStore(group, registry=registry, read_stats=stats)

    def _rows(self, hdu: _HDU) -> int:
        """Rows (positions along the first numpy axis) per chunk."""
        rows = hdu.shape[0]
        if self.chunk_bytes is not None:
            row_bytes = abs(hdu.bitpix) // 8 * math.prod(hdu.shape[1:])
            return min(rows, max(1, self.chunk_bytes // row_bytes))
        return rows if self.chunk_rows is None else min(rows, self.chunk_rows)

    def _selected(self, hdus: list[_HDU], names: list[str], url: str) -> list[int]:
        if self.hdus is None:
            return list(range(len(hdus)))
        items = [self.hdus] if isinstance(self.hdus, int | str) else list(self.hdus)
        chosen: set[int] = set()
        for item in items:
            found = [h.index for h, n in zip(hdus, names, strict=True) if h.matches(item, n)]
            if not found:
                listing = ", ".join(f"{h.index} {n!r}" for h, n in zip(hdus, names, strict=True))
                raise VcubeError(f"{url}: no HDU {item!r} (the file has HDUs {listing})")
            chosen.update(found)
        return sorted(chosen)

    def _loads(self, name: str) -> bool:
        if isinstance(self.load_unsupported, bool):
            return self.load_unsupported
        return name in self.load_unsupported

    def _load(
        self, hdu: _HDU, name: str, url: str, reader: ObjectReader
    ) -> dict[str, ManifestArray]:
        """The HDU read and decoded by astropy: one inline array, or one per table column."""
        from astropy.io import fits

        if hdu.load_bytes > self.max_load_bytes:
            raise NotVirtualizableError(
                f"{url}: HDU {hdu.index} ({name!r}) must be loaded to be read, but at about "
                f"{hdu.load_bytes} bytes it exceeds max_load_bytes={self.max_load_bytes}; raise "
                f"the limit or leave it out with drop_variables=[{name!r}]"
            )
        raw = reader.read_range(hdu.offset, hdu.end - hdu.offset)
        with fits.open(io.BytesIO(PRIMARY_STUB + raw)) as hdul:
            loaded = hdul[1]
            if hdu.kind == "compressed":
                values = _native(np.asarray(loaded.data))
                attrs = json_value(_attributes(loaded.header))
                dims = image_dims(name, values.ndim)
                return {
                    name: inline_array(values, name=name, dimension_names=dims, attributes=attrs)
                }
            return {
                f"{name}.{col.name}": _column_array(loaded, col, name, url, hdu.index)
                for col in loaded.columns
            }


@dataclass(frozen=True, slots=True)
class _HDU:
    """One header-data unit: its header and where its header, data and successor start."""

    index: int
    kind: HDUKind
    cards: dict[str, Any]  # the header's values, as `_attributes` gives them
    offset: int
    data_start: int
    data_size: int  # bytes of the data section, without its padding
    end: int  # where the next HDU starts
    bitpix: int
    axes: tuple[int, ...]  # NAXIS1 ... NAXISn (FITS order)

    @property
    def shape(self) -> tuple[int, ...]:
        """The numpy shape: FITS lists the fastest axis first."""
        return self.axes[::-1]

    @property
    def extname(self) -> str:
        return _extname(self.cards)

    @property
    def load_bytes(self) -> int:
        """A bound on the memory astropy needs to decode the HDU."""
        if self.kind == "compressed":
            ndim = int(self.cards.get("ZNAXIS", 0))
            axes = (self.cards.get(f"ZNAXIS{k}", 0) for k in range(1, ndim + 1))
            return 8 * math.prod(int(n) for n in axes)
        return self.data_size

    def matches(self, item: int | str, name: str) -> bool:
        if isinstance(item, str):
            return item.upper() in (name.upper(), self.extname.upper())
        return item == self.index


class _Headers:
    """A window of the file's bytes, moved or grown by range requests as the headers need."""

    def __init__(self, reader: ObjectReader, url: str) -> None:
        self.reader = reader
        self.url = url
        self.start = 0
        self.data = b""

    def header(self, offset: int, index: int) -> bytes | None:
        """The header blocks at `offset` through the one holding END; None for trailing zero or
        blank padding after the last HDU."""
        if not (self.start <= offset and offset + BLOCK <= self.start + len(self.data)):
            self.start, self.data = offset, self.reader.read_range(offset, HEADER_READ)
        at = offset - self.start
        expected = b"SIMPLE  =" if index == 0 else b"XTENSION="
        if self.data[at : at + len(expected)] != expected:
            if index and not self.data[at : at + BLOCK].strip(b"\0 "):
                return None
            what = "not a FITS file" if index == 0 else f"no FITS extension header (HDU {index})"
            raise UnsupportedFormatError(
                f"{self.url}: {what} at byte {offset}: found {self.data[at : at + 10]!r}, "
                f"expected {expected.decode()!r}"
            )
        while (end := _end_card(self.data, at)) < 0:
            stop = self.start + len(self.data)
            if stop >= self.reader.size:
                raise UnsupportedFormatError(
                    f"{self.url}: the header of HDU {index} (at byte {offset}) has no END card "
                    f"before the end of the file ({self.reader.size} bytes): truncated or corrupt"
                )
            self.data += self.reader.read_range(stop, max(len(self.data), HEADER_READ))
        return self.data[at : at + _padded(end - at + CARD)]


def _end_card(data: bytes, at: int) -> int:
    """Index in `data` of the first END card of the header starting at `at`, or -1."""
    n = (len(data) - at) // CARD
    cards = np.frombuffer(data, dtype=np.uint8, count=n * CARD, offset=at).reshape(n, CARD)
    hits = np.flatnonzero((cards[:, : len(END_KEYWORD)] == END_KEYWORD).all(axis=1))
    return at + int(hits[0]) * CARD if hits.size else -1


def _padded(nbytes: int) -> int:
    return -(-nbytes // BLOCK) * BLOCK


def _read_hdus(reader: ObjectReader, url: str) -> list[_HDU]:
    headers = _Headers(reader, url)
    hdus: list[_HDU] = []
    offset = 0
    while offset < reader.size or not hdus:
        raw = headers.header(offset, len(hdus))
        if raw is None:
            break
        hdu = _hdu(raw, offset, len(hdus), url, reader.size)
        hdus.append(hdu)
        offset = hdu.end
    return hdus


def _hdu(raw: bytes, offset: int, index: int, url: str, file_size: int) -> _HDU:
    from astropy.io import fits

    where = f"{url}: HDU {index} (header at byte {offset})"
    try:
        cards = _attributes(fits.Header.fromstring(raw.decode("latin-1")))
    except ValueError as err:
        raise UnsupportedFormatError(f"{where}: unreadable FITS header ({err})") from err

    def integer(key: str, default: int | None = None, *, low: int = 0, high: int = 2**62) -> int:
        value = cards.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise UnsupportedFormatError(f"{where}: {key} = {value!r} is not a valid value")
        return value

    bitpix = integer("BITPIX", low=-64)
    if bitpix not in BITPIX_DTYPES:
        raise UnsupportedFormatError(f"{where}: BITPIX = {bitpix} is not a FITS data type")
    axes = tuple(integer(f"NAXIS{k}") for k in range(1, integer("NAXIS", high=999) + 1))
    groups = index == 0 and cards.get("GROUPS") is True and axes[:1] == (0,)
    count = math.prod(axes[1:] if groups else axes) if axes else 0
    size = abs(bitpix) // 8 * integer("GCOUNT", 1) * (integer("PCOUNT", 0) + count) if axes else 0
    data_start = offset + _padded(len(raw))
    if data_start + size > file_size:
        part = "data section" if size else "header"
        raise UnsupportedFormatError(
            f"{where}: truncated file: the {part} ends at byte {data_start + size}, but the "
            f"file has {file_size} bytes"
        )
    return _HDU(
        index=index,
        kind="groups" if groups else _kind(cards, index),
        cards=cards,
        offset=offset,
        data_start=data_start,
        data_size=size,
        end=data_start + _padded(size),
        bitpix=bitpix,
        axes=axes,
    )


def _kind(cards: dict[str, Any], index: int) -> HDUKind:
    if index == 0:
        return "image"
    xtension = cards.get("XTENSION")
    xtension = xtension.strip().upper() if isinstance(xtension, str) else ""
    if xtension in ("IMAGE", "IUEIMAGE"):
        return "image"
    if xtension == "BINTABLE":
        return "compressed" if cards.get("ZIMAGE") is True else "table"
    if xtension in ("TABLE", "A3DTABLE"):
        return "table"
    return "other"


def hdu_names(headers: Sequence[Mapping[str, Any]]) -> list[str]:
    """The array name of each HDU of a file, given their headers in order: EXTNAME, or PRIMARY /
    HDU<i>; a shared name gets _<EXTVER> (or _HDU<i>) appended."""
    bases = []
    for index, header in enumerate(headers):
        extname = _extname(header)
        bases.append((extname or ("PRIMARY" if index == 0 else f"HDU{index}")).replace("/", "_"))
    repeated = Counter(bases)
    names = []
    for index, (header, base) in enumerate(zip(headers, bases, strict=True)):
        extver = header.get("EXTVER")
        if repeated[base] == 1:
            names.append(base)
        elif isinstance(extver, int) and not isinstance(extver, bool):
            names.append(f"{base}_{extver}")
        else:
            names.append(f"{base}_HDU{index}")
    # Still shared (equal EXTVERs): the HDU index decides.
    repeated = Counter(names)
    return [n if repeated[n] == 1 else f"{n}_HDU{i}" for i, n in enumerate(names)]


def _extname(header: Mapping[str, Any]) -> str:
    value = header.get("EXTNAME")
    return value.strip() if isinstance(value, str) else ""


def image_dims(name: str, ndim: int) -> tuple[str, ...]:
    """Per-HDU dimension names (HDUs of one file often differ in shape), numbered as FITS
    numbers the axes: the last numpy axis is NAXIS1."""
    return tuple(f"{name}_naxis{ndim - j}" for j in range(ndim))


def _image_array(hdu: _HDU, name: str, url: str, rows: int, reader: ObjectReader) -> ManifestArray:
    big = np.dtype(BITPIX_DTYPES[hdu.bitpix])
    dtype = big.newbyteorder("=") if big.itemsize > 1 else big
    shape = hdu.shape
    chunks = (rows, *shape[1:])
    chunk_bytes = rows * math.prod(shape[1:]) * dtype.itemsize
    grid = grid_shape(shape, chunks)
    n = grid[0]
    offsets = hdu.data_start + np.arange(n, dtype=np.uint64) * np.uint64(chunk_bytes)
    manifest = ChunkManifest.from_file(
        url, offsets=offsets.reshape(grid), lengths=np.full(grid, chunk_bytes, dtype=np.uint64)
    )
    last = hdu.data_start + (n - 1) * chunk_bytes
    if last + chunk_bytes > reader.size:
        # Zarr reads whole chunks. A partial last chunk normally reads on into the padding or
        # the next HDU (values zarr discards); at the end of the file its rows are held inline.
        tail = reader.read_range(last, hdu.data_start + hdu.data_size - last)
        corner = (n - 1, *(0 for _ in shape[1:]))
        manifest = manifest.with_inline([corner], [tail.ljust(chunk_bytes, b"\0")])
    info = array_metadata(
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        codecs=[BytesCodec(endian="big")] if dtype.itemsize > 1 else [],
        dimension_names=image_dims(name, len(shape)),
        attributes=encode_attributes(_cf_attributes(hdu, name, url, dtype), dtype),
    )
    return ManifestArray(info, manifest, name=name)


def _cf_attributes(hdu: _HDU, name: str, url: str, dtype: np.dtype[Any]) -> dict[str, Any]:
    """The header cards, plus BSCALE / BZERO / BLANK as the CF attributes a reader applies."""
    attrs = dict(hdu.cards)
    bscale, bzero = attrs.get("BSCALE", 1), attrs.get("BZERO", 0)
    for key, value in (("BSCALE", bscale), ("BZERO", bzero)):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise UnsupportedFormatError(f"{url}: HDU {hdu.index} ({name!r}): {key} = {value!r}")
    if bscale == 0:
        raise UnsupportedFormatError(f"{url}: HDU {hdu.index} ({name!r}): BSCALE = 0")
    if bscale != 1:
        attrs["scale_factor"] = float(bscale)
    if bzero != 0:
        attrs["add_offset"] = float(bzero)
    blank = attrs.get("BLANK")
    # BLANK is defined for integer images only; a float image marks undefined pixels with NaN.
    if dtype.kind in "iu" and isinstance(blank, int) and not isinstance(blank, bool):
        limits = np.iinfo(dtype)
        if limits.min <= blank <= limits.max:
            attrs["_FillValue"] = blank
    return attrs


def _attributes(header: Any) -> dict[str, Any]:
    """Header cards by keyword: the first of repeated keywords, COMMENT and HISTORY cards
    joined by newlines, blank-keyword cards left out, undefined values as None."""
    from astropy.io import fits

    out: dict[str, Any] = {}
    notes: dict[str, list[str]] = {key: [] for key in COMMENTARY}
    for card in header.cards:
        key = card.keyword
        if key in notes:
            notes[key].append(str(card.value))
        elif key and key not in out:
            try:
                value = _card_value(card)
            except fits.VerifyError:
                continue  # beyond astropy's repair
            if isinstance(value, fits.card.Undefined):
                value = None
            elif not isinstance(value, bool | int | float | complex | str):
                value = str(value)
            out[key] = value
    out |= {key: "\n".join(lines) for key, lines in notes.items() if lines}
    return out


def _card_value(card: Any) -> Any:
    from astropy.io import fits

    try:
        return card.value
    except fits.VerifyError:
        # A non-standard card (unterminated string, malformed number): astropy's repair keeps
        # its text as a string value.
        card.verify("silentfix")
        return card.value


def _column_array(table: Any, col: Any, name: str, url: str, index: int) -> ManifestArray:
    values = np.asarray(table.data[col.name])
    if values.dtype.kind == "O":
        raise UnsupportedFeatureError(
            f"{url}: HDU {index} ({name!r}): column {col.name!r} holds variable-length arrays "
            f"(format {col.format}), which have no Zarr array equivalent; drop the HDU with "
            f"drop_variables=[{name!r}]"
        )
    if values.dtype.kind in "SU":
        values = values.astype(str).astype(object)
    dims = (f"{name}_row", *(f"{name}.{col.name}_dim{k}" for k in range(1, values.ndim)))
    attrs: dict[str, Any] = {"units": str(col.unit)} if col.unit else {}
    return inline_array(
        _native(values), name=f"{name}.{col.name}", dimension_names=dims, attributes=attrs
    )


def _native(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if values.dtype.kind == "O" or values.dtype.byteorder in "=|":
        return values
    return values.astype(values.dtype.newbyteorder("="))


def _unsupported(hdu: _HDU, name: str, url: str) -> UnsupportedFeatureError:
    where = f"{url}: HDU {hdu.index} ({name!r})"
    skip = f"leave it out with drop_variables=[{name!r}] or choose HDUs with hdus=[...]"
    load = (
        f"Load it with FITSParser(load_unsupported=[{name!r}]) (read by astropy at parse time, "
        f"up to max_load_bytes) or {skip}"
    )
    if hdu.kind == "compressed":
        method = hdu.cards.get("ZCMPTYPE", "?")
        return UnsupportedFeatureError(
            f"{where} is a tile-compressed image (ZCMPTYPE = {method!r}): its bytes are a table "
            f"of compressed tiles, not pixels, so it cannot be referenced virtually. {load}."
        )
    if hdu.kind == "table":
        xtension = str(hdu.cards.get("XTENSION", "")).strip()
        return UnsupportedFeatureError(
            f"{where} is a table HDU (XTENSION = {xtension!r}); vcube references image HDUs "
            f"only. {load}."
        )
    if hdu.kind == "groups":
        return UnsupportedFeatureError(
            f"{where} holds random groups (GROUPS = T), a deprecated layout vcube does not "
            f"read; {skip}"
        )
    return UnsupportedFeatureError(
        f"{where} is an extension of type {hdu.cards.get('XTENSION')!r}, which vcube does not "
        f"read; {skip}"
    )
