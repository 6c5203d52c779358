"""`ManifestArray`: a lazy array of chunk references plus its Zarr v3 array metadata.

It implements just enough of the numpy array protocols for xarray to concatenate, stack, expand
and broadcast virtual variables; any operation that needs the values raises `VirtualDataError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.core.metadata.v3 import ArrayV3Metadata

from vcube.errors import VirtualDataError
from vcube.manifests import array_api
from vcube.manifests.metadata import ArrayInfo

if TYPE_CHECKING:
    from collections.abc import Callable

    from zarr.abc.codec import Codec

    from vcube.manifests.manifest import ChunkManifest

__all__ = ["ManifestArray"]


class ManifestArray:
    """A virtual array: Zarr v3 metadata and a `ChunkManifest` saying where each chunk lives.

    Parameters
    ----------
    info
        Zarr v3 array description (an `ArrayInfo`, or zarr's `ArrayV3Metadata`).
    manifest
        The references; its grid shape must be the chunk grid of `metadata`.
    name
        The variable name, used in error messages only.
    """

    __slots__ = ("_zarr_metadata", "info", "manifest", "name")

    def __init__(
        self,
        info: ArrayInfo | ArrayV3Metadata,
        manifest: ChunkManifest,
        *,
        name: str | None = None,
    ) -> None:
        if isinstance(info, ArrayV3Metadata):
            self._zarr_metadata: ArrayV3Metadata | None = info
            info = ArrayInfo.from_zarr(info)
        else:
            self._zarr_metadata = None
        expected = array_api.grid_shape(info.shape, info.chunks)
        if manifest.grid_shape != expected:
            raise ValueError(
                f"variable {name!r}: manifest grid {manifest.grid_shape} does not match the chunk "
                f"grid {expected} of shape {info.shape} with chunks {info.chunks}"
            )
        self.info = info
        self.manifest = manifest
        self.name = name

    @property
    def metadata(self) -> ArrayV3Metadata:
        """zarr's `ArrayV3Metadata` for this array (built on first use)."""
        if self._zarr_metadata is None:
            self._zarr_metadata = self.info.to_zarr()
        return self._zarr_metadata

    # -- array attributes xarray reads ---------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return self.info.shape

    @property
    def ndim(self) -> int:
        return len(self.info.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.info.dtype

    @property
    def chunks(self) -> tuple[int, ...]:
        """The chunk shape."""
        return self.info.chunks

    @property
    def fill_value(self) -> Any:
        return self.info.fill_value

    @property
    def codecs(self) -> tuple[Codec, ...]:
        return self.info.codecs

    @property
    def source(self) -> str:
        """A short description of where the chunks come from, for error messages."""
        paths = self.manifest.paths
        if not paths:
            return "<in-memory>"
        return paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} more files)"

    def replace(
        self, *, info: ArrayInfo | None = None, manifest: ChunkManifest | None = None
    ) -> ManifestArray:
        return ManifestArray(
            info if info is not None else self.info,
            manifest if manifest is not None else self.manifest,
            name=self.name,
        )

    def __repr__(self) -> str:
        return (
            f"ManifestArray<shape={self.shape}, dtype={self.dtype}, chunks={self.chunks}, "
            f"refs={self.manifest.nrefs}>"
        )

    def _repr_inline_(self, max_width: int) -> str:
        text = f"ManifestArray<chunks={self.chunks}, refs={self.manifest.nrefs}>"
        return text if len(text) <= max_width else text[: max(max_width - 3, 0)] + "..."

    # -- numpy protocols -----------------------------------------------------------------------

    def __array_function__(
        self, func: Callable[..., Any], types: Any, args: Any, kwargs: Any
    ) -> Any:
        impl = array_api.HANDLED_FUNCTIONS.get(func)
        if impl is None:
            raise self._needs_data(f"numpy.{getattr(func, '__name__', func)}")
        return impl(*args, **kwargs)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        raise self._needs_data(f"numpy.{ufunc.__name__}")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        raise self._needs_data("converting to a numpy array")

    def __eq__(self, other: object) -> Any:
        raise self._needs_data("comparing values with ==")

    __hash__ = None  # type: ignore[assignment]

    def _refuse_operator(self, *args: Any, **kwargs: Any) -> Any:
        raise self._needs_data("arithmetic or comparison")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse_operator
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = _refuse_operator
    __pow__ = __rpow__ = __neg__ = __pos__ = __abs__ = __invert__ = _refuse_operator
    __and__ = __or__ = __xor__ = __lt__ = __le__ = __gt__ = __ge__ = __ne__ = _refuse_operator

    def transpose(self, *axes: Any) -> ManifestArray:
        order = axes[0] if len(axes) == 1 and isinstance(axes[0], tuple | list) else axes
        if not order or tuple(order) == tuple(range(self.ndim)):
            return self
        raise VirtualDataError(
            f"variable {self.name!r} from {self.source} is virtual: transposing it to axes "
            f"{tuple(order)} would need a rechunk of its values. Keep the dimension order of the "
            f"files, or load the variable."
        )

    def astype(self, dtype: Any, *, copy: bool = True) -> ManifestArray:
        if np.dtype(dtype) == self.dtype:
            return self
        raise self._needs_data(f"casting to {np.dtype(dtype)}")

    def __getitem__(self, key: Any) -> ManifestArray:
        return array_api.getitem(self, key)

    def _needs_data(self, operation: str) -> VirtualDataError:
        return VirtualDataError(
            f"variable {self.name!r} from {self.source} is virtual (chunk references only): "
            f"{operation} needs its values. Load the variable instead, e.g. with "
            f"loadable_variables=[{self.name!r}], or read the persisted store with xarray."
        )
