"""The runner end to end on the tiny in-memory benchmark: results, resume after SIGKILL,
failure isolation, determinism, checkpoint reuse."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import TINY_BENCHMARK, subprocess_env
from wsbench.cli import cli
from wsbench.runner import RunConfig, run


def _metrics(results):
    return {c["case_id"]: c["metrics"] for c in results["cases"]}


def test_cli_run_with_runtime_plugin(testkit, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["run", "--benchmark", TINY_BENCHMARK, "--segmenter", "intensity",
                                   "--seed", "3", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert data["schema_version"] == 1 and data["complete"] is True
    assert data["plugins"]["segmenter"]["distribution"] == "wsbench-testkit"
    assert data["plugins"]["predictor"] is None
    assert data["binarization"]["fitted_on"] == "validation"
    assert len(data["cases"]) == 6 and data["aggregate"]["n_cases"] == 6
    # an easy task: thresholding intensity segments the balls well
    assert data["aggregate"]["dice"]["mean"] > 0.8
    for key in ("wsbench_version", "created", "command", "device", "seed", "benchmark", "dataset", "timings"):
        assert key in data
    assert data["dataset"]["fingerprint"] and data["benchmark"]["name"] == "tiny"
    lines = (out / "cases.jsonl").read_text().splitlines()
    assert len(lines) == 6
    assert len(list((out / "maps" / "test").glob("*.npz"))) == 6


def test_bad_option_fails_fast(testkit, tmp_path):
    res = CliRunner().invoke(cli, ["run", "--benchmark", TINY_BENCHMARK, "--segmenter", "intensity",
                                   "-o", "segmenter.slep=1", "--out", str(tmp_path / "x"), "-q"])
    assert res.exit_code == 2
    assert "unknown option 'slep'" in res.output and "did you mean 'sleep'" in res.output
    assert not (tmp_path / "x").exists(), "no work may start before options are validated"


def test_unknown_segmenter_one_line(testkit, tmp_path):
    res = CliRunner().invoke(cli, ["run", "--benchmark", TINY_BENCHMARK, "--segmenter", "intensit", "-q"])
    assert res.exit_code == 2 and "Did you mean 'intensity'" in res.output
    assert "Traceback" not in res.output


def test_failure_is_isolated_and_recorded(testkit, tmp_path):
    # fail on the test case(s) with the largest ball: mean intensity above a threshold
    ds = testkit.TinyBlobs({"n_validation": 4, "n_test": 6})
    from wsbench.benchmark import load_benchmark

    geo = load_benchmark(TINY_BENCHMARK).geometry
    means = sorted(float(c.image.mean()) for c in ds.cases("test", geo))
    thr = (means[-1] + means[-2]) / 2
    out = tmp_path / "fail"
    res = CliRunner().invoke(cli, ["run", "--benchmark", TINY_BENCHMARK, "--segmenter", "intensity",
                                   "-o", f"segmenter.fail_above={thr}", "--out", str(out), "-q"])
    assert res.exit_code == 1, res.output
    assert "case(s) failed" in res.output
    data = json.loads((out / "results.json").read_text())
    failed = [c for c in data["cases"] if c["status"] == "failed"]
    assert len(failed) >= 1 and len(data["cases"]) == 6
    assert failed[0]["metrics"]["dice"] == 0.0 and "planted failure" in failed[0]["error"]
    assert data["aggregate"]["n_failed"] == len(failed)
    assert "planted failure" in (out / "errors.log").read_text()
    assert any(f["case_id"] == failed[0]["case_id"] for f in data["failures"])


def test_same_seed_same_metrics(testkit, tmp_path):
    cfg = dict(segmenter="intensity", benchmark=TINY_BENCHMARK, seed=1, progress=False,
               options={"segmenter": {"noise": 0.2}})
    a = run(RunConfig(out_dir=str(tmp_path / "a"), **cfg))
    b = run(RunConfig(out_dir=str(tmp_path / "b"), **cfg))
    assert _metrics(a) == _metrics(b)
    assert a["plugins"]["segmenter"]["changed_options"] == {"noise": 0.2}  # what a leaderboard row shows
    c = run(RunConfig(out_dir=str(tmp_path / "c"), **{**cfg, "seed": 2}))
    assert _metrics(a) != _metrics(c)


def test_resume_skips_finished_cases(testkit, tmp_path):
    cfg = RunConfig(segmenter="intensity", benchmark=TINY_BENCHMARK, out_dir=str(tmp_path / "r"), progress=False)
    first = run(cfg)
    journal = tmp_path / "r" / "cases.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])  # truncated write
    second = run(cfg)
    assert _metrics(first) == _metrics(second)
    ids = [json.loads(l)["case_id"] for l in journal.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 6


def test_different_config_in_same_out_dir_is_refused(testkit, tmp_path):
    runner = CliRunner()
    args = ["run", "--benchmark", TINY_BENCHMARK, "--segmenter", "intensity", "--out", str(tmp_path / "o"), "-q"]
    assert runner.invoke(cli, args).exit_code == 0
    res = runner.invoke(cli, args + ["-o", "segmenter.noise=0.1"])
    assert res.exit_code == 2 and "different configuration" in res.output


def test_predictor_checkpoint_is_reused(testkit, tmp_path):
    testkit.FIT_CALLS["n"] = 0
    cfg = dict(segmenter="pred-weighted", predictor="tiny-mean", benchmark=TINY_BENCHMARK, progress=False)
    a = run(RunConfig(out_dir=str(tmp_path / "a"), **cfg))
    assert testkit.FIT_CALLS["n"] == 1
    b = run(RunConfig(out_dir=str(tmp_path / "b"), **cfg))
    assert testkit.FIT_CALLS["n"] == 1, "second run must load the cached checkpoint"
    assert a["plugins"]["predictor"]["checkpoint_sha256"] == b["plugins"]["predictor"]["checkpoint_sha256"]
    assert a["plugins"]["predictor"]["training"]["final_loss"] > 0
    assert _metrics(a) == _metrics(b)


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path):
    env = subprocess_env(WSBENCH_CACHE=str(tmp_path / "cache"))
    base = [sys.executable, "-m", "wsbench", "run", "--benchmark", TINY_BENCHMARK, "--segmenter", "intensity",
            "-o", "segmenter.noise=0.1", "--seed", "5", "-q"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(base + ["--out", str(killed), "-o", "segmenter.sleep=0.4"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    journal = killed / "cases.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(journal.read_text().splitlines())
    assert 2 <= n_before < 6, "the run should have been killed mid-way"
    assert not (killed / "results.json").exists()
    # rerun the same configuration (sleep is the same: it is part of the identity)
    rerun = subprocess.run(base + ["--out", str(killed), "-o", "segmenter.sleep=0.4"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    full = subprocess.run(base + ["--out", str(tmp_path / "full"), "-o", "segmenter.sleep=0.4"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    a = json.loads((killed / "results.json").read_text())
    b = json.loads((tmp_path / "full" / "results.json").read_text())
    assert _metrics(a) == _metrics(b)
    ids = [json.loads(l)["case_id"] for l in journal.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 6


def test_first_party_plugin_runs_through_wsbench_run(testkit, tmp_path):
    pytest.importorskip("wsbench_blob_dot", reason="install plugins/wsbench-blob-dot (README set-up)")
    out = tmp_path / "blob"
    res = CliRunner().invoke(cli, ["run", "--benchmark", TINY_BENCHMARK, "--segmenter", "blob-dot",
                                   "-o", "segmenter.spacing_mm=1.5", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "results.json").read_text())
    assert data["plugins"]["segmenter"]["distribution"] == "wsbench-blob-dot"
    assert data["aggregate"]["dice"]["mean"] > 0.3  # balls in noise: a blob filter finds them


def test_changed_default_is_not_resumed_silently(testkit, tmp_path, monkeypatch):
    cfg = RunConfig(segmenter="intensity", benchmark=TINY_BENCHMARK, out_dir=str(tmp_path / "d"), progress=False)
    run(cfg)
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(testkit.IntensitySegmenter.Options)}
    monkeypatch.setattr(fields["noise"], "default", 0.3)
    new_opts = dataclasses.make_dataclass("Options", [(f.name, f.type, f) for f in fields.values()])
    monkeypatch.setattr(testkit.IntensitySegmenter, "Options", new_opts)
    from wsbench.errors import WsbenchError

    with pytest.raises(WsbenchError, match="different configuration"):
        run(cfg)
