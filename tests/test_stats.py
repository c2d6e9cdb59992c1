"""wsbench.stats.aggregate against hand computations and Python's statistics module."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from wsbench import metrics as M
from wsbench.errors import DataError
from wsbench.stats import aggregate, bootstrap_ci, diameter_stratum, summarize


def record(cid, diameter, pred, truth, spacing=(1.0, 1.0, 1.0), status="ok", nodule_type=None):
    m = M.evaluate(pred, truth, spacing) if status == "ok" else M.failure_metrics(truth.shape, spacing)
    return {"case_id": cid, "split": "test", "status": status, "error": None if status == "ok" else "boom",
            "info": {"seriesuid": "s" + cid, "diameter_mm": diameter, "nodule_type": nodule_type},
            "metrics": m, "seconds": 0.1}


def cube(lo, hi, shape=(24, 24, 24)):
    m = np.zeros(shape, bool)
    m[lo:hi, lo:hi, lo:hi] = True
    return m


@pytest.fixture(scope="module")
def records():
    truth = cube(8, 14)
    rs = [
        record("a", 4.0, cube(8, 14), truth, nodule_type="solid"),            # perfect
        record("b", 7.5, cube(9, 15), truth, nodule_type="solid"),            # shifted
        record("c", 12.0, np.zeros_like(truth), truth, nodule_type="ggo"),    # empty prediction
        record("d", 25.0, cube(8, 12), truth, nodule_type="ggo"),
        record("e", 9.99, cube(8, 14), truth, status="failed", nodule_type="solid"),
        record("f", 6.0, cube(7, 16), truth),
    ]
    return rs


def test_counts_and_worst_case(records):
    a = aggregate(records, n_boot=500, seed=1)
    assert a["n_cases"] == 6 and a["n_failed"] == 1 and a["n_ok"] == 5
    assert a["n_empty_predictions"] == 1  # the failed case is counted as failed, not as empty
    worst = M.worst_case_distance((24, 24, 24), (1.0, 1.0, 1.0))
    hd = [r["metrics"]["hd95_mm"] for r in records]
    assert hd.count(worst) == 2  # empty prediction and failure both carry the worst case
    assert a["hd95_mm"]["mean"] == pytest.approx(np.mean(hd))
    assert a["dice"]["mean"] == pytest.approx(np.mean([r["metrics"]["dice"] for r in records]))
    assert a["hit_rate"] == pytest.approx(4 / 6)


def test_summaries_match_statistics_module(records):
    a = aggregate(records, n_boot=300)
    for k in ("dice", "msd_mm", "masd_mm", "hd95_mm", "surface_dice"):
        v = [r["metrics"][k] for r in records]
        s = a[k]
        assert s["n"] == 6
        assert s["mean"] == pytest.approx(statistics.fmean(v), abs=1e-12)
        assert s["std"] == pytest.approx(statistics.stdev(v), abs=1e-12)
        assert s["median"] == pytest.approx(statistics.median(v), abs=1e-12)
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
        assert s["q1"] == pytest.approx(q1, abs=1e-12) and s["q3"] == pytest.approx(q3, abs=1e-12)
        lo, hi = s["ci95"]
        assert min(v) <= lo <= s["mean"] <= hi <= max(v)


def test_strata(records):
    a = aggregate(records, n_boot=100)
    by = a["by_diameter"]
    assert list(by) == ["<6", "6-10", "10-20", ">=20"]
    assert [by[k]["n_cases"] for k in by] == [1, 3, 1, 1]  # 7.5, 9.99 and 6.0 fall in 6-10
    assert by["6-10"]["n_failed"] == 1 and by["10-20"]["n_empty_predictions"] == 1
    assert by["<6"]["dice"]["mean"] == 1.0 and by["<6"]["dice"]["std"] is None
    assert by["10-20"]["dice"]["mean"] == 0.0
    assert sum(by[k]["n_cases"] for k in by) == a["n_cases"]
    assert set(a["by_nodule_type"]) == {"solid", "ggo"} and a["by_nodule_type"]["ggo"]["n_cases"] == 2
    assert [diameter_stratum(d) for d in (0.0, 5.999, 6, 9.99, 10, 19.9, 20, 100, None, "x", float("nan"))] == \
        ["<6", "<6", "6-10", "6-10", "10-20", "10-20", ">=20", ">=20", "unknown", "unknown", "unknown"]


def test_empty_stratum_is_none_and_json_has_no_nan(records):
    a = aggregate(records[:2], n_boot=50)
    assert a["by_diameter"][">=20"]["n_cases"] == 0
    assert a["by_diameter"][">=20"]["dice"]["mean"] is None and a["by_diameter"][">=20"]["hit_rate"] is None
    json.dumps(a, allow_nan=False)
    json.dumps(aggregate([], n_boot=10), allow_nan=False)
    unknown = dict(records[0], info={"seriesuid": "x"})
    assert aggregate([unknown], n_boot=10)["by_diameter"]["unknown"]["n_cases"] == 1


def test_deterministic_and_seeded(records):
    assert aggregate(records, seed=3) == aggregate(records, seed=3)
    assert aggregate(records, seed=3)["dice"]["ci95"] != aggregate(records, seed=4)["dice"]["ci95"]


def test_bootstrap_ci_width_matches_normal_theory():
    rng = np.random.default_rng(0)
    v = rng.normal(0.5, 0.2, size=400)
    lo, hi = bootstrap_ci(v, n_boot=4000, seed=0)
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert lo < v.mean() < hi
    assert bootstrap_ci([]) is None and bootstrap_ci([0.3]) == [0.3, 0.3]
    assert summarize([])["mean"] is None


def test_bad_records_raise_data_error(records):
    with pytest.raises(DataError, match="case record x has no 'metrics'"):
        aggregate([{"case_id": "x", "status": "failed"}])
    bad = json.loads(json.dumps(records[0]))
    bad["metrics"]["dice"] = float("nan")
    with pytest.raises(DataError, match="metric 'dice'"):
        aggregate([bad])


def test_docstring_examples():
    import doctest

    import wsbench.stats as mod

    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0
