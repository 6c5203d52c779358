"""`HDFParser`: NetCDF4 and plain HDF5 files as virtual Zarr arrays, with h5py for the metadata.

Chunk locations come from HDF5's own chunk index (`chunk_iter`); filter pipelines become Zarr v3
codecs; compact datasets and variable-length strings, whose bytes are not a plain byte range of the
file, are read at parse time into inline chunks.

The walk goes through h5py's low-level API (object ids, property lists, attribute ids): its
high-level objects rebuild a dataspace, a type or a property list on every property access, which
made the walk cost three times as much as enumerating the chunks. Each dataset's creation property
list is read once; attributes are read as h5py reads them, with in-memory types built once.

Modules, in the order a parse uses them: `parser` (`HDFParser`, opening the file), `walker` (groups
and datasets), `attributes`, `dimensions` (dimension scales, DIMENSION_LIST, phony dimensions),
`layout` (data type, fill value, filters as codecs) and `chunks` (chunk manifests).
"""

from vcube.parsers.hdf5.parser import HDFParser

__all__ = ["HDFParser"]
