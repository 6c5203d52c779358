"""`ObjectStoreRegistry`: which obstore store serves a URL, by longest matching prefix.

Local paths and `file://` URLs need no registration: they resolve to a `LocalStore` rooted at `/`.
"""

from __future__ import annotations

import fnmatch
import glob
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import obstore
from obstore.store import LocalStore

from vcube.errors import SourceNotFoundError, StoreNotFoundError
from vcube.readers import translate_io_error

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from obstore.store import ObjectStore

__all__ = ["ObjectStoreRegistry", "expand_glob", "expand_urls", "local_path", "normalize_url"]

GLOB_CHARS = frozenset("*?[")


def normalize_url(url_or_path: str | Path) -> str:
    """An absolute URL: local paths become `file://` URLs, URLs are returned unchanged."""
    text = str(url_or_path)
    scheme = urlsplit(text).scheme
    if scheme and len(scheme) > 1:  # a one-letter scheme is a Windows drive
        return text
    return Path(text).expanduser().resolve().as_uri()


def local_path(url: str) -> str | None:
    """The filesystem path of a `file://` URL, or None for any other URL."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    return unquote(parts.path)


class ObjectStoreRegistry:
    """Map URL prefixes (`s3://bucket`, `https://host/path`, `file:///data`) to obstore stores.

    Parameters
    ----------
    stores
        Prefix to store. A store registered for `s3://bucket/prefix` receives paths relative to
        that prefix, so it should itself be created with that bucket and prefix.
    """

    def __init__(self, stores: Mapping[str, ObjectStore] | None = None) -> None:
        self._stores: dict[str, ObjectStore] = {}
        for prefix, store in (stores or {}).items():
            self.register(prefix, store)

    def register(self, prefix: str, store: ObjectStore) -> None:
        """Serve every URL under `prefix` from `store`."""
        self._stores[_strip(prefix)] = store

    @property
    def prefixes(self) -> tuple[str, ...]:
        return tuple(self._stores)

    def resolve(self, url: str) -> tuple[ObjectStore, str]:
        """The store for `url` and the path of the object within that store."""
        store, path, _ = self.resolve_with_prefix(url)
        return store, path

    def resolve_with_prefix(self, url: str) -> tuple[ObjectStore, str, str | None]:
        """Like `resolve`, also returning the registered prefix (None for the implicit local)."""
        url = normalize_url(url)
        matches = [p for p in self._stores if url == p or url.startswith(p + "/")]
        if matches:
            prefix = max(matches, key=len)
            return self._stores[prefix], unquote(url[len(prefix) :].lstrip("/")), prefix
        path = local_path(url)
        if path is not None:
            return _root_store(), path.lstrip("/"), None
        registered = ", ".join(self._stores) or "none"
        raise StoreNotFoundError(
            f"no object store is registered for {url!r} (registered prefixes: {registered}). "
            f"Register one, e.g. ObjectStoreRegistry({{'{_bucket_prefix(url)}': S3Store(...)}})."
        )

    def __repr__(self) -> str:
        return f"ObjectStoreRegistry({list(self._stores)})"


@cache
def _root_store() -> LocalStore:
    return LocalStore()


def _strip(prefix: str) -> str:
    scheme, sep, rest = prefix.partition("://")
    return scheme + sep + rest.rstrip("/")


def _bucket_prefix(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def expand_glob(pattern: str, registry: ObjectStoreRegistry) -> list[str]:
    """The sorted URLs matching a glob (`data/*.nc`, `s3://bucket/2024/*/*.nc`); a string with
    no glob characters is returned as the one URL it names."""
    if not GLOB_CHARS & set(pattern):
        return [normalize_url(pattern)]
    scheme = urlsplit(pattern).scheme
    if len(scheme) <= 1 or scheme == "file":
        # Not urlsplit: a `?` in a glob is not the start of a query.
        local = unquote(pattern.removeprefix("file://")) if scheme == "file" else pattern
        absolute = str(Path(local or pattern).expanduser().absolute())
        return sorted(Path(p).resolve().as_uri() for p in glob.glob(absolute) if Path(p).is_file())
    url = pattern
    # Object stores have no folders to walk: list everything under the fixed part of the
    # pattern in one call, then match.
    fixed = url[: min(url.index(c) for c in GLOB_CHARS if c in url)]
    folder = fixed[: fixed.rfind("/") + 1]
    store, prefix, registered = registry.resolve_with_prefix(folder)
    base = f"{registered}/" if registered else folder[: len(folder) - len(prefix)]
    try:
        listed = [
            base + meta["path"] for batch in obstore.list(store, prefix=prefix) for meta in batch
        ]
    except Exception as err:
        raise translate_io_error(err, folder) from err
    return sorted(u for u in listed if _glob_match(u, url))


def expand_urls(patterns: Iterable[str], registry: ObjectStoreRegistry) -> list[str]:
    """Every URL that the paths, URLs and globs name, in the order given (each glob sorted),
    once each; a glob that matches nothing is an error."""
    urls: dict[str, None] = {}
    for pattern in patterns:
        matched = expand_glob(pattern, registry)
        if not matched:
            raise SourceNotFoundError(f"{pattern}: no files match")
        urls.update(dict.fromkeys(matched))
    return list(urls)


def _glob_match(url: str, pattern: str) -> bool:
    """Glob matching where, as in a file system, `*` and `?` never cross a `/`."""
    parts, pattern_parts = url.split("/"), pattern.split("/")
    return len(parts) == len(pattern_parts) and all(
        fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pattern_parts, strict=True)
    )
