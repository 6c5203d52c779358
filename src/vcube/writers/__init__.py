"""Writers: persist a virtual dataset's references in formats other tools read."""

from vcube.writers.kerchunk import to_kerchunk

__all__ = ["to_kerchunk"]
from vcube.writers.icechunk import to_icechunk as to_icechunk
