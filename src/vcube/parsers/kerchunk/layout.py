"""The groups and arrays the metadata documents of Kerchunk references describe (Zarr v2 `.zgroup`,
`.zattrs` and `.zarray`, or Zarr v3 `zarr.json`), and those a parser's `group` and
`drop_variables` select."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from vcube.errors import UnsupportedFormatError, VcubeError
from vcube.parsers.zarr_metadata import ARRAY_DIMENSIONS, ancestors, array_info, group_tree

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from zarr.core.common import JSON

    from vcube.manifests import ManifestArray, ManifestGroup
    from vcube.manifests.metadata import ArrayInfo
    from vcube.parsers.zarr_metadata import KeyEncoding

__all__ = ["METADATA_KEYS", "Array", "Layout"]

METADATA_KEYS: Final = frozenset({".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"})


@dataclass(frozen=True, slots=True)
class Array:
    """An array the metadata describes: its key prefix, variable name, metadata and chunk keys."""

    path: str
    name: str
    info: ArrayInfo
    encoding: KeyEncoding


class Layout:
    """The groups and arrays the metadata documents describe, and those selected by `group` and
    `drop_variables`."""

    def __init__(
        self,
        docs: Mapping[str, Any],
        source: str,
        *,
        group: str | None,
        drop_variables: Collection[str],
        root_array_name: str,
    ) -> None:
        self.source = source
        self.root = (group or "").strip("/")
        self.drop = frozenset(drop_variables)
        self.root_array_name = root_array_name
        arrays: dict[str, tuple[Literal[2, 3], dict[str, Any]]] = {}
        self.groups: dict[str, dict[str, JSON]] = {}
        attrs: dict[str, dict[str, Any]] = {}
        for key, value in docs.items():
            path, _, name = key.rpartition("/")
            if name not in METADATA_KEYS or name == ".zmetadata":
                continue
            doc = _document(value, key, source)
            if name == ".zarray":
                arrays[path] = (2, doc)
            elif name == ".zgroup":
                self.groups.setdefault(path, {})
            elif name == ".zattrs":
                attrs[path] = doc
            elif doc.get("node_type") == "array":
                arrays[path] = (3, doc)
            else:
                self.groups[path] = doc.get("attributes") or {}
        if not arrays and not self.groups:
            raise UnsupportedFormatError(
                f"{source}: not Kerchunk references: no Zarr metadata (.zgroup, .zarray or "
                f"zarr.json) among its {len(docs)} metadata keys"
            )
        for path, doc in attrs.items():
            if path in arrays:
                continue
            if ARRAY_DIMENSIONS in doc and self._wanted(path):
                raise UnsupportedFormatError(
                    f"{source}: {path}/.zattrs describes an array, but there is no "
                    f"{path}/.zarray; add it, or drop the array with "
                    f"drop_variables=[{path.rpartition('/')[2]!r}]"
                )
            self.groups.setdefault(path, {}).update(doc)
        implied = {a for p in arrays for a in ancestors(p)}
        if self.root and self.root not in self.groups and self.root not in implied:
            found = sorted(g for g in self.groups if g) or "none"
            raise VcubeError(f"{source}: no group {self.root!r} (groups: {found})")
        self.array_paths = frozenset(arrays)
        self.selected = {
            path: self._array(path, version, doc, attrs.get(path, {}))
            for path, (version, doc) in arrays.items()
            if self._wanted(path)
        }

    def _relative(self, path: str) -> str | None:
        """`path` below the opened group, or None when it is outside it."""
        if not self.root:
            return path
        return path[len(self.root) + 1 :] if path.startswith(self.root + "/") else None

    def _name(self, path: str) -> str | None:
        """The variable name of the array at `path`, or None when it is outside the group."""
        return self.root_array_name if path == "" else self._relative(path)

    def _wanted(self, path: str) -> bool:
        name = self._name(path)
        return name is not None and not (self.drop & {name, name.rpartition("/")[2]})

    def _array(
        self, path: str, version: Literal[2, 3], doc: dict[str, Any], zattrs: dict[str, Any]
    ) -> Array:
        name = self._name(path) or self.root_array_name
        where = f"{self.source}: array {path or '/'!r}"
        info, encoding = array_info(version, doc, zattrs, where=where, name=name)
        return Array(path, name, info, encoding)

    def array_of(self, prefix: str, example: str) -> str | None:
        """The array whose chunk keys are under `prefix` (chunk keys may hold `/` themselves);
        raises when an array's chunks have no metadata."""
        path = prefix
        while True:
            if path in self.array_paths:
                return path
            if not path:
                break
            path = path.rpartition("/")[0]
        first = prefix.split("/", 1)[0]
        if prefix and self._wanted(prefix) and first not in self.drop:
            raise UnsupportedFormatError(
                f"{self.source}: chunk references under {prefix!r} (e.g. {prefix}/{example}) "
                f"but no {prefix}/.zarray (or zarr.json) describes that array; add its "
                f"metadata, or drop it with drop_variables=[{prefix.rpartition('/')[2]!r}]"
            )
        return None

    def tree(self, arrays: dict[str, ManifestArray]) -> ManifestGroup:
        """The opened group with its subgroups and the built arrays (by name below it)."""
        groups = {"": self.groups.get(self.root, {})}
        groups.update(
            (n, a) for g, a in self.groups.items() if (n := self._relative(g)) is not None
        )
        return group_tree(arrays, groups)


def _document(value: Any, key: str, source: str) -> dict[str, Any]:
    """A metadata document, given as JSON text (possibly base64) or as an object."""
    try:
        if isinstance(value, str) and value.startswith("base64:"):
            value = base64.b64decode(value[7:])
        doc = json.loads(value) if isinstance(value, str | bytes) else value
    except (ValueError, TypeError) as err:
        raise UnsupportedFormatError(f"{source}: {key} is not valid JSON ({err})") from err
    if not isinstance(doc, dict):
        raise UnsupportedFormatError(f"{source}: {key} is not a JSON object: {value!r:.80}")
    return doc
