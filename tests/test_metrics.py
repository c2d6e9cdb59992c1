"""wsbench.metrics against two independent references: MONAI's metrics (with spacing) and a
brute-force pairwise distance computation, on random and edge-case masks, to 1e-6."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from wsbench import metrics as M

TOL = 1e-6


# ----------------------------------------------------------------------------- references

def brute_force(pred: np.ndarray, truth: np.ndarray, spacing, tol_mm: float = 1.0) -> dict:
    """Surfaces by SciPy erosion (face connectivity, outside = background), all pairwise distances."""
    st = ndimage.generate_binary_structure(3, 1)
    sp = pred & ~ndimage.binary_erosion(pred, structure=st, border_value=0)
    stt = truth & ~ndimage.binary_erosion(truth, structure=st, border_value=0)
    a = np.argwhere(sp) * np.asarray(spacing, float)
    b = np.argwhere(stt) * np.asarray(spacing, float)
    d = cdist(a, b)
    dab, dba = d.min(axis=1), d.min(axis=0)
    pooled = np.concatenate([dab, dba])
    return {
        "msd_mm": pooled.mean(),
        "masd_mm": 0.5 * (dab.mean() + dba.mean()),
        "hd95_mm": max(np.percentile(dab, 95), np.percentile(dba, 95)),
        "surface_dice": (np.sum(dab <= tol_mm) + np.sum(dba <= tol_mm)) / pooled.size,
        "dice": 2 * np.sum(pred & truth) / (pred.sum() + truth.sum()),
    }


def monai_reference(pred: np.ndarray, truth: np.ndarray, spacing, tol_mm: float = 1.0) -> dict:
    from monai.metrics import (compute_average_surface_distance, compute_dice, compute_hausdorff_distance,
                               compute_surface_dice)

    yp = torch.from_numpy(pred[None, None].astype(np.float32))
    yt = torch.from_numpy(truth[None, None].astype(np.float32))
    sp = list(spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": float(compute_dice(yp, yt, include_background=True)[0, 0]),
            "msd_mm": float(compute_average_surface_distance(yp, yt, include_background=True, symmetric=True,
                                                             spacing=sp)[0, 0]),
            "hd95_mm": float(compute_hausdorff_distance(yp, yt, include_background=True, percentile=95,
                                                        spacing=sp)[0, 0]),
            "surface_dice": float(compute_surface_dice(yp, yt, [tol_mm], include_background=True,
                                                       spacing=sp)[0, 0]),
        }


# ----------------------------------------------------------------------------- mask makers

def blob(rng, shape, radius_vox, centre=None, rough=0.3) -> np.ndarray:
    """A lumpy nodule-like blob: a noisy ellipsoid."""
    centre = np.asarray(centre if centre is not None else [rng.uniform(r * 0.3, r * 0.7) for r in shape])
    grid = np.indices(shape).astype(float)
    radii = radius_vox * rng.uniform(0.7, 1.3, size=3)
    r2 = sum(((grid[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    noise /= np.abs(noise).max() + 1e-9
    return r2 + rough * noise < 1.0


def random_pairs(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(6):
        shape = tuple(int(v) for v in rng.integers(12, 28, size=3))
        t = blob(rng, shape, rng.uniform(2, 5))
        p = blob(rng, shape, rng.uniform(2, 5))
        out.append((f"blobs{k}", p, t))
    for k in range(3):  # scattered noise: many small components, far-apart surfaces
        shape = (14, 16, 15)
        out.append((f"noise{k}", rng.random(shape) < 0.08, rng.random(shape) < 0.15))
    return out


def edge_pairs():
    shape = (10, 11, 12)
    z = np.zeros(shape, bool)
    single = z.copy(); single[4, 5, 6] = True
    single2 = z.copy(); single2[1, 9, 2] = True
    corner = z.copy(); corner[0, 0, 0] = True
    cube = z.copy(); cube[2:7, 3:8, 4:9] = True
    border = z.copy(); border[:, :4, :] = True             # touches five faces of the image
    full = np.ones(shape, bool)                              # surface = the image's outer layer
    line = z.copy(); line[5, 5, :] = True                    # thin: every voxel on the surface
    return [
        ("single-same", single, single), ("single-other", single, single2), ("corner-single", corner, single),
        ("single-in-cube", single, cube), ("cube-border", cube, border), ("full-cube", full, cube),
        ("full-full", full, full), ("line-cube", line, cube), ("border-corner", border, corner),
    ]


SPACINGS = [(1.0, 1.0, 1.0), (2.5, 0.7, 0.6), (0.6, 1.3, 0.9)]
ALL_PAIRS = random_pairs() + edge_pairs()


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("spacing", SPACINGS, ids=["iso", "aniso-z", "aniso-mixed"])
@pytest.mark.parametrize("case", ALL_PAIRS, ids=[c[0] for c in ALL_PAIRS])
def test_matches_brute_force(case, spacing):
    _, p, t = case
    ref = brute_force(p, t, spacing, tol_mm=1.0)
    got = M.evaluate(p, t, spacing, tolerance_mm=1.0)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, abs=TOL, rel=0), k
    assert M.mean_surface_distance(p, t, spacing) == pytest.approx(ref["msd_mm"], abs=TOL)
    assert M.mean_surface_distance(p, t, spacing, mode="average") == pytest.approx(ref["masd_mm"], abs=TOL)
    assert M.hausdorff95(p, t, spacing) == pytest.approx(ref["hd95_mm"], abs=TOL)
    assert M.surface_dice(p, t, spacing, 1.0) == pytest.approx(ref["surface_dice"], abs=TOL)
    assert M.dice(p, t) == pytest.approx(ref["dice"], abs=TOL)


@pytest.mark.parametrize("spacing", SPACINGS[:2], ids=["iso", "aniso"])
@pytest.mark.parametrize("case", ALL_PAIRS, ids=[c[0] for c in ALL_PAIRS])
def test_matches_monai(case, spacing):
    _, p, t = case
    ref = monai_reference(p, t, spacing, tol_mm=1.5)
    got = M.evaluate(p, t, spacing, tolerance_mm=1.5)
    for k, v in ref.items():
        # MONAI works in float32: compare relative to the value's magnitude as well.
        assert got[k] == pytest.approx(v, abs=TOL, rel=TOL), k


def test_surface_dice_tolerances_vs_brute_force():
    _, p, t = ALL_PAIRS[0]
    sp = (2.5, 0.7, 0.6)
    for tol in (0.0, 0.6, 1.0, 2.5, 4.0, 100.0):
        assert M.surface_dice(p, t, sp, tol) == pytest.approx(brute_force(p, t, sp, tol)["surface_dice"], abs=TOL)
    assert M.surface_dice(p, t, sp, 100.0) == 1.0


@pytest.mark.parametrize("case", ALL_PAIRS, ids=[c[0] for c in ALL_PAIRS])
def test_crop_is_exact(case):
    """Cropping to the union bounding box (+1 voxel of background) changes no distance."""
    _, p, t = case
    sp = (2.5, 0.7, 0.6)
    a = M._surface_distances(p, t, sp, crop=True)
    b = M._surface_distances(p, t, sp, crop=False)
    np.testing.assert_array_equal(a.d_pred_to_truth, b.d_pred_to_truth)
    np.testing.assert_array_equal(a.d_truth_to_pred, b.d_truth_to_pred)


def test_crop_exact_when_embedded_in_larger_grid():
    """A mask pair away from the border gives the same values inside a 4x larger volume."""
    rng = np.random.default_rng(3)
    p, t = blob(rng, (16, 16, 16), 4, centre=(8, 8, 8)), blob(rng, (16, 16, 16), 4, centre=(7, 9, 8))
    big_p, big_t = np.zeros((40, 64, 50), bool), np.zeros((40, 64, 50), bool)
    big_p[10:26, 30:46, 5:21] = p
    big_t[10:26, 30:46, 5:21] = t
    a, b = M.evaluate(p, t, (1.2, 0.8, 0.7)), M.evaluate(big_p, big_t, (1.2, 0.8, 0.7))
    for k in ("dice", "msd_mm", "masd_mm", "hd95_mm", "surface_dice", "volume_diff_ml"):
        assert a[k] == b[k], k


def test_border_counts_as_background():
    full = np.ones((5, 6, 7), bool)
    inner = np.zeros_like(full); inner[1:-1, 1:-1, 1:-1] = True
    # the full volume's surface is its outer layer: 5*6*7 - 3*4*5 voxels
    s = M._surface_distances(full, full, (1.0, 1.0, 1.0))
    assert s.d_pred_to_truth.size == 5 * 6 * 7 - 3 * 4 * 5
    # every outer-layer voxel is within sqrt(3) (corners) of the inner block, none closer than 1
    assert M.surface_dice(full, inner, (1, 1, 1), tolerance_mm=math.sqrt(3) + 1e-9) == 1.0
    assert M.surface_dice(full, inner, (1, 1, 1), tolerance_mm=0.99) == 0.0


def test_empty_prediction_gets_worst_case_and_is_flagged():
    t = np.zeros((32, 32, 32), bool); t[10:15, 10:15, 10:15] = True
    sp = (1.0, 0.8, 0.8)
    worst = M.worst_case_distance(t.shape, sp)
    assert worst == pytest.approx(math.sqrt(32 ** 2 + 25.6 ** 2 + 25.6 ** 2))
    m = M.evaluate(np.zeros_like(t), t, sp)
    assert m["dice"] == 0.0 and m["surface_dice"] == 0.0 and m["hit"] is False
    assert m["msd_mm"] == m["masd_mm"] == m["hd95_mm"] == worst
    assert m["empty_prediction"] is True and m["empty_truth"] is False
    assert m["volume_pred_ml"] == 0.0 and m["volume_diff_ml"] == pytest.approx(-125 * 0.64 / 1000)
    assert M.mean_surface_distance(np.zeros_like(t), t, sp) == worst
    assert M.hausdorff95(np.zeros_like(t), t, sp) == worst
    # the worst case exceeds every distance the grid allows (opposite corners)
    a = np.zeros_like(t); a[0, 0, 0] = True
    b = np.zeros_like(t); b[-1, -1, -1] = True
    assert M.hausdorff95(a, b, sp) < worst
    # the class API stores the worst case, so it weighs in the mean
    h = M.Hausdorff95()
    h(np.zeros_like(t), t, sp); h(t, t, sp)
    assert h.aggregate() == pytest.approx(worst / 2)
    json.dumps(m)


def test_empty_truth_and_both_empty():
    p = np.zeros((8, 8, 8), bool); p[2:4, 2:4, 2:4] = True
    z = np.zeros_like(p)
    m = M.evaluate(p, z, (1, 1, 1))
    assert m["empty_truth"] and not m["empty_prediction"] and m["dice"] == 0.0
    assert m["hd95_mm"] == M.worst_case_distance(p.shape, (1, 1, 1)) and m["surface_dice"] == 0.0
    m = M.evaluate(z, z, (1, 1, 1))
    assert m["dice"] == 1.0 and m["msd_mm"] == 0.0 and m["hd95_mm"] == 0.0 and m["surface_dice"] == 1.0
    assert m["empty_prediction"] and m["empty_truth"] and m["hit"] is False


def test_failure_metrics_same_keys_worst_case():
    f = M.failure_metrics((32, 32, 32), (1.0, 1.0, 1.0), truth_volume_ml=0.2)
    e = M.evaluate(np.zeros((32, 32, 32), bool), np.ones((32, 32, 32), bool), (1, 1, 1))
    assert tuple(f) == tuple(e) == M.METRIC_KEYS
    assert f["dice"] == 0.0 and f["hd95_mm"] == M.worst_case_distance((32,) * 3, (1,) * 3)
    assert f["empty_prediction"] is True and f["volume_diff_ml"] == -0.2
    json.dumps(f)


def test_evaluate_values_are_plain_python_and_finite():
    _, p, t = ALL_PAIRS[1]
    m = M.evaluate(p, t, (1.0, 1.0, 1.0))
    for k, v in m.items():
        assert type(v) in (float, bool), (k, type(v))
        if isinstance(v, float):
            assert math.isfinite(v)


def test_torch_and_integer_inputs():
    _, p, t = ALL_PAIRS[2]
    sp = (2.0, 1.0, 0.5)
    a = M.evaluate(p, t, sp)
    assert M.evaluate(torch.from_numpy(p), torch.from_numpy(t), sp) == a
    assert M.evaluate(p.astype(np.uint8), t.astype(np.int64), sp) == a
    with pytest.raises(ValueError, match="boolean"):
        M.evaluate(p.astype(np.float32), t, sp)
    with pytest.raises(ValueError, match="shape"):
        M.dice(p, t[:-1])
    with pytest.raises(ValueError, match="spacing"):
        M.hausdorff95(p, t, (1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="3-D"):
        M.dice(p[0], t[0])


def test_detection_hit_and_volume():
    t = np.zeros((10, 10, 10), bool); t[2:5, 2:5, 2:5] = True
    p = np.zeros_like(t); p[4:8, 4:8, 4:8] = True
    assert M.detection_hit(p, t) is True
    assert M.detection_hit(np.roll(p, 1, axis=0), t) is False
    sp = (2.0, 0.5, 0.5)
    assert M.volume_difference(p, t, sp) == pytest.approx((64 - 27) * 0.5 / 1000)
    m = M.evaluate(p, t, sp)
    assert m["volume_pred_ml"] == pytest.approx(0.032) and m["volume_truth_ml"] == pytest.approx(0.0135)


def test_metric_classes_accumulate():
    rng = np.random.default_rng(1)
    pairs = [(blob(rng, (16, 16, 16), 3), blob(rng, (16, 16, 16), 3)) for _ in range(3)]
    sp = (1.5, 1.0, 1.0)
    classes = [M.Dice(), M.MeanSurfaceDistance(), M.MeanSurfaceDistance("average"), M.Hausdorff95(),
               M.SurfaceDice(1.0), M.DetectionHit(), M.VolumeDifference()]
    for p, t in pairs:
        for c in classes:
            c(p, t, sp)
    ev = [M.evaluate(p, t, sp) for p, t in pairs]
    for c in classes:
        expect = np.mean([float(e[c.key]) for e in ev])
        assert c.aggregate() == pytest.approx(expect, abs=1e-12), c.key
        assert len(c) == 3
    classes[0].reset()
    assert classes[0].aggregate() is None
    with pytest.raises(ValueError):
        classes[1].aggregate("max")


def test_docstring_examples():
    import doctest

    import wsbench.metrics as mod

    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0
