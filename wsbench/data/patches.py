"""Patch extraction on the benchmark's isotropic grid: images, masks, offsets, sampling positions.

A patch is a ``Geometry.size``³ grid of ``Geometry.spacing_mm`` voxels with an **identity
direction**: patch index ``[k, j, i]`` is world ``origin + (i, j, k) * spacing`` (x, y, z), so
patch axes are world axes ``(z, y, x)`` in increasing order whatever the scan's direction.

* Images: HU resampled with linear interpolation (SimpleITK), outside the scan = -1000 HU (air),
  then normalised by :func:`wsbench.data.intensity.hu_to_norm` (window [-1000, 400] → [-1, 1]).
* Masks: the nodule's *fraction* is resampled linearly and thresholded at 0.5, so a 3 mm nodule
  on 2.5 mm slices does not vanish as it can with nearest-neighbour resampling.
* Offsets: the nodule centre sits at patch index ``(size - 1) / 2 + offset`` with an integer
  ``offset`` per axis drawn uniformly from ``[-max_offset_vox, max_offset_vox]``, narrowed per
  axis so the nodule's extent stays inside the patch (:func:`offset_bounds`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from wsbench.data.intensity import HU_MIN
from wsbench.data.lidc import PlacedMask
from wsbench.data.types import Geometry

OUTSIDE_HU = HU_MIN


def patch_origin(centre_xyz: Sequence[float], geometry: Geometry, offset_zyx: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """World ``(x, y, z)`` of patch voxel ``[0, 0, 0]`` when world point ``centre_xyz`` is to sit
    at patch index ``(size - 1) / 2 + offset_zyx``."""
    pos = (geometry.size - 1) / 2.0 + np.asarray(offset_zyx, float)[::-1]
    return np.asarray(centre_xyz, float) - pos * geometry.spacing_mm


def patch_box(origin_xyz: Sequence[float], geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """World ``(x, y, z)`` lower and upper corners of the region the patch's voxels cover."""
    o = np.asarray(origin_xyz, float)
    s = geometry.spacing_mm
    return o - s / 2, o + (geometry.size - 0.5) * s


def distance_to_box(point_xyz: Sequence[float], lo: np.ndarray, hi: np.ndarray) -> float:
    """Euclidean distance (mm) from a point to an axis-aligned box (0 inside)."""
    p = np.asarray(point_xyz, float)
    d = np.maximum(np.maximum(lo - p, p - hi), 0.0)
    return float(np.sqrt((d * d).sum()))


def _reference(origin_xyz, geometry: Geometry) -> sitk.Image:
    ref = sitk.Image([geometry.size] * 3, sitk.sitkFloat32)
    ref.SetSpacing([geometry.spacing_mm] * 3)
    ref.SetOrigin([float(v) for v in origin_xyz])
    ref.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    return ref


def resample_hu(image: sitk.Image, origin_xyz: Sequence[float], geometry: Geometry) -> np.ndarray:
    """HU on the patch grid at ``origin_xyz``: ``(D, H, W)`` float32, linear interpolation."""
    out = sitk.Resample(image, _reference(origin_xyz, geometry), sitk.Transform(), sitk.sitkLinear,
                        OUTSIDE_HU, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def resample_mask(image: sitk.Image, mask: PlacedMask, origin_xyz: Sequence[float], geometry: Geometry) -> np.ndarray:
    """A nodule mask given on ``image``'s voxel grid, on the patch grid: ``(D, H, W)`` bool.

    The 0/1 fraction is interpolated linearly and thresholded at 0.5.
    """
    m = np.pad(mask.mask.astype(np.float32), 1)
    small = sitk.GetImageFromArray(m)
    small.SetSpacing(image.GetSpacing())
    small.SetDirection(image.GetDirection())
    first = [int(v) - 1 for v in mask.offset[::-1]]  # (x, y, z) index of the padded crop's [0, 0, 0]
    small.SetOrigin(image.TransformIndexToPhysicalPoint(first))
    out = sitk.Resample(small, _reference(origin_xyz, geometry), sitk.Transform(), sitk.sitkLinear, 0.0,
                        sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out) >= 0.5


def offset_bounds(extent_lo_mm: Sequence[float], extent_hi_mm: Sequence[float], geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis ``(z, y, x)`` integer offset range keeping a nodule inside the patch.

    ``extent_lo_mm`` / ``extent_hi_mm``: how far the nodule reaches below / above its centre
    along each axis (mm, ``(z, y, x)``). Intersected with ``±max_offset_vox``; an axis where the
    nodule cannot fit gets ``[0, 0]``.
    """
    half = (geometry.size - 1) / 2.0
    s = geometry.spacing_mm
    lo = np.ceil(np.asarray(extent_lo_mm, float) / s - half - 1e-9)
    hi = np.floor(half - np.asarray(extent_hi_mm, float) / s + 1e-9)
    lo = np.maximum(lo, -geometry.max_offset_vox).astype(int)
    hi = np.minimum(hi, geometry.max_offset_vox).astype(int)
    bad = hi < lo
    lo[bad] = 0
    hi[bad] = 0
    return lo, hi


def draw_offset(rng: np.random.Generator, bounds: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    lo, hi = bounds
    return np.array([int(rng.integers(a, b + 1)) for a, b in zip(lo, hi)], dtype=int)


def mask_extent_mm(image: sitk.Image, mask: PlacedMask, centre_xyz: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """How far a mask's voxel centres reach below/above ``centre_xyz`` per axis, ``(z, y, x)`` mm
    (plus half a source voxel, the voxel's own extent)."""
    from wsbench.data.masks import _grid_world

    w = _grid_world(image, mask.offset, mask.mask.shape)[mask.mask]
    if not len(w):
        return np.zeros(3), np.zeros(3)
    half_vox = np.abs(np.array(image.GetDirection()).reshape(3, 3)) @ (np.array(image.GetSpacing()) / 2)
    d = w - np.asarray(centre_xyz, float)
    lo = np.maximum(-d.min(0) + half_vox, 0)
    hi = np.maximum(d.max(0) + half_vox, 0)
    return lo[::-1], hi[::-1]


def lung_positions(image: sitk.Image, lung_mask: sitk.Image | None = None, target_mm: float = 4.0) -> np.ndarray:
    """Voxel indices ``(N, 3)`` ``(z, y, x)`` inside the lungs, on a coarse ~``target_mm`` lattice.

    With a LUNA16 ``seg-lungs`` mask: blocks wholly inside its labels 3 and 4 (any non-zero
    label if those are absent). Otherwise HU-based: blocks wholly air-like (< -500 HU) not
    connected to the volume's in-plane border (outside air, scanner padding), the two largest
    such components. Positions are block centres.
    """
    sp = np.array(image.GetSpacing()[::-1], float)
    step = np.maximum(np.rint(target_mm / sp), 1).astype(int)
    if lung_mask is not None:
        lab = _blocks(sitk.GetArrayViewFromImage(lung_mask), step, np.min)
        m = np.isin(lab, (3, 4))
        if not m.any():
            m = lab > 0
    else:
        # a block is air only if its *brightest* voxel is: a thin chest wall is never skipped,
        # so the lungs stay disconnected from the outside air on the coarse grid
        air = _blocks(sitk.GetArrayViewFromImage(image), step, np.max) < -500
        labels, n = ndimage.label(air)
        if n == 0:
            return np.zeros((0, 3), int)
        border = np.unique(np.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(),
                                           labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        sizes[0] = 0
        sizes[border] = 0
        keep = [i for i in np.argsort(sizes)[::-1][:2] if sizes[i] > 0]
        m = np.isin(labels, keep)
    return np.argwhere(m) * step + step // 2


def _blocks(arr: np.ndarray, step: np.ndarray, reduce) -> np.ndarray:
    """Reduce ``arr`` over non-overlapping ``step`` blocks (trailing partial blocks dropped)."""
    n = np.array(arr.shape) // step
    if np.any(n == 0):
        step = np.minimum(step, arr.shape)
        n = np.array(arr.shape) // step
    a = np.asarray(arr[: n[0] * step[0], : n[1] * step[1], : n[2] * step[2]])
    a = a.reshape(n[0], step[0], n[1], step[1], n[2], step[2])
    return reduce(a, axis=(1, 3, 5))


def is_far_from(origin_xyz, geometry: Geometry, nodules: Sequence[tuple[Sequence[float], float]],
                margin_mm: float) -> bool:
    """True if every ``(centre_xyz, radius_mm)`` ball stays ``margin_mm`` outside the patch box.

    The exact test for an axis-aligned patch: distance(centre, box) > radius + margin. (The
    centre-distance rule ``> radius + half-diagonal`` would forbid most of a small lung.)
    """
    lo, hi = patch_box(origin_xyz, geometry)
    return all(distance_to_box(c, lo, hi) > r + margin_mm for c, r in nodules)

