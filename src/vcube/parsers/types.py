"""The parser protocol: a configured callable from a URL to a `ManifestStore`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from vcube.manifests import ManifestStore
    from vcube.registry import ObjectStoreRegistry

__all__ = ["Parser"]


class Parser(Protocol):
    """Reads one file's metadata and returns a store of its virtual arrays."""

    def __call__(self, url: str, registry: ObjectStoreRegistry | None = None) -> ManifestStore: ...
