"""The shared binarisation protocol: fitted on validation only, exact search, rules and options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wsbench import binarize as B
from wsbench.errors import DataError, OptionError
from wsbench.metrics import dice

SHAPE = (16, 16, 16)


def sphere(centre, radius, shape=SHAPE):
    g = np.indices(shape)
    return ((g - np.asarray(centre)[:, None, None, None]) ** 2).sum(0) <= radius ** 2


def make_cases(seed, n=8, noise=0.9, offset_range=3.0):
    """Nodule masks with maps = blurred-mask signal + noise + a per-case offset and gain."""
    rng = np.random.default_rng(seed)
    maps, masks = [], []
    for _ in range(n):
        m = sphere(rng.integers(5, 11, size=3), rng.uniform(2, 4))
        x = m * 1.0 + noise * rng.random(SHAPE)
        maps.append(rng.uniform(0.5, 2.0) * x + rng.uniform(-offset_range, offset_range))
        masks.append(m)
    return maps, masks


def reference_mean_dice(maps, masks, threshold):
    out = []
    for x, t in zip(maps, masks):
        x = (x - x.min()) / (x.max() - x.min())
        out.append(dice(x >= threshold, t))
    return float(np.mean(out))


def test_threshold_is_the_best_candidate_by_brute_force():
    maps, masks = make_cases(0, noise=1.2)
    b = B.fit_binarizer("val-dice-threshold", {}, maps, masks)
    xs = [(x - x.min()) / (x.max() - x.min()) for x in maps]
    pooled = np.concatenate([x.ravel() for x in xs])
    cands = np.unique(np.concatenate([np.linspace(pooled.min(), pooled.max(), 64),
                                      np.quantile(pooled, 1 - np.geomspace(1e-4, 0.5, 64))]))
    scores = np.array([reference_mean_dice(maps, masks, c) for c in cands])
    best = scores.max()
    assert b.validation_mean_dice == pytest.approx(best, abs=1e-12)
    assert b.params["threshold"] == pytest.approx(cands[np.flatnonzero(scores >= best - 1e-12)[0]])
    assert 0.3 < b.validation_mean_dice < 1.0  # noisy enough to be a real search


@pytest.mark.parametrize("rule,opts", [("val-dice-threshold", {}), ("val-dice-threshold", {"components": "peak"}),
                                       ("otsu", {"scope": "validation"}), ("top-k", {})])
def test_fit_depends_on_validation_only(rule, opts):
    val_maps, val_masks = make_cases(1, noise=1.3)
    test_maps, test_masks = make_cases(2, noise=1.3)
    b = B.fit_binarizer(rule, opts, val_maps, val_masks)
    before = json.dumps(b.to_dict(), sort_keys=True)
    out1 = [b.apply(x) for x in test_maps]
    # change the test data drastically and apply again: the rule is frozen
    altered = [np.random.default_rng(9).random(SHAPE) * 50 - 7 for _ in test_maps]
    [b.apply(x) for x in altered]
    assert json.dumps(b.to_dict(), sort_keys=True) == before
    # refitting with the same validation data gives the same rule, whatever the test data is
    b2 = B.fit_binarizer(rule, opts, val_maps, val_masks)
    assert json.dumps(b2.to_dict(), sort_keys=True) == before
    out2 = [b2.apply(x) for x in test_maps]
    assert all(np.array_equal(p, q) for p, q in zip(out1, out2))
    # ... while different validation data does change it (the test above can fail)
    b3 = B.fit_binarizer(rule, opts, test_maps, test_masks)
    assert b3.to_dict()["params"] != b.to_dict()["params"] or \
        b3.validation_mean_dice != b.validation_mean_dice


def test_minmax_makes_rule_invariant_to_gain_and_offset():
    maps, masks = make_cases(3)
    b = B.fit_binarizer("val-dice-threshold", {}, maps, masks)
    for x in maps:
        assert np.array_equal(b.apply(x), b.apply(3.7 * x - 12.0))
    # a constant map has no evidence anywhere: minmax → zeros → empty mask at a positive threshold
    assert b.params["threshold"] > 0 and not b.apply(np.full(SHAPE, 4.2)).any()


def test_normalize_none_uses_raw_scores():
    maps, masks = make_cases(4, offset_range=0.0)
    b = B.fit_binarizer("val-dice-threshold", {"normalize": "none"}, maps, masks)
    t = b.params["threshold"]
    assert np.array_equal(b.apply(maps[0]), maps[0] >= t)


def test_components_peak_mass_and_connectivity():
    x = np.zeros(SHAPE)
    big = sphere((4, 4, 4), 3)
    small = sphere((12, 12, 12), 1)
    x[big] = 0.6
    x[small] = 1.0
    x[4, 4, 4] = 0.7
    masks = [big]
    peak = B.Binarizer("val-dice-threshold", {"components": "peak", "normalize": "none"}, {"threshold": 0.5})
    mass = B.Binarizer("val-dice-threshold", {"components": "mass", "normalize": "none"}, {"threshold": 0.5})
    allc = B.Binarizer("val-dice-threshold", {"normalize": "none"}, {"threshold": 0.5})
    assert np.array_equal(peak.apply(x), small)
    assert np.array_equal(mass.apply(x), big)
    assert np.array_equal(allc.apply(x), big | small)
    # two voxels touching at a corner: one component at 26-connectivity, two at 6
    y = np.zeros(SHAPE); y[2, 2, 2] = 1.0; y[3, 3, 3] = 0.9
    c26 = B.Binarizer("val-dice-threshold", {"components": "peak", "normalize": "none"}, {"threshold": 0.5})
    c6 = B.Binarizer("val-dice-threshold", {"components": "peak", "normalize": "none", "connectivity": 6},
                     {"threshold": 0.5})
    assert c26.apply(y).sum() == 2 and c6.apply(y).sum() == 1
    # peak selection is used while fitting, too: the small bright blob misleads "peak"
    fit_peak = B.fit_binarizer("val-dice-threshold", {"components": "peak", "normalize": "none"}, [x], masks)
    fit_mass = B.fit_binarizer("val-dice-threshold", {"components": "mass", "normalize": "none"}, [x], masks)
    assert fit_mass.validation_mean_dice == 1.0 and fit_peak.validation_mean_dice < 1.0


def naive_otsu(values, bins):
    lo, hi = values.min(), values.max()
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    best, best_k = -1.0, []
    for k in range(1, bins):
        w0, w1 = hist[:k].sum(), hist[k:].sum()
        if w0 == 0 or w1 == 0:
            v = 0.0
        else:
            m0 = (hist[:k] * centres[:k]).sum() / w0
            m1 = (hist[k:] * centres[k:]).sum() / w1
            v = w0 * w1 * (m0 - m1) ** 2
        if v > best * (1 + 1e-12):
            best, best_k = v, [k]
        elif v >= best * (1 - 1e-12):
            best_k.append(k)
    return edges[best_k[len(best_k) // 2]]


def test_otsu_matches_naive_reference():
    rng = np.random.default_rng(5)
    for bins in (16, 64, 256):
        v = np.concatenate([rng.normal(0, 1, 3000), rng.normal(5, 0.7, 800)])
        assert B.otsu_threshold(v, bins) == pytest.approx(naive_otsu(v, bins), abs=1e-12)
        assert 1.5 < B.otsu_threshold(v, bins) < 4.5
    assert B.otsu_threshold(np.full(10, 3.0)) == 3.0


def test_otsu_rule_per_map_fits_nothing():
    maps, masks = make_cases(6, noise=0.3)
    b = B.fit_binarizer("otsu", {}, maps, masks)
    assert b.params == {}
    x = (maps[0] - maps[0].min()) / np.ptp(maps[0])
    assert np.array_equal(b.apply(maps[0]), x >= B.otsu_threshold(x))
    assert b.validation_mean_dice > 0.9


def test_top_k():
    rng = np.random.default_rng(7)
    x = rng.random(SHAPE)  # distinct values
    b = B.Binarizer("top-k", {}, {"percent": 2.0})
    assert b.apply(x).sum() == round(0.02 * x.size)
    maps, masks = make_cases(8)
    fitted = B.fit_binarizer("top-k", {}, maps, masks)
    assert fitted.params["percent"] in B.TOPK_GRID
    ref = max(np.mean([dice(B.Binarizer("top-k", {}, {"percent": p}).apply(m), t) for m, t in zip(maps, masks)])
              for p in B.TOPK_GRID)
    assert fitted.validation_mean_dice == pytest.approx(ref, abs=1e-12)
    fixed = B.fit_binarizer("top-k", {"percent": "1.5"}, maps, masks)
    assert fixed.params == {"percent": 1.5}


def test_round_trip_and_json():
    maps, masks = make_cases(10)
    for rule in B.RULES:
        b = B.fit_binarizer(rule, {"components": "mass"}, maps, masks)
        d = json.loads(json.dumps(b.to_dict()))
        assert set(d) == {"rule", "options", "params", "validation_mean_dice", "n_cases"}
        assert d["n_cases"] == len(maps) and d["options"]["components"] == "mass"
        r = B.Binarizer.from_dict(d)
        assert r.to_dict() == b.to_dict()
        assert all(np.array_equal(r.apply(x), b.apply(x)) for x in maps)


def test_torch_inputs_and_bool_output():
    maps, masks = make_cases(11, n=3)
    a = B.fit_binarizer("val-dice-threshold", {}, maps, masks)
    b = B.fit_binarizer("val-dice-threshold", {}, [torch.from_numpy(m) for m in maps],
                        [torch.from_numpy(m) for m in masks])
    assert a.to_dict() == b.to_dict()
    out = a.apply(torch.from_numpy(maps[0]).float())
    assert out.dtype == np.bool_ and out.shape == SHAPE


def test_errors_are_one_line_and_typed():
    maps, masks = make_cases(12, n=2)
    with pytest.raises(OptionError, match="unknown binarization rule 'thresh'"):
        B.fit_binarizer("thresh", {}, maps, masks)
    with pytest.raises(OptionError, match="unknown option 'normalise'"):
        B.fit_binarizer("otsu", {"normalise": "none"}, maps, masks)
    with pytest.raises(OptionError, match="components"):
        B.fit_binarizer("val-dice-threshold", {"components": "largest"}, maps, masks)
    with pytest.raises(OptionError, match="percent"):
        B.fit_binarizer("top-k", {"percent": 0}, maps, masks)
    with pytest.raises(DataError, match="2 validation maps but 1 masks"):
        B.fit_binarizer("otsu", {}, maps, masks[:1])
    with pytest.raises(DataError, match="no validation cases"):
        B.fit_binarizer("otsu", {}, [], [])
    bad = maps[0].copy(); bad[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="validation case 0.*NaN"):
        B.fit_binarizer("otsu", {}, [bad], masks[:1])
    with pytest.raises(DataError, match="shape"):
        B.fit_binarizer("otsu", {}, [maps[0]], [masks[0][:-1]])
    for exc in (OptionError, DataError):
        assert "\n" not in str(exc)
    assert set(B.RULES) == {"val-dice-threshold", "otsu", "top-k"} and B.DEFAULT_RULE in B.RULES


def test_docstring_examples():
    import doctest

    import wsbench.binarize as mod

    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0
