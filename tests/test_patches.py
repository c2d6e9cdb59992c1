"""Patch geometry helpers: origins, offsets, margins, mask resampling, lung positions."""

from __future__ import annotations


import numpy as np
import pytest
import SimpleITK as sitk

from wsbench.data.lidc import PlacedMask
from wsbench.data.masks import sphere_mask
from wsbench.data.patches import (distance_to_box, draw_offset, is_far_from, lung_positions, offset_bounds,
                                  patch_box, patch_origin, resample_hu, resample_mask)
from wsbench.data.types import Geometry


def image(size=(40, 40, 20), spacing=(0.7, 0.7, 2.5), origin=(5.0, -3.0, 100.0),
          direction=(1, 0, 0, 0, -1, 0, 0, 0, 1), fill=-1000.0):
    img = sitk.Image(list(size), sitk.sitkFloat32)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img + fill


def test_patch_origin_puts_the_point_at_the_offset_voxel():
    g = Geometry(size=16, spacing_mm=0.5, max_offset_vox=4)
    c = np.array([10.0, -20.0, 30.0])
    off = np.array([2, -1, 3])  # (z, y, x)
    o = patch_origin(c, g, off)
    # patch index (7.5 + off) along (z, y, x) ↔ world c
    pos = (g.size - 1) / 2 + off
    np.testing.assert_allclose(o + pos[::-1] * g.spacing_mm, c)
    lo, hi = patch_box(o, g)
    np.testing.assert_allclose(hi - lo, g.size * g.spacing_mm)


def test_distance_to_box_and_margin():
    lo, hi = np.zeros(3), np.ones(3) * 10
    assert distance_to_box((5, 5, 5), lo, hi) == 0
    assert distance_to_box((13, 5, 5), lo, hi) == pytest.approx(3)
    assert distance_to_box((13, 14, 5), lo, hi) == pytest.approx(5)
    g = Geometry(size=10, spacing_mm=1.0, max_offset_vox=0)
    o = np.array([0.5, 0.5, 0.5])  # box [0, 10]^3
    assert is_far_from(o, g, [((13, 14, 5), 2.0)], margin_mm=2.9)
    assert not is_far_from(o, g, [((13, 14, 5), 2.0)], margin_mm=3.1)
    assert is_far_from(o, g, [], margin_mm=100)


def test_offset_bounds_keep_the_nodule_inside():
    g = Geometry(size=32, spacing_mm=1.0, max_offset_vox=6)
    lo, hi = offset_bounds([2, 2, 2], [2, 2, 2], g)
    assert list(lo) == [-6] * 3 and list(hi) == [6] * 3
    lo, hi = offset_bounds([12, 3, 14.2], [12, 3, 1], g)
    assert list(lo) == [-3, -6, -1] and list(hi) == [3, 6, 6]
    # too big to fit: centred on that axis
    lo, hi = offset_bounds([20, 1, 1], [20, 1, 1], g)
    assert lo[0] == hi[0] == 0
    rng = np.random.default_rng(0)
    for _ in range(200):
        b = offset_bounds([12, 3, 14.2], [12, 3, 1], g)
        off = draw_offset(rng, b)
        pos = (g.size - 1) / 2 + off
        # the extent [pos - lo, pos + hi] stays within the voxel-centre range [0, size - 1]
        assert np.all(pos - np.array([12, 3, 14.2]) >= -1e-9)
        assert np.all(pos + np.array([12, 3, 1]) <= g.size - 1 + 1e-9)


def test_resample_hu_is_linear_in_world_coordinates():
    img = image()
    arr = sitk.GetArrayFromImage(img)
    # a linear ramp in world x: HU = 10 * x
    d = np.array(img.GetDirection()).reshape(3, 3)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in arr.shape], indexing="ij")
    world = np.array(img.GetOrigin()) + (np.stack([xx, yy, zz], -1) * np.array(img.GetSpacing())) @ d.T
    ramp = sitk.GetImageFromArray((10 * world[..., 0]).astype(np.float32))
    ramp.CopyInformation(img)
    g = Geometry(size=8, spacing_mm=1.0, max_offset_vox=0)
    centre = ramp.TransformContinuousIndexToPhysicalPoint((20, 20, 10))
    out = resample_hu(ramp, patch_origin(centre, g), g)
    expect = 10 * (patch_origin(centre, g)[0] + np.arange(8))
    np.testing.assert_allclose(out, np.broadcast_to(expect, out.shape), atol=1e-3)
    # outside the scan: air
    far = resample_hu(ramp, (1e4, 1e4, 1e4), g)
    assert np.all(far == -1000)


def test_small_nodule_survives_thick_slices():
    """A 3 mm ball on 2.5 mm slices: fraction resampling keeps it; nearest neighbour may not."""
    img = image()
    centre = img.TransformContinuousIndexToPhysicalPoint((20.3, 19.6, 10.5))  # between slices
    pm = sphere_mask(img, centre, 3.0)
    g = Geometry(size=16, spacing_mm=1.0, max_offset_vox=0)
    sizes = []
    for dz in np.linspace(-1.25, 1.25, 6):
        c = np.array(centre) + [0, 0, dz]
        m = resample_mask(img, PlacedMask(pm.mask, pm.offset), patch_origin(c, g), g)
        sizes.append(int(m.sum()))
    assert min(sizes) > 0
    # about the ball's volume (14 mm^3) at 1 mm: a few to a few dozen voxels
    assert 3 <= np.median(sizes) <= 40


def test_lung_positions_hu_based_and_from_mask():
    nx, ny, nz = 60, 60, 30
    hu = np.full((nz, ny, nx), -1000, np.int16)
    hu[:, 3:-3, 3:-3] = 40  # 2 mm body wall (thin: coarse sampling must not leak through it)
    hu[2:-2, 6:-6, 6:28] = -850  # right lung
    hu[2:-2, 6:-6, 32:-6] = -850  # left lung
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing((0.7, 0.7, 1.5))
    pos = lung_positions(img)
    assert len(pos) > 20
    assert np.all(hu[tuple(pos.T)] == -850)
    assert {int(p[2] < 30) for p in pos} == {0, 1}  # both lungs
    lab = np.zeros_like(hu, dtype=np.uint8)
    lab[5:10, 10:20, 10:20] = 3
    lab[5:10, 30:40, 40:50] = 4
    lab[20:25, 30:40, 10:20] = 1  # not a lung label
    m = sitk.GetImageFromArray(lab)
    m.CopyInformation(img)
    pos = lung_positions(img, m)
    assert len(pos) > 0 and np.all(np.isin(lab[tuple(pos.T)], (3, 4)))
