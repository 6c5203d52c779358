"""The `ds.vcube` accessor on virtual datasets."""

from __future__ import annotations

from typing import TYPE_CHECKING

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

    def _manifest_arrays(self) -> list[ManifestArray]:
        return [v.data for v in self._ds.variables.values() if isinstance(v.data, ManifestArray)]
