"""Real LIDC-IDRI nodule shapes placed into a synthetic lung: choice, placement, insertion.

Shapes come from :func:`wsbench.data.lidc.lidc_nodule_shapes` (one radiologist's outline,
on an isotropic grid); each is rotated about the patient axis at random, mirrored at
random, and *not* rescaled, so the set inherits LIDC's size mix (3–30 mm, about two thirds
under 10 mm, like LUNA16's). LIDC's texture rating sets the appearance: 1–2 ground glass,
3 part-solid (ground glass with a solid core), 4–5 solid.

Placements: ``isolated`` (deep in parenchyma), ``juxtapleural`` (abutting the pleura; the
truth mask stops at the lung boundary, as a radiologist's outline does) and
``juxtavascular`` (touching a vessel of radius ≥ 0.8 mm).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from wsbench.data.synth.grid import ScanGrid

PLACEMENTS = ("isolated", "juxtapleural", "juxtavascular")


def nodule_type(texture: int) -> str:
    """LIDC texture rating (1–5) → ``ground-glass`` (1–2), ``part-solid`` (3) or ``solid`` (4–5)."""
    return "ground-glass" if texture <= 2 else ("part-solid" if texture == 3 else "solid")


@dataclass
class PreparedShape:
    """A shape ready to paste: float mask and solid-core mask, centroid and extent (mm)."""

    mask: np.ndarray          # float32 (z, y, x), isotropic
    core: np.ndarray          # float32, the solid part (part-solid nodules), else == mask
    spacing: float
    centroid: np.ndarray      # index coords (z, y, x) of the mask's centroid
    radius_mm: float          # max distance of a mask voxel from the centroid
    diameter_mm: float
    texture: int
    source: str               # "<LIDC seriesuid>:<annotation id>"


def prepare_shape(shape, rng: np.random.Generator) -> PreparedShape:
    """Pad and describe a :class:`wsbench.data.lidc.NoduleShape` (and pick its solid core)."""
    m = np.pad(shape.mask.astype(bool), 2)
    idx = np.argwhere(m)
    c = idx.mean(axis=0)
    rad = float(np.sqrt(((idx - c) ** 2).sum(1)).max() * shape.spacing_mm + shape.spacing_mm)
    core = m
    if nodule_type(shape.texture) == "part-solid":
        depth = ndimage.distance_transform_edt(m)
        core = depth >= rng.uniform(0.35, 0.6) * depth.max()
    return PreparedShape(m.astype(np.float32), core.astype(np.float32), float(shape.spacing_mm), c, rad,
                         float(shape.diameter_mm), int(shape.texture),
                         f"{shape.series_uid}:{shape.annotation_id}")


@dataclass
class PlacedNodule:
    shape: PreparedShape
    centre: np.ndarray        # world (x, y, z) mm where the shape's centroid goes
    rotation: np.ndarray      # 3x3, shape (x, y, z) axes → world
    placement: str
    hu: float                 # solid part HU (solid / part-solid) or ground-glass HU
    ggo_hu: float
    label: int = 0
    centroid_world: np.ndarray = field(default_factory=lambda: np.zeros(3))
    n_voxels: int = 0


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation about the patient (z) axis, with a random left-right mirror."""
    a = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(a), np.sin(a)
    r = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    if rng.random() < 0.5:
        r = r @ np.diag([-1.0, 1.0, 1.0])
    return r


def occupancy(grid: ScanGrid, nod: PlacedNodule, which: str = "mask"):
    """Fraction (0..1) of each voxel covered by the nodule, in the nodule's box.

    Each voxel is sampled at 2×2 points in-plane and ``ceil(slice/0.6 mm)`` points across the
    slice, so thick slices get the true partial volume. Returns ``(slices, fraction)`` or
    ``(None, None)`` when the nodule is off the grid.
    """
    sh = nod.shape
    r = sh.radius_mm + 1.0
    sl = grid.box(nod.centre - r, nod.centre + r, margin_vox=1)
    if sl is None:
        return None, None
    Zw, Yw, Xw = grid.broadcast_axes(sl)
    sz, sy, sx = grid.spacing
    fz = grid.flip[2]
    nzs = max(1, int(np.ceil(sz / 0.6)))
    offs_z = (np.arange(nzs) - (nzs - 1) / 2) * (sz / nzs)
    offs_xy = np.array([-0.25, 0.25])
    vol = sh.mask if which == "mask" else sh.core
    shape = tuple(s.stop - s.start for s in sl)
    acc = np.zeros(shape, np.float32)
    rinv = nod.rotation.T
    n = 0
    for oz in offs_z:
        for oy in offs_xy * sy:
            for ox in offs_xy * sx:
                X = np.broadcast_to(Xw + ox - nod.centre[0], shape)
                Y = np.broadcast_to(Yw + oy - nod.centre[1], shape)
                Z = np.broadcast_to(Zw + fz * oz - nod.centre[2], shape)
                # world offset → shape axes (x, y, z) → shape index (z, y, x)
                lx = rinv[0, 0] * X + rinv[0, 1] * Y + rinv[0, 2] * Z
                ly = rinv[1, 0] * X + rinv[1, 1] * Y + rinv[1, 2] * Z
                lz = rinv[2, 0] * X + rinv[2, 1] * Y + rinv[2, 2] * Z
                coords = np.stack([lz / sh.spacing + sh.centroid[0], ly / sh.spacing + sh.centroid[1],
                                   lx / sh.spacing + sh.centroid[2]])
                acc += ndimage.map_coordinates(vol, coords.reshape(3, -1), order=1, cval=0.0,
                                               prefilter=False).reshape(shape)
                n += 1
    return sl, acc / n
