"""`HDFParser`: NetCDF4 and plain HDF5 files as virtual Zarr arrays.

Two walks make the same variables. The native one (`native`, over `binary`, `objects`,
`messages`, `dense` and `chunk_index`) decodes the HDF5 format itself, in Python and numpy, and
reads most files several times faster than h5py can list their chunks. What it does not decode it
hands to the h5py one (`walker`, over `attributes`, `dimensions`, `layout` and `chunks`), which
goes through h5py's low-level API and takes chunk locations from `chunk_index` where it can, else
from HDF5's `chunk_iter`. Filter pipelines become Zarr v3 codecs; compact datasets and
variable-length strings, whose bytes are not a plain byte range of the file, are read at parse
time into inline chunks.
"""

from vcube.parsers.hdf5.parser import HDFParser

__all__ = ["HDFParser"]
