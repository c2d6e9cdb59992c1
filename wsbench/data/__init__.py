"""Data: containers, intensity normalisation, the LUNA16 reader and the synthetic set."""

from wsbench.data.types import Case, Geometry, PatchSet
from wsbench.data.intensity import HU_MAX, HU_MIN, hu_to_norm, norm_to_hu

__all__ = ["Case", "Geometry", "PatchSet", "HU_MIN", "HU_MAX", "hu_to_norm", "norm_to_hu"]
