"""wsbench.compare and the `wsbench compare` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import wilcoxon

from wsbench.compare import compare, load_results
from wsbench.errors import DataError, OptionError


def results(values: dict[str, float], metric="dice", diam=None, failed=(), bench=("luna16-synth", "1"),
            fingerprint="fp0", extra_metrics=None):
    cases = []
    for i, (cid, v) in enumerate(values.items()):
        m = {"dice": 0.5, "surface_dice": 0.5, "hit": True, "msd_mm": 3.0, "masd_mm": 3.0, "hd95_mm": 6.0}
        m[metric] = v
        m.update((extra_metrics or {}).get(cid, {}))
        cases.append({"case_id": cid, "split": "test", "status": "failed" if cid in failed else "ok",
                      "error": None, "info": {"diameter_mm": (diam or {}).get(cid, 8.0)}, "metrics": m,
                      "seconds": 0.1})
    return {"schema_version": 1, "benchmark": {"name": bench[0], "version": bench[1]},
            "dataset": {"fingerprint": fingerprint}, "plugins": {"segmenter": {"name": "x"}}, "cases": cases}


def test_paired_counts_and_wilcoxon_vs_scipy():
    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(30)]
    a_vals = rng.uniform(0, 1, 30)
    b_vals = a_vals + rng.normal(0.08, 0.1, 30)
    b_vals[:3] = a_vals[:3]  # three ties
    a = results(dict(zip(ids, a_vals)))
    b = results(dict(zip(ids, b_vals)))
    c = compare(a, b, "dice")
    d = b_vals - a_vals
    assert c["n_shared"] == 30 and c["ties"] == 3
    assert c["b_better"] == int((d > 0).sum()) and c["a_better"] == int((d < 0).sum())
    assert c["a_better"] + c["ties"] + c["b_better"] == 30
    assert c["mean_diff"] == pytest.approx(d.mean()) and c["median_diff"] == pytest.approx(np.median(d))
    assert c["wilcoxon_p"] == pytest.approx(wilcoxon(d[3:]).pvalue, rel=1e-12)
    assert c["wilcoxon_p"] < 0.05
    lo, hi = c["ci95_diff"]
    assert lo < d.mean() < hi
    json.dumps(c, allow_nan=False)


def test_lower_is_better_for_distances():
    a = results({"x": 2.0, "y": 5.0, "z": 1.0}, metric="hd95_mm")
    b = results({"x": 1.0, "y": 6.0, "z": 1.0}, metric="hd95_mm")
    c = compare(a, b, "hd95_mm")
    assert (c["a_better"], c["ties"], c["b_better"]) == (1, 1, 1)
    assert c["higher_is_better"] is False


def test_identical_runs_p_is_one():
    a = results({"x": 0.3, "y": 0.7})
    c = compare(a, a, "dice")
    assert c["wilcoxon_p"] == 1.0 and c["ties"] == 2 and c["mean_diff"] == 0.0


def test_shared_subset_warnings_and_strata():
    a = results({"x": 0.1, "y": 0.2, "z": 0.3, "w": 0.9}, diam={"x": 4.0, "y": 12.0, "z": 25.0, "w": 7.0},
                failed={"x"})
    b = results({"x": 0.4, "y": 0.1, "z": 0.3, "v": 0.5}, bench=("luna16", "1"), fingerprint="fp1")
    c = compare(a, b, "dice")
    assert c["n_shared"] == 3 and c["only_a"] == 1 and c["only_b"] == 1 and c["n_failed_a"] == 1
    assert any("different benchmarks" in w for w in c["warnings"])
    assert any("fingerprints" in w for w in c["warnings"])
    assert c["by_diameter"]["<6"] == {"n": 1, "mean_diff": pytest.approx(0.3), "a_better": 0, "ties": 0,
                                      "b_better": 1}
    assert c["by_diameter"]["6-10"]["n"] == 0 and c["by_diameter"]["6-10"]["mean_diff"] is None
    assert [r["case_id"] for r in c["cases"]] == ["x", "y", "z"]


def test_errors():
    a = results({"x": 0.1})
    with pytest.raises(DataError, match="share no case ids"):
        compare(a, results({"y": 0.2}), "dice")
    with pytest.raises(OptionError, match="unknown metric 'iou'"):
        compare(a, a, "iou")
    bad = results({"x": 0.1})
    bad["cases"][0]["metrics"]["dice"] = float("nan")
    with pytest.raises(DataError, match="non-finite 'dice'"):
        compare(a, bad, "dice")


def test_load_results_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_results(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_results(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(DataError, match="not a wsbench results file"):
        load_results(tmp_path / "y.json")
    (tmp_path / "v2.json").write_text(json.dumps({"schema_version": 2, "cases": []}))
    with pytest.raises(DataError, match="schema_version 2"):
        load_results(tmp_path / "v2.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder without results.json"):
        load_results(tmp_path / "empty")
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(results({"x": 0.1})))
    assert load_results(run)["cases"][0]["case_id"] == "x"


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return str(p)


def test_cli_compare_table_json_and_errors(tmp_path):
    from wsbench.cli import cli

    ids = [f"c{i}" for i in range(8)]
    pa = _write(tmp_path, "a.json", results(dict(zip(ids, np.linspace(0.1, 0.8, 8)))))
    pb = _write(tmp_path, "b.json", results(dict(zip(ids, np.linspace(0.2, 0.9, 8)))))
    runner = CliRunner()
    r = runner.invoke(cli, ["compare", pa, pb, "--metric", "dice", "--metric", "hd95_mm", "--per-case"])
    assert r.exit_code == 0, r.output
    assert "Wilcoxon p" in r.output and "dice" in r.output and "c7" in r.output
    r = runner.invoke(cli, ["compare", pa, pb, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["b_better"] == 8 and out["wilcoxon_p"] == pytest.approx(wilcoxon(np.full(8, 0.1)).pvalue)
    r = runner.invoke(cli, ["compare", pa, str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "does not exist" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli, ["compare", pa, pb, "--metric", "iou"])
    assert r.exit_code == 2 and "iou" in r.output
    r = runner.invoke(cli, ["compare", "--help"])
    assert r.exit_code == 0 and "Examples" in r.output


def test_docstring_examples():
    import doctest

    import wsbench.compare as mod

    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0
