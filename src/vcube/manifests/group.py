"""`ManifestGroup`: a tree of virtual arrays and groups with attributes, like a Zarr hierarchy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
from xarray.conventions import encode_cf_variable, encode_dataset_coordinates

from vcube.errors import VcubeError
from vcube.manifests.array import ManifestArray
from vcube.manifests.attrs import encode_attributes, json_value
from vcube.manifests.inline import inline_array

if TYPE_CHECKING:
    from collections.abc import Iterator

    import xarray as xr
    from zarr.core.common import JSON

__all__ = ["ManifestGroup"]


@dataclass(frozen=True, slots=True)
class ManifestGroup:
    """Arrays and subgroups by name, and the group's (JSON) attributes."""

    arrays: dict[str, ManifestArray] = field(default_factory=dict)
    groups: dict[str, ManifestGroup] = field(default_factory=dict)
    attributes: dict[str, JSON] = field(default_factory=dict)

    def walk(self, prefix: str = "") -> Iterator[tuple[str, ManifestGroup | ManifestArray]]:
        """Every node below this group (itself first, at `prefix`), by its path."""
        yield prefix, self
        for name, array in self.arrays.items():
            yield _join(prefix, name), array
        for name, group in self.groups.items():
            yield from group.walk(_join(prefix, name))

    def get(self, path: str) -> ManifestGroup | ManifestArray:
        """The node at a slash-separated path (`""` is this group)."""
        node: ManifestGroup | ManifestArray = self
        for part in filter(None, path.split("/")):
            if not isinstance(node, ManifestGroup) or (
                part not in node.arrays and part not in node.groups
            ):
                raise KeyError(path)
            node = node.arrays.get(part) or node.groups[part]
        return node

    @property
    def nbytes(self) -> int:
        """Bytes held in memory by the chunk references of every array in the tree."""
        return sum(n.manifest.nbytes for _, n in self.walk() if isinstance(n, ManifestArray))

    @classmethod
    def from_virtual_dataset(cls, ds: xr.Dataset) -> ManifestGroup:
        """Virtual variables keep their references; loaded ones are CF-encoded as xarray would
        write them and held as inline chunks. Non-index coordinates are named in `coordinates`
        attributes, as xarray writes them, so readers find them again."""
        variables, attrs = encode_dataset_coordinates(ds)
        arrays = {str(name): _to_manifest_array(str(name), var) for name, var in variables.items()}
        return cls(arrays=arrays, attributes=json_value(dict(attrs)))


def _to_manifest_array(name: str, var: xr.Variable) -> ManifestArray:
    data = var.data
    if isinstance(data, ManifestArray):
        info = data.info.replace(
            attributes=encode_attributes(var.attrs, data.dtype),
            dimension_names=tuple(str(d) for d in var.dims),
        )
        return ManifestArray(info, data.manifest, name=name)
    if not hasattr(data, "__array__"):
        raise VcubeError(f"variable {name!r} holds a {type(data).__name__}, not values or refs")
    var = var.load().copy()
    if "_FillValue" not in var.encoding and "_FillValue" not in var.attrs:
        var.encoding["_FillValue"] = None  # else xarray's encoder invents NaN for floats
    encoded = encode_cf_variable(var, name=name)
    _keep_source_time_attrs(var.encoding, encoded.attrs)
    values: Any = encoded.values
    return inline_array(
        values,
        name=name,
        dimension_names=tuple(str(d) for d in encoded.dims),
        attributes=encode_attributes(encoded.attrs, values.dtype),
    )


def _keep_source_time_attrs(encoding: dict[str, Any], attrs: dict[str, Any]) -> None:
    """Write the time `units` and `calendar` back as the file had them: xarray's encoder spells
    units its own way ("...Z" becomes "...+00:00") and adds a calendar the file did not name."""
    units = encoding.get("units")
    written = attrs.get("units")
    if not isinstance(units, str) or not isinstance(written, str):
        return
    if _time_units(units) != _time_units(written):
        return  # xarray chose other units to hold the values exactly: keep them
    attrs["units"] = units
    if "calendar" not in encoding:
        attrs.pop("calendar", None)


def _time_units(units: str) -> tuple[str, pd.Timestamp] | None:
    """("days", reference time) for "days since 2000-01-01 00:00:00Z"; None when not a time."""
    step, since, reference = units.partition(" since ")
    if not since:
        return None
    try:
        stamp = pd.Timestamp(reference.strip())
    except ValueError:
        return None
    return step.strip().lower(), stamp.tz_convert(None) if stamp.tzinfo else stamp


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name
