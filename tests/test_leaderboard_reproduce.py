"""wsbench reproduce: per-case comparison, and a real rerun on the tiny benchmark."""

import copy
import json
import shutil

from click.testing import CliRunner

from conftest import TINY_BENCHMARK
from results_factory import make_results
from wsbench import stats
from wsbench.builtins.leaderboard_commands import compare_runs, rerun_config
from wsbench.leaderboard import build, file_sha256


def test_compare_identical_and_perturbed():
    a = make_results(n=4, failed=(3,))
    same = compare_runs(a, copy.deepcopy(a), atol=1e-9)
    assert same["passed"] and all(r["ok"] for r in same["rows"])
    assert max(same["max_abs_diff"].values()) == 0.0

    b = copy.deepcopy(a)
    b["cases"][1]["metrics"]["msd_mm"] += 0.25
    cmp = compare_runs(a, b, atol=1e-3)
    assert not cmp["passed"]
    assert [r["ok"] for r in cmp["rows"]] == [True, False, True, True]
    assert abs(cmp["rows"][1]["diffs"]["msd_mm"] - 0.25) < 1e-12 and cmp["max_abs_diff"]["msd_mm"] == 0.25
    assert compare_runs(a, b, atol=0.3)["passed"]  # within a looser tolerance

    c = copy.deepcopy(a)
    c["cases"][0]["metrics"]["hit"] = not c["cases"][0]["metrics"]["hit"]
    assert not compare_runs(a, c, atol=1.0)["passed"]  # flags must match exactly

    d = copy.deepcopy(a)
    d["cases"].pop(2)
    d["cases"][0]["status"] = "failed"
    cmp = compare_runs(a, d, atol=1.0)
    assert cmp["missing"] == [a["cases"][2]["case_id"]] and not cmp["passed"]
    assert cmp["rows"][0]["status"] == "ok -> failed"

    f = copy.deepcopy(a)
    f["dataset"]["fingerprint"] = "another"
    cmp = compare_runs(a, f, atol=1.0)
    assert all(r["ok"] for r in cmp["rows"]) and not cmp["same_data"] and not cmp["passed"]

    e = copy.deepcopy(a)
    e["cases"].append(dict(e["cases"][0], case_id="new"))
    assert compare_runs(a, e, atol=1.0)["extra"] == ["new"]


def test_rerun_config_uses_the_recorded_configuration():
    a = make_results("flow-guide", "cnn3d", "rflow", seed=7)
    a["dataset"]["options"] = {"n_scans": 12, "data_dir": "/home/someone/data"}
    a["binarization"]["options"] = {"grid": 101}
    cfg = rerun_config(a, out_dir="x", device="cpu", progress=False)
    assert (cfg.segmenter, cfg.predictor, cfg.generator, cfg.seed, cfg.limit) == ("flow-guide", "cnn3d", "rflow", 7, None)
    assert cfg.benchmark == "luna16-synth" and cfg.dataset == "luna16-synth"
    assert cfg.options == {"segmenter": {"a": 1}, "predictor": {"a": 1}, "generator": {"a": 1},
                           "binarization": {"grid": 101}}  # the data: the benchmark's
    cfg = rerun_config(a, out_dir="x", device="cpu", progress=False, recorded_dataset_options=True)
    assert cfg.options["dataset"] == {"n_scans": 12}


def test_reproduce_a_real_run(testkit, tmp_path):
    from wsbench.cli import cli

    runner = CliRunner()
    r = runner.invoke(cli, ["run", "--benchmark", TINY_BENCHMARK, "--segmenter", "intensity", "--seed", "2",
                            "--out", str(tmp_path / "orig"), "-q"])
    assert r.exit_code == 0, r.output
    subs = tmp_path / "lb" / "submissions"
    (subs / "tiny").mkdir(parents=True)
    sub = subs / "tiny" / "intensity--none--none--seed2.json"
    shutil.copyfile(tmp_path / "orig" / "results.json", sub)

    r = runner.invoke(cli, ["reproduce", str(sub), "--benchmark", TINY_BENCHMARK, "--out", str(tmp_path / "re1"),
                            "--device", "cpu", "--record", "--submissions", str(subs), "-q"])
    assert r.exit_code == 0, r.output
    assert "PASS: 6 of 6 cases reproduced" in r.output
    rec = json.loads((tmp_path / "lb" / "reproductions" / "tiny" / sub.name).read_text())
    assert rec["passed"] is True and rec["sha256"] == file_sha256(sub) and rec["n_cases"] == 6

    # a submission whose per-case numbers were edited (aggregate made consistent again) does not reproduce
    data = json.loads(sub.read_text())
    data["cases"][0]["metrics"]["dice"] = round(data["cases"][0]["metrics"]["dice"] * 0.5, 6)
    data["aggregate"] = stats.aggregate(data["cases"], seed=data["seed"])
    sub.write_text(json.dumps(data))
    r = runner.invoke(cli, ["reproduce", str(sub), "--benchmark", TINY_BENCHMARK, "--out", str(tmp_path / "re2"),
                            "--device", "cpu", "--record", "--submissions", str(subs), "-q"])
    assert r.exit_code == 1, r.output
    assert "FAIL: 5 of 6 cases reproduced" in r.output
    assert json.loads((tmp_path / "lb" / "reproductions" / "tiny" / sub.name).read_text())["passed"] is False

    r = runner.invoke(cli, ["reproduce", str(tmp_path / "orig"), "--record", "--submissions", str(subs),
                            "--benchmark", TINY_BENCHMARK])
    assert r.exit_code == 2 and "--record needs a file under" in r.output


def test_verified_row_after_reproduce_record(tmp_path):
    """The record written by reproduce is what the leaderboard reads (same path convention)."""
    from wsbench.leaderboard import reproduction_record_path
    from wsbench.validate import submission_path

    subs = tmp_path / "submissions"
    data = make_results("gradcam", "cnn3d")
    p = submission_path(subs, data)
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps(data))
    rec = reproduction_record_path(subs, p)
    assert rec == tmp_path / "reproductions" / "luna16-synth" / p.name
    rec.parent.mkdir(parents=True)
    rec.write_text(json.dumps({"sha256": file_sha256(p), "passed": True}))
    row = [ln for ln in build(subs, tmp_path / "README.md").splitlines() if ln.startswith("| 1 ")]
    assert len(row) == 1 and row[0].rstrip(" |").endswith("✓")
