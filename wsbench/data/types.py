"""Containers passed between datasets, the runner and plugins.

Axis order everywhere is ``(z, y, x)`` — SimpleITK's ``GetArrayFromImage`` order — and
``spacing`` is given in the same order, in millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Patch geometry, part of a benchmark's definition.

    ``size`` voxels per axis at isotropic ``spacing_mm``; the nodule centre is placed at a
    seeded random offset of up to ``max_offset_vox`` voxels per axis from the patch centre
    (so that "predict the centre" does not win), shrunk where needed to keep the nodule
    inside the patch.
    """

    size: int = 32
    spacing_mm: float = 1.0
    max_offset_vox: int = 6

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, self.size)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return (self.spacing_mm,) * 3

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "spacing_mm": self.spacing_mm, "max_offset_vox": self.max_offset_vox}


@dataclass
class Case:
    """One evaluation case: a patch around one annotated nodule.

    ``image``: ``(D, H, W)`` float32, normalised intensity (:mod:`wsbench.data.intensity`).
    ``mask``: ``(D, H, W)`` bool ground truth — used by evaluation only, never shown to plugins.
    ``spacing``: ``(z, y, x)`` mm. ``info``: JSON-able facts recorded per case — at least
    ``seriesuid`` and ``diameter_mm``; datasets add e.g. ``texture``, ``nodule_type``,
    ``centre_world_mm``.
    """

    case_id: str
    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class PatchSet:
    """The training view: patches with image-level labels only (no masks, by construction).

    ``images``: ``(N, D, H, W)`` float32 normalised; ``labels``: ``(N,)`` int64 in {0, 1}
    (1 = a nodule is in the patch); ``ids``: N strings (``<seriesuid>:<kind>:<k>``);
    ``groups``: N scan ids (for grouped operations).
    """

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    groups: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"PatchSet.images must be (N, D, H, W), got {self.images.shape}")
        if len(self.images) != len(self.labels) or len(self.ids) != len(self.labels):
            raise ValueError("PatchSet: images, labels and ids differ in length")

    def subset(self, index) -> "PatchSet":
        index = np.asarray(index)
        return PatchSet(self.images[index], self.labels[index], [self.ids[i] for i in index],
                        [self.groups[i] for i in index] if self.groups else [])
