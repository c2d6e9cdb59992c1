"""wsbench.validate: good files, tampering, malformed input, markup injection, old schemas."""

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import TINY_BENCHMARK
from results_factory import make_results
from wsbench.benchmark import load_benchmark
from wsbench.errors import WsbenchError
from wsbench.validate import (CURRENT_SCHEMA, check_name, load_results, sanitize_name, submission_path, upgrade,
                              validate_results)

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def good():
    return make_results(n=6, failed=(2,))


def test_good_file_is_valid(good, tmp_path):
    assert validate_results(good) == []
    p = tmp_path / "results.json"
    p.write_text(json.dumps(good))
    assert validate_results(p) == []
    assert validate_results(tmp_path) == []  # a run folder means its results.json
    assert load_results(p)["cases"] == good["cases"]
    assert validate_results(good, submission=True) == []


def test_real_runner_output_validates(testkit, tmp_path):
    from wsbench.runner import RunConfig, run

    res = run(RunConfig(segmenter="intensity", benchmark=TINY_BENCHMARK, seed=1, out_dir=str(tmp_path / "r"),
                        progress=False, device="cpu"))
    assert validate_results(tmp_path / "r" / "results.json", benchmark=load_benchmark(TINY_BENCHMARK)) == []
    # without the definition on the search path the split cannot be checked: said, not ignored
    problems = validate_results(tmp_path / "r" / "results.json")
    assert len(problems) == 1 and "benchmark 'tiny' is not defined here" in problems[0]
    assert res["complete"]


def test_tampered_aggregate(good):
    bad = copy.deepcopy(good)
    bad["aggregate"]["dice"]["mean"] += 1e-6
    problems = validate_results(bad)
    assert len(problems) == 1 and problems[0].startswith("aggregate.dice.mean =")
    # within the 1e-9 tolerance (JSON round trip noise) is fine
    ok = copy.deepcopy(good)
    ok["aggregate"]["dice"]["mean"] += 1e-12
    assert validate_results(ok) == []


def test_tampered_case_breaks_aggregate(good):
    bad = copy.deepcopy(good)
    bad["cases"][0]["metrics"]["dice"] = min(1.0, bad["cases"][0]["metrics"]["dice"] + 0.05)
    problems = validate_results(bad)
    assert any(p.startswith("aggregate.dice.mean") for p in problems), problems


def test_tampered_bookkeeping(good):
    bad = copy.deepcopy(good)
    bad["failures"] = []
    assert any("'failures' and the failed cases disagree" in p for p in validate_results(bad))
    bad = copy.deepcopy(good)
    bad["timings"]["seconds_per_case"] = 0.01
    assert any("seconds_per_case" in p for p in validate_results(bad))
    bad = copy.deepcopy(good)
    bad["cases"][1]["case_id"] = bad["cases"][0]["case_id"]
    assert any("duplicate case ids" in p for p in validate_results(bad))
    bad = copy.deepcopy(good)
    bad["dataset"]["split"] = {"cases": {"test": 7, "validation": 3}}
    assert any("6 test cases, but the dataset's split records 7" in p for p in validate_results(bad))
    bad["dataset"]["split"]["cases"]["test"] = 6
    assert validate_results(bad) == []
    bad = copy.deepcopy(good)
    bad["binarization"]["fitted_on"] = "test"
    assert any("fitted on 'validation' only" in p for p in validate_results(bad))


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.pop("cases"), "missing key 'cases'"),
    (lambda d: d.update(seed="0"), "'seed' must be an integer"),
    (lambda d: d["cases"][0]["metrics"].update(dice="0.5"), "metrics.dice' must be a finite number"),
    (lambda d: d["cases"][0]["metrics"].update(dice=1.5), "outside [0, 1]"),
    (lambda d: d["cases"][0]["metrics"].pop("hd95_mm"), "missing key 'cases[0] (synth-000).metrics.hd95_mm'"),
    (lambda d: d["cases"][0].update(status="maybe"), "expected 'ok' or 'failed'"),
    (lambda d: d["cases"][0]["info"].pop("diameter_mm"), "info.diameter_mm"),
    (lambda d: d.update(created="yesterday"), "not an ISO 8601 time"),
    (lambda d: d["plugins"].pop("generator"), "missing key 'plugins.generator'"),
    (lambda d: d["benchmark"]["geometry"].update(size=48), "differs from the definition's"),
    (lambda d: d.update(complete="yes"), "'complete' must be true/false"),
    (lambda d: d["cases"][2]["metrics"].update(dice=0.9), "of a failed case must be the worst case"),
    (lambda d: d["benchmark"]["metrics"].update(surface_dice_tolerance_mm=3.0), "benchmark.metrics"),
])
def test_malformed_fields(good, mutate, expected):
    bad = copy.deepcopy(good)
    mutate(bad)
    problems = validate_results(bad)
    assert any(expected in p for p in problems), problems


def test_malformed_files(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"schema_version": 1, "cases": [')
    with pytest.raises(WsbenchError, match=r"broken.json is not valid JSON"):
        validate_results(p)
    p.write_text('{"schema_version": 1, "x": NaN}')
    with pytest.raises(WsbenchError, match="not valid JSON"):
        validate_results(p)
    with pytest.raises(WsbenchError, match="does not exist"):
        validate_results(tmp_path / "nope.json")
    assert validate_results([1, 2]) == ["a results file is a JSON object, got list"]
    assert "missing key 'schema_version'" in validate_results({"cases": []})[0]
    assert "newer than this wsbench understands" in validate_results({"schema_version": CURRENT_SCHEMA + 1})[0]
    assert "not a known results schema" in validate_results({"schema_version": -1})[0]
    p.write_text("[]")
    with pytest.raises(WsbenchError, match=r"broken.json is not a valid results file: a results file is a JSON"):
        load_results(p)


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "a|b", "[x](http://evil)", "**bold**",
                                  "../../etc/passwd", "x y", ".hidden", "", "a" * 65, "ünïcode", "`code`"])
def test_markup_injection_is_refused(good, name):
    bad = copy.deepcopy(good)
    bad["plugins"]["segmenter"]["name"] = name
    problems = validate_results(bad)
    assert any(p.startswith("segmenter name") for p in problems), problems
    assert check_name(name, "segmenter") is not None


def test_injection_in_other_names(good):
    for path in (("plugins", "predictor", "version"), ("benchmark", "name"), ("dataset", "name"),
                 ("wsbench_version",)):
        bad = copy.deepcopy(good)
        obj = bad
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = "<img src=x onerror=alert(1)>"
        assert any("characters outside" in p for p in validate_results(bad)), path
    for dev, ok in (("cuda:1", True), ("cpu", True), ("<b>cpu</b>", False), ("cuda:1:2", False)):
        d = copy.deepcopy(good)
        d["device"] = dev
        assert (validate_results(d) == []) == ok, dev


def test_sanitize_and_paths(good, tmp_path):
    assert check_name("flow-guide", "segmenter") is None
    assert check_name("radimgnet_v2.1+cpu", "predictor") is None
    for raw in ("../../etc/passwd", "<b>x</b>", "..", "a/../../b", "x" * 200, None, ""):
        s = sanitize_name(raw)
        assert s and len(s) <= 64 and check_name(s, "x") is None, (raw, s)
    evil = copy.deepcopy(good)
    evil["benchmark"]["name"] = "../../../tmp"
    evil["plugins"]["segmenter"]["name"] = "../../x"
    root = tmp_path / "leaderboard" / "submissions"
    p = submission_path(root, evil)
    assert p.parent.parent == root.resolve() and p.name.endswith("--seed0.json")
    assert submission_path(root, good) == root.resolve() / "luna16-synth" / "gradcam--cnn3d--none--seed0.json"


def test_old_schema_loads():
    """tests/data/results_v0.json: a schema-0 file (flat metrics, no binarization block)."""
    path = DATA / "results_v0.json"
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 0 and "binarization" not in raw and "dice" in raw["cases"][0]
    assert validate_results(path) == []
    data = load_results(path)
    assert data["schema_version"] == CURRENT_SCHEMA and data["upgraded_from"] == 0
    assert data["binarization"] == {"rule": "val-dice-threshold", "params": {"threshold": 0.5},
                                    "fitted_on": "validation", "n_cases": 5, "validation_mean_dice": 0.5}
    assert data["cases"][0]["metrics"]["dice"] == raw["cases"][0]["dice"]
    assert data["plugins"]["predictor"]["name"] == "cnn3d" and data["plugins"]["generator"] is None
    assert [f["case_id"] for f in data["failures"]] == [c["case_id"] for c in raw["cases"] if c["status"] == "failed"]
    assert upgrade(raw) == data and raw["schema_version"] == 0  # the input is not modified
    # the flat schema-0 aggregate is checked against the per-case records too
    raw["aggregate"]["dice_median"] += 0.01
    problems = validate_results(raw)
    assert problems and problems[0].startswith("aggregate.dice.median")


def test_expected_split(good, tmp_path):
    toml = (Path(load_benchmark("luna16-synth").path).read_text()
            + '\n[expected]\nfingerprint = "fp-test-0001"\nn_test_cases = 6\n')
    (tmp_path / "luna16-synth.toml").write_text(toml)
    bench = load_benchmark(str(tmp_path / "luna16-synth.toml"))
    assert validate_results(good, benchmark=bench) == []
    bench.expected = {"fingerprint": "other", "n_test_cases": 7}
    problems = validate_results(good, benchmark=bench)
    assert any("dataset fingerprint 'fp-test-0001' differs" in p for p in problems)
    assert any("6 test cases, but the benchmark's test split has 7" in p for p in problems)
    limited = copy.deepcopy(good)
    limited["limit"] = 6
    bench.expected = {"n_test_cases": 40}
    assert validate_results(limited, benchmark=bench) == []
    assert any("--limit 6" in p for p in validate_results(limited, benchmark=bench, submission=True))
    from wsbench.binarize import Binarizer

    default = Binarizer(good["binarization"]["rule"], {}, {}).options  # as the runner records them
    tuned = copy.deepcopy(good)
    tuned["binarization"]["options"] = dict(default)
    assert validate_results(tuned, submission=True) == []
    tuned["binarization"]["options"]["components"] = "peak"
    assert validate_results(tuned) == []
    assert any("submissions use the benchmark's rule" in p for p in validate_results(tuned, submission=True))


def test_validate_cli(good, tmp_path):
    from wsbench.cli import cli

    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(good))
    bad = copy.deepcopy(good)
    bad["plugins"]["segmenter"]["name"] = "<b>x</b>"
    badp = tmp_path / "bad.json"
    badp.write_text(json.dumps(bad))
    res = CliRunner().invoke(cli, ["validate", str(ok)])
    assert res.exit_code == 0 and "valid" in res.output
    res = CliRunner().invoke(cli, ["validate", str(ok), str(badp), str(tmp_path / "missing.json")])
    assert res.exit_code == 1
    assert "INVALID" in res.output and "bad.json" in res.output and "<b>x</b>" in res.output
    assert "missing.json does not exist" in res.output and "Traceback" not in res.output


def test_historic_files_of_every_schema_version_validate():
    """tests/data/results_v<N>.json for N = 0..CURRENT: files written in the past must keep validating
    (a change to the metrics or the aggregate that breaks one breaks every published submission)."""
    for v in range(CURRENT_SCHEMA + 1):
        path = DATA / f"results_v{v}.json"
        assert json.loads(path.read_text())["schema_version"] == v
        assert validate_results(path) == [], path
