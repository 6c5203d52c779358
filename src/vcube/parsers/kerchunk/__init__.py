"""`KerchunkJSONParser` and `KerchunkParquetParser`: Kerchunk references as virtual Zarr arrays.

Kerchunk references map Zarr keys to values: metadata documents (Zarr v2 `.zgroup`, `.zattrs`,
`.zarray`, or Zarr v3 `zarr.json`), chunk references `[url, offset, length]` or `[url]` (a whole
file), and inline chunk bytes. JSON holds them in one document (spec version 0 or 1, module
`references`, with the templates and `gen` of version 1 in `templates`); Parquet in the layout of
fsspec's `LazyReferenceMapper` (module `parquet`). Both read the groups and arrays of the metadata
(module `layout`) and fill each selected array's manifest columns at once (module `common`).

Zarr metadata becomes Zarr v3 metadata as `vcube.parsers.zarr_metadata` says (shared with the
Zarr parser): a v2 `fill_value` also becomes the `_FillValue` attribute, since xarray reads it so
from Zarr v2. Relative URLs are resolved against `fs_root`, by default the folder that holds the
references.
"""

from vcube.parsers.kerchunk.parquet import KerchunkParquetParser
from vcube.parsers.kerchunk.references import KerchunkJSONParser

__all__ = ["KerchunkJSONParser", "KerchunkParquetParser"]
