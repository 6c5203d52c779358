"""Reaching targets and source files: a store for each bucket, whole objects, file objects."""

from __future__ import annotations

from typing import TYPE_CHECKING

import obstore

from vcube.errors import StoreNotFoundError
from vcube.readers import ObjectReader, translate_io_error
from vcube.registry import normalize_url
from vcube.stores import registry_for

if TYPE_CHECKING:
    from collections.abc import Iterable

    from vcube.registry import ObjectStoreRegistry
    from vcube.stores import ObjectStoreOptions

__all__ = ["add_stores", "fetch", "object_reader", "unique"]


def add_stores(
    registry: ObjectStoreRegistry, urls: Iterable[str], options: ObjectStoreOptions
) -> None:
    """Register a store made from `options` for each bucket of `urls` that `registry` does not
    serve yet."""
    missing = []
    for url in urls:
        try:
            registry.resolve(url)
        except StoreNotFoundError:
            missing.append(url)
    extra = registry_for(missing, options)
    for prefix in extra.prefixes:
        registry.register(prefix, extra.resolve(prefix)[0])


def fetch(url: str, registry: ObjectStoreRegistry) -> bytes:
    """The whole object at `url`."""
    store, path = registry.resolve(url)
    try:
        return bytes(obstore.get(store, path).bytes())
    except Exception as err:
        raise translate_io_error(err, url) from err


def object_reader(url: str, registry: ObjectStoreRegistry) -> ObjectReader:
    """A seekable file object over `url`, for libraries that read file objects."""
    store, path = registry.resolve(url)
    return ObjectReader(store, path, url=url)


def unique(urls: Iterable[str]) -> list[str]:
    """Normalized URLs, once each, in order of first appearance."""
    return list(dict.fromkeys(normalize_url(u) for u in urls))
