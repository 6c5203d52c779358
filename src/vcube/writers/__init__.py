"""Writers: persist a virtual dataset's references in formats other tools read."""

from vcube.writers.icechunk import to_icechunk
from vcube.writers.kerchunk import to_kerchunk

__all__ = ["to_icechunk", "to_kerchunk"]
