"""The `ds.vcube` accessor on virtual datasets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import xarray as xr

from vcube.api import REPORT_KEY
from vcube.manifests import ManifestArray
from vcube.mapreduce import MapReport

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["VcubeDatasetAccessor"]


@xr.register_dataset_accessor("vcube")  # type: ignore[no-untyped-call]
class VcubeDatasetAccessor:
    """Methods on a virtual dataset, available as `ds.vcube`."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    @property
    def nbytes(self) -> int:
        """Memory held by the dataset: the chunk references of virtual variables (not the data
        they point to) plus the values of loaded variables."""
        total = 0
        for var in self._ds.variables.values():
            data = var.data
            total += data.manifest.nbytes if isinstance(data, ManifestArray) else var.nbytes
        return total

    @property
    def report(self) -> MapReport | None:
        """What `open_virtual_mfdataset` virtualized: files that succeeded, failures (URL, error,
        attempts) and attempts made; None for a dataset it did not make."""
        report = self._ds.encoding.get(REPORT_KEY)
        return report if isinstance(report, MapReport) else None

    @property
    def nrefs(self) -> int:
        """Number of chunk references (missing chunks not counted) of the virtual variables."""
        return sum(a.manifest.nrefs for a in self._manifest_arrays())

    def rename_paths(self, new: str | Callable[[str], str]) -> xr.Dataset:
        """A copy whose chunk references point to new URLs (a string, or a function of the old
        URL), e.g. after moving the files."""
        renamed: dict[str, xr.Variable] = {}
        for name, var in self._ds.variables.items():
            data = var.data
            if isinstance(data, ManifestArray):
                array = data.replace(manifest=data.manifest.rename_paths(new))
                renamed[str(name)] = var.copy(data=array)  # type: ignore[arg-type]
        coords = {k: v for k, v in renamed.items() if k in self._ds.coords}
        # Virtual coordinates get no index: an index would need their values.
        ds = self._ds.assign_coords(xr.Coordinates(coords, indexes={})) if coords else self._ds
        return ds.assign({k: v for k, v in renamed.items() if k not in coords})

    def to_kerchunk(self, filepath: str | None = None, **kwargs: Any) -> Any:
        """Write (or return, with `format="dict"`) Kerchunk references; see
        `vcube.writers.kerchunk.to_kerchunk` for the options."""
        from vcube.writers.kerchunk import to_kerchunk  # pyarrow: the `kerchunk` extra

        return to_kerchunk(self._ds, filepath, **kwargs)

    def to_icechunk(self, store: Any, **kwargs: Any) -> None:
        """Write the references into an Icechunk session's store; see
        `vcube.writers.icechunk.to_icechunk` for the options."""
        from vcube.writers.icechunk import to_icechunk  # icechunk: the `icechunk` extra

        to_icechunk(self._ds, store, **kwargs)

    def _manifest_arrays(self) -> list[ManifestArray]:
        return [v.data for v in self._ds.variables.values() if isinstance(v.data, ManifestArray)]
