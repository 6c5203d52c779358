"""Virtual arrays: chunk manifests, manifest arrays and groups, and the store that serves them."""

from vcube.manifests.array import ManifestArray
from vcube.manifests.group import ManifestGroup
from vcube.manifests.manifest import ChunkManifest, ChunkRef
from vcube.manifests.store import ManifestStore

__all__ = ["ChunkManifest", "ChunkRef", "ManifestArray", "ManifestGroup", "ManifestStore"]
