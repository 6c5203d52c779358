"""Object stores from URLs and a few options: a registry for input files, and an Icechunk
repository (its storage, the virtual chunk containers its references need, and their
credentials). The command line builds everything from these; credentials come from the
environment (``AWS_ACCESS_KEY_ID``, ...), as the cloud SDKs read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import obstore.store

from vcube.errors import StoreNotFoundError, VcubeError
from vcube.registry import ObjectStoreRegistry, local_path, normalize_url

if TYPE_CHECKING:
    from collections.abc import Iterable

    import icechunk as ic

__all__ = [
    "ObjectStoreOptions",
    "container_prefix",
    "open_repository",
    "registry_for",
    "repository_exists",
]

OBJECT_SCHEMES = ("s3", "gs", "az", "abfs", "http", "https")


@dataclass(frozen=True, slots=True)
class ObjectStoreOptions:
    """How to reach object storage: a custom S3 endpoint (MinIO, Ceph, a local test server), its
    region, and anonymous access (public buckets)."""

    endpoint: str | None = None
    region: str | None = None
    anonymous: bool = False

    @property
    def allow_http(self) -> bool:
        return bool(self.endpoint and self.endpoint.startswith("http://"))


def bucket_prefix(url: str) -> str | None:
    """`scheme://bucket` of an object-store URL; None for local paths and `file://`."""
    parts = urlsplit(url)
    if parts.scheme not in OBJECT_SCHEMES:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def registry_for(urls: Iterable[str], options: ObjectStoreOptions) -> ObjectStoreRegistry:
    """A registry with one obstore store per bucket (or host) that `urls` name."""
    registry = ObjectStoreRegistry()
    for prefix in sorted({p for p in map(bucket_prefix, urls) if p}):
        registry.register(prefix, _obstore(prefix, options))
    return registry


def _obstore(prefix: str, options: ObjectStoreOptions) -> obstore.store.ObjectStore:
    kwargs: dict[str, Any] = {}
    if prefix.startswith("s3://"):
        if options.endpoint:
            kwargs |= {"endpoint": options.endpoint, "virtual_hosted_style_request": False}
        if options.region:
            kwargs["region"] = options.region
        if options.anonymous:
            kwargs["skip_signature"] = True
    if options.allow_http:
        kwargs["client_options"] = {"allow_http": True}
    return obstore.store.from_url(prefix, **kwargs)


def container_prefix(url: str) -> str:
    """The virtual chunk container prefix for a source URL: its bucket, or its directory."""
    bucket = bucket_prefix(url)
    if bucket:
        return bucket + "/"
    return normalize_url(url).rsplit("/", 1)[0] + "/"


def repository_exists(location: str, options: ObjectStoreOptions) -> bool:
    """Whether an Icechunk repository exists at `location`."""
    import icechunk as ic

    path = local_path(normalize_url(location))
    if path is not None and not Path(path).is_dir():
        return False
    try:
        return bool(ic.Repository.exists(_storage(location, options)))
    except (ic.IcechunkError, StoreNotFoundError, VcubeError):
        return False


def open_repository(
    location: str,
    options: ObjectStoreOptions,
    *,
    sources: Iterable[str] = (),
    config: ic.RepositoryConfig | None = None,
) -> ic.Repository:
    """Open the Icechunk repository at `location` (a path or `s3://bucket/prefix`), creating it
    with `config` when it does not exist, with a virtual chunk container for every bucket or
    directory of `sources` (saved in its config) and access to all its containers authorized."""
    import icechunk as ic

    path = local_path(normalize_url(location))
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise VcubeError(f"{location}: is a file, not an Icechunk repository (a directory)")
    storage = _storage(location, options)
    exists = ic.Repository.exists(storage)
    if exists:
        config = ic.Repository.fetch_config(storage) or ic.RepositoryConfig.default()
    config = config or ic.RepositoryConfig.default()
    known = set(config.virtual_chunk_containers or {})
    added = False
    for prefix in sorted({container_prefix(s) for s in sources}):
        if not any(prefix.startswith(k) for k in known):
            config.set_virtual_chunk_container(_container(prefix, options))
            known.add(prefix)
            added = True
    credentials = ic.containers_credentials({p: _credentials(p, options) for p in known})
    if not exists:
        return ic.Repository.create(
            storage, config=config, authorize_virtual_chunk_access=credentials
        )
    repo = ic.Repository.open(storage, config=config, authorize_virtual_chunk_access=credentials)
    if added:
        repo.save_config()
    return repo


def _storage(location: str, options: ObjectStoreOptions) -> ic.Storage:
    import icechunk as ic

    url = normalize_url(location)
    path = local_path(url)
    if path is not None:
        return ic.local_filesystem_storage(str(Path(path)))
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise StoreNotFoundError(
            f"{location}: Icechunk repositories are supported on local paths and s3:// URLs here"
        )
    prefix = parts.path.strip("/")
    if not prefix:
        raise VcubeError(f"{location}: give the repository a prefix inside the bucket")
    return ic.s3_storage(
        bucket=parts.netloc,
        prefix=prefix,
        region=options.region,
        endpoint_url=options.endpoint,
        allow_http=options.allow_http,
        anonymous=options.anonymous or None,
        from_env=None if options.anonymous else True,
        force_path_style=bool(options.endpoint),
    )


def _container(prefix: str, options: ObjectStoreOptions) -> ic.VirtualChunkContainer:
    import icechunk as ic

    path = local_path(prefix)
    if path is not None:
        return ic.VirtualChunkContainer(prefix, ic.local_filesystem_store(path))
    if prefix.startswith("s3://"):
        store = ic.s3_store(
            region=options.region,
            endpoint_url=options.endpoint,
            allow_http=options.allow_http,
            anonymous=options.anonymous,
            s3_compatible=bool(options.endpoint),
            force_path_style=bool(options.endpoint),
        )
        return ic.VirtualChunkContainer(prefix, store)
    if prefix.startswith(("http://", "https://")):
        return ic.VirtualChunkContainer(prefix, ic.http_store())
    raise StoreNotFoundError(f"{prefix}: no Icechunk virtual chunk container for this scheme")


def _credentials(prefix: str, options: ObjectStoreOptions) -> Any:
    import icechunk as ic

    if prefix.startswith("file://"):
        return ic.credentials.LocalFileSystemAccess
    if prefix.startswith("s3://"):
        if options.anonymous:
            return ic.s3_credentials(anonymous=True)
        return ic.s3_credentials(from_env=True)
    if prefix.startswith(("http://", "https://")):
        return ic.credentials.HttpAccess
    return None
