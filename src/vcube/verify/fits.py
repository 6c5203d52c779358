"""FITS source files, read raw by astropy (`do_not_scale_image_data=True`): each image HDU is an
array named as `FITSParser` names it, its BSCALE / BZERO the CF `scale_factor` / `add_offset`
they mean, so that a target without them is compared decoded and found different."""

from __future__ import annotations

import contextlib
from typing import IO, TYPE_CHECKING, Any, Final, cast

import numpy as np
from astropy.io import fits

from vcube.parsers.fits import BITPIX_DTYPES, hdu_names, image_dims
from vcube.verify.access import object_reader
from vcube.verify.arrays import describe

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from vcube.registry import ObjectStoreRegistry
    from vcube.verify.arrays import Info, Region
    from vcube.verify.sources import Layout, Reader

__all__ = ["open_fits"]

IMAGE_EXTENSIONS: Final = ("IMAGE", "IUEIMAGE")


def open_fits(url: str, registry: ObjectStoreRegistry, head: bytes, layout: Layout) -> Reader:
    return _FITSReader(url, registry)


class _FITSReader:
    """Image HDUs (the primary one, IMAGE extensions) with data; `section` reads only the rows a
    region needs. Tables and tile-compressed images, which FITSParser can only load, are left
    out."""

    def __init__(self, url: str, registry: ObjectStoreRegistry) -> None:
        # A file object of ours, local files too: astropy leaves a file it opened itself open
        # when the file turns out unreadable.
        self._file = object_reader(url, registry)
        with contextlib.ExitStack() as undo:  # closes what is open if the file is unreadable
            undo.callback(self._file.close)
            source = cast("IO[bytes]", self._file)
            self._hdus = fits.open(source, do_not_scale_image_data=True, memmap=False)
            undo.callback(self._hdus.close)
            headers = [hdu.header for hdu in self._hdus]  # reads every header
            undo.pop_all()
        self._images = {
            name: index
            for index, (name, header) in enumerate(zip(hdu_names(headers), headers, strict=True))
            if _is_image(header, index) and _shape(header) and all(_shape(header))
        }

    def arrays(self) -> dict[str, Info]:
        found = {}
        for name, index in self._images.items():
            header = self._hdus[index].header
            shape = _shape(header)
            dims = image_dims(name, len(shape))
            found[name] = describe(shape, BITPIX_DTYPES[header["BITPIX"]], _cf(header), dims)
        return found

    def read(self, name: str, region: Region) -> NDArray[Any]:
        return np.asarray(self._hdus[self._images[name]].section[region])

    def close(self) -> None:
        self._hdus.close()
        self._file.close()


def _is_image(header: fits.Header, index: int) -> bool:
    if index == 0:
        return header.get("GROUPS") is not True
    xtension = header.get("XTENSION")
    return isinstance(xtension, str) and xtension.strip().upper() in IMAGE_EXTENSIONS


def _shape(header: fits.Header) -> tuple[int, ...]:
    """The numpy shape: FITS lists the fastest axis (NAXIS1) first."""
    naxis = int(header.get("NAXIS", 0))
    return tuple(int(header[f"NAXIS{k}"]) for k in range(naxis, 0, -1))


def _cf(header: fits.Header) -> dict[str, float]:
    """BSCALE and BZERO as the CF attributes a reader applies."""
    bscale, bzero = header.get("BSCALE", 1), header.get("BZERO", 0)
    cf = {"scale_factor": float(bscale)} if bscale != 1 else {}
    return cf | ({"add_offset": float(bzero)} if bzero != 0 else {})
