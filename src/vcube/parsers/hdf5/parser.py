"""`HDFParser`: a local or remote HDF5 file walked by the native reader, or with h5py where the
native reader does not decode the file."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h5py
import hdf5plugin  # noqa: F401  (registers the blosc, zstd, lz4, bzip2 filters with HDF5)

from vcube.errors import SourceNotFoundError, UnsupportedFormatError, VcubeError
from vcube.manifests import ManifestGroup, ManifestStore
from vcube.parsers.hdf5.binary import Image, NativeUnsupported, local_image
from vcube.parsers.hdf5.native import native_group, superblock_image
from vcube.parsers.hdf5.walker import Walker
from vcube.readers import ObjectReader, ReadOptions, ReadStats
from vcube.registry import ObjectStoreRegistry, local_path, normalize_url

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator

    from obstore.store import ObjectStore

__all__ = ["HDFParser"]


@dataclass(frozen=True)
class HDFParser:
    """Parse NetCDF4 / HDF5 files into a `ManifestStore`.

    Parameters
    ----------
    group
        Path of the group to open (default: the root group); its subgroups are kept.
    drop_variables
        Variables to leave out.
    load_unsupported
        Variables (or True for all) whose filters have no Zarr codec, to read at parse time into
        inline chunks instead of raising `UnsupportedFeatureError`.
    max_load_bytes
        Refuse to load a variable larger than this.
    read_options
        How remote files are read (range requests, read-ahead blocks or whole file).
    """

    group: str | None = None
    drop_variables: Collection[str] = ()
    load_unsupported: bool | Collection[str] = False
    max_load_bytes: int = 64 * 2**20
    read_options: ReadOptions = field(default_factory=ReadOptions)
    stats: ReadStats = field(default_factory=ReadStats, compare=False)
    """Requests and bytes of every parse made with this parser (in this process)."""

    def __call__(self, url: str, registry: ObjectStoreRegistry | None = None) -> ManifestStore:
        url = normalize_url(url)
        registry = registry or ObjectStoreRegistry()
        stats = ReadStats()
        store, path, prefix = registry.resolve_with_prefix(url)
        local = local_path(url) if prefix is None else None
        reader = None
        if local is None:
            reader = _remote_reader(store, path, url, self.read_options, stats)
        with _image(local, reader) as image:
            group = self._native(url, image) if image is not None else None
            if group is None:
                with _open_hdf5(url, local, reader) as file:
                    walker = Walker(self, url, file, superblock_image(image) if image else None)
                    group = walker.group(self._root(file, url).id)
        self.stats.merge(stats)
        # The reader's cached blocks serve the coordinates loaded next, without new requests.
        return ManifestStore(group, registry=registry, read_stats=stats, prefetched=reader)

    def _native(self, url: str, image: Image) -> ManifestGroup | None:
        """The file walked by the native reader, or None where only h5py reads it."""
        try:
            return native_group(self, url, image, self.group)
        except VcubeError:
            raise  # the reader's I/O errors: transient ones must stay retryable
        except (NativeUnsupported, OSError):  # a local read that fails: h5py says what is wrong
            return None

    def _root(self, file: h5py.File, url: str) -> h5py.Group:
        if not self.group:
            # The root group, not the File: the File's id has the file's creation properties,
            # which would list the root's attributes by name instead of in creation order.
            return file["/"]
        node = file.get(self.group)
        if not isinstance(node, h5py.Group):
            groups = sorted(k for k, v in file.items() if isinstance(v, h5py.Group))
            raise VcubeError(f"{url}: no group {self.group!r} (groups at the root: {groups})")
        return node

    def loads(self, name: str) -> bool:
        if isinstance(self.load_unsupported, bool):
            return self.load_unsupported
        return name in self.load_unsupported


@contextlib.contextmanager
def _image(local: str | None, reader: ObjectReader | None) -> Iterator[Image | None]:
    """The file's bytes for vcube's own readers, None where the file cannot be opened (h5py
    then says why)."""
    if reader is not None:
        yield Image(reader.read_range, reader.size)
        return
    assert local is not None
    with contextlib.ExitStack() as stack:
        try:
            image: Image | None = stack.enter_context(local_image(local))
        except OSError:
            image = None
        yield image


def _remote_reader(
    store: ObjectStore, path: str, url: str, options: ReadOptions, stats: ReadStats
) -> ObjectReader:
    try:
        return ObjectReader(store, path, url=url, options=options, stats=stats)
    except VcubeError:
        raise
    except FileNotFoundError as err:
        raise SourceNotFoundError(f"{url}: file not found") from err


@contextlib.contextmanager
def _open_hdf5(url: str, local: str | None, reader: ObjectReader | None) -> Iterator[h5py.File]:
    try:
        file = h5py.File(local if local is not None else reader, "r")
    except VcubeError:
        raise
    except FileNotFoundError as err:
        raise SourceNotFoundError(f"{url}: file not found") from err
    except OSError as err:
        raise UnsupportedFormatError(f"{url}: not a readable HDF5/NetCDF4 file ({err})") from err
    with file:
        try:
            yield file
        except VcubeError:
            raise  # already names the file; transient ones must stay retryable
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            raise UnsupportedFormatError(f"{url}: corrupt or truncated HDF5 file ({err})") from err
