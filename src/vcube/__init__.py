"""vcube: archival scientific files as one virtual, cloud-optimized Zarr datacube."""

from vcube import accessor as _accessor  # registers ds.vcube
from vcube.api import open_virtual_dataset, open_virtual_mfdataset
from vcube.errors import (
    ChunkNotFoundError,
    IncompatibleArraysError,
    NotVirtualizableError,
    TransientIOError,
    UnsupportedFeatureError,
    UnsupportedFormatError,
    VcubeError,
)
from vcube.manifests import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore
from vcube.parsers import HDFParser, NetCDF3Parser
from vcube.registry import ObjectStoreRegistry

del _accessor

__all__ = [
    "ChunkManifest",
    "ChunkNotFoundError",
    "HDFParser",
    "IncompatibleArraysError",
    "ManifestArray",
    "ManifestGroup",
    "ManifestStore",
    "NetCDF3Parser",
    "NotVirtualizableError",
    "ObjectStoreRegistry",
    "TransientIOError",
    "UnsupportedFeatureError",
    "UnsupportedFormatError",
    "VcubeError",
    "open_virtual_dataset",
    "open_virtual_mfdataset",
]
