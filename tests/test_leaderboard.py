"""wsbench.leaderboard: build, --check staleness, ranking, sanitising, verification, submit."""

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from results_factory import make_results
from wsbench.errors import WsbenchError
from wsbench.leaderboard import HEADER, build, file_sha256, reproduction_record_path
from wsbench.validate import submission_path

REPO = Path(__file__).resolve().parent.parent


def _submit(root: Path, data: dict) -> Path:
    p = submission_path(root, data)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=1))
    return p


@pytest.fixture
def board(tmp_path):
    root = tmp_path / "leaderboard" / "submissions"
    files = {
        "mid": _submit(root, make_results("gradcam", "cnn3d", quality=0.8, init="scratch")),
        "best": _submit(root, make_results("flow-guide", "radimgnet", "rflow", quality=1.0, init="pretrained",
                                           created="2026-12-02T08:00:00Z")),
        "worst": _submit(root, make_results("hu-threshold", None, quality=0.5, failed=(0, 3))),
    }
    return root, tmp_path / "leaderboard" / "README.md", files


def _table_rows(text: str) -> list[list[str]]:
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| rank")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]


def test_build_renders_ranked_table(board):
    root, out, files = board
    text = build(root, out)
    assert out.read_text() == text and text.startswith(HEADER)
    assert "## luna16-synth" in text and "|--" in text  # tabulate's github format
    rows = _table_rows(text)
    assert [r[1] for r in rows] == ["flow-guide", "gradcam", "hu-threshold"]  # by mean Dice, best first
    assert [r[0] for r in rows] == ["1", "2", "3"]
    best = json.loads(files["best"].read_text())
    agg = best["aggregate"]["dice"]
    assert rows[0][5] == f"{agg['mean']:.3f} [{agg['ci95'][0]:.3f}, {agg['ci95'][1]:.3f}]"
    assert rows[0][2:5] == ["radimgnet", "rflow", "pretrained"]
    assert rows[1][2:5] == ["cnn3d", "–", "scratch"]
    assert rows[2][2:5] == ["–", "–", "–"]
    assert rows[2][9] == "2 / 0 of 6"  # two failed cases
    assert rows[0][12] == "2026-12-02" and rows[0][11] == "0.1.0"
    assert rows[0][13] == ""  # not verified


def test_build_is_deterministic_and_check_detects_staleness(board):
    root, out, files = board
    first = build(root, out)
    assert build(root, out, check=True) == first
    assert build(root, out) == first  # no build time in the output
    # a new submission makes the committed page stale
    _submit(root, make_results("gradcam", "litemedsam", quality=0.9))
    with pytest.raises(WsbenchError, match=r"README.md is stale: run `wsbench leaderboard build`"):
        build(root, out, check=True)
    assert out.read_text() == first  # --check writes nothing
    build(root, out)
    build(root, out, check=True)
    with pytest.raises(WsbenchError, match="does not exist"):
        build(root, out.with_name("other.md"), check=True)


def test_ties_are_ordered_deterministically(tmp_path):
    root = tmp_path / "submissions"
    _submit(root, make_results("zeta", "cnn3d", quality=0.8))
    _submit(root, make_results("alpha", "cnn3d", quality=0.8))
    rows = _table_rows(build(root, tmp_path / "README.md"))
    assert [(r[0], r[1]) for r in rows] == [("1", "alpha"), ("1", "zeta")]


def test_empty_board(tmp_path):
    (tmp_path / "submissions").mkdir()
    text = build(tmp_path / "submissions", tmp_path / "README.md")
    assert "_No submissions yet._" in text and "|" not in text.split("_No submissions")[1]


def test_invalid_submission_is_refused_with_its_name(board):
    root, out, files = board
    data = json.loads(files["mid"].read_text())
    data["plugins"]["segmenter"]["name"] = "<img src=x onerror=alert(1)>"
    files["mid"].write_text(json.dumps(data))
    with pytest.raises(WsbenchError, match=r"refusing submission .*gradcam--cnn3d--none--seed0.json: segmenter name"):
        build(root, out)
    # a tampered aggregate too
    data = json.loads(files["best"].read_text())
    data["aggregate"]["dice"]["mean"] = 0.99
    files["mid"].unlink()
    files["best"].write_text(json.dumps(data))
    with pytest.raises(WsbenchError, match=r"refusing submission .*flow-guide.*aggregate.dice.mean"):
        build(root, out)


def test_submission_in_wrong_benchmark_folder_or_limited(board):
    root, out, files = board
    wrong = root / "luna16" / files["mid"].name
    wrong.parent.mkdir()
    wrong.write_text(files["mid"].read_text())
    with pytest.raises(WsbenchError, match="holds results of benchmark 'luna16-synth' but sits in luna16/"):
        build(root, out)
    wrong.unlink()
    data = json.loads(files["mid"].read_text())
    data["limit"] = 6
    files["mid"].write_text(json.dumps(data))
    with pytest.raises(WsbenchError, match="--limit 6; submissions must cover the whole test split"):
        build(root, out)


def test_markdown_cells_never_carry_markup(board):
    """Names are validated; what reaches a cell is sanitised once more (defence in depth)."""
    from wsbench.leaderboard import _cell

    for raw in ("a|b", "<b>", "[x](y)", "`c`", "*x*"):
        cell = _cell(raw)
        assert not set(cell) & set("|<>[]()`*"), cell


def test_verified_needs_a_passing_record_for_the_same_bytes(board):
    root, out, files = board
    rec = reproduction_record_path(root, files["mid"])
    rec.parent.mkdir(parents=True)
    rec.write_text(json.dumps({"sha256": file_sha256(files["mid"]), "passed": True}))
    rows = _table_rows(build(root, out))
    assert {r[1]: r[13] for r in rows} == {"flow-guide": "", "gradcam": "✓", "hu-threshold": ""}
    rec.write_text(json.dumps({"sha256": file_sha256(files["mid"]), "passed": False}))
    assert all(r[13] == "" for r in _table_rows(build(root, out)))
    rec.write_text(json.dumps({"sha256": "0" * 64, "passed": True}))  # the file changed after reproduction
    assert all(r[13] == "" for r in _table_rows(build(root, out)))


def test_old_schema_submission_is_listed(tmp_path):
    root = tmp_path / "submissions"
    (root / "luna16-synth").mkdir(parents=True)
    (root / "luna16-synth" / "old.json").write_text((REPO / "tests" / "data" / "results_v0.json").read_text())
    rows = _table_rows(build(root, tmp_path / "README.md"))
    assert len(rows) == 1 and rows[0][1] == "gradcam" and rows[0][11] == "0.0.9"
    assert "[" in rows[0][5]  # CI recomputed from the per-case records


def test_cli_submit_and_build(tmp_path):
    from wsbench.cli import cli

    run = tmp_path / "run"
    run.mkdir()
    data = make_results("gradcam", "cnn3d")
    (run / "results.json").write_text(json.dumps(data))
    subs = tmp_path / "lb" / "submissions"
    readme = tmp_path / "lb" / "README.md"
    r = CliRunner().invoke(cli, ["leaderboard", "submit", str(run), "--submissions", str(subs)])
    assert r.exit_code == 0, r.output
    dest = subs / "luna16-synth" / "gradcam--cnn3d--none--seed0.json"
    assert dest.read_bytes() == (run / "results.json").read_bytes()
    r = CliRunner().invoke(cli, ["leaderboard", "submit", str(run), "--submissions", str(subs)])
    assert r.exit_code == 2 and "already exists" in r.output
    r = CliRunner().invoke(cli, ["leaderboard", "build", "--submissions", str(subs), "--out", str(readme)])
    assert r.exit_code == 0 and "gradcam" in readme.read_text()
    r = CliRunner().invoke(cli, ["leaderboard", "build", "--check", "--submissions", str(subs), "--out", str(readme)])
    assert r.exit_code == 0, r.output
    readme.write_text(readme.read_text() + "edited\n")
    r = CliRunner().invoke(cli, ["leaderboard", "build", "--check", "--submissions", str(subs), "--out", str(readme)])
    assert r.exit_code == 2 and "is stale" in r.output and "Traceback" not in r.output
    bad = copy.deepcopy(data)
    bad["complete"] = False
    (run / "results.json").write_text(json.dumps(bad))
    r = CliRunner().invoke(cli, ["leaderboard", "submit", str(run), "--submissions", str(subs), "--force"])
    assert r.exit_code == 2 and "not complete" in r.output


def test_shipped_leaderboard_is_up_to_date():
    """What CI checks: leaderboard/README.md matches leaderboard/submissions/."""
    build(REPO / "leaderboard" / "submissions", REPO / "leaderboard" / "README.md", check=True)


def test_plugin_cell_lists_changed_options_and_stays_plain(tmp_path):
    """A row says which options the submitter changed (e.g. medsam at 64² instead of 256²)."""
    root = tmp_path / "leaderboard" / "submissions"
    data = make_results("gradcam", "cnn3d", quality=0.8)
    data["plugins"]["predictor"]["options"] = {"a": 1, "input_size": 64, "channels": [16, 32], "head": "x|<b>"}
    data["plugins"]["predictor"]["changed_options"] = {"input_size": 64, "channels": [16, 32], "head": "x|<b>"}
    _submit(root, data)
    rows = _table_rows(build(root, tmp_path / "README.md"))
    assert rows[0][1] == "gradcam"  # nothing changed, no parentheses
    assert rows[0][2] == "cnn3d (channels=16,32, head=x-b, input_size=64)"


def test_changed_options_must_agree_with_options(tmp_path):
    from wsbench.validate import validate_results

    data = make_results("gradcam", "cnn3d", quality=0.8)
    data["plugins"]["predictor"]["changed_options"] = {"a": 2}
    p = tmp_path / "r.json"
    p.write_text(json.dumps(data))
    assert any("changed_options.a" in s and "disagrees" in s for s in validate_results(p))
    data["plugins"]["predictor"]["changed_options"] = {"a": 1}
    p.write_text(json.dumps(data))
    assert validate_results(p) == []


def test_changed_options_get_their_own_submission_file(tmp_path):
    """A non-default configuration (e.g. a longer-trained flow) never overwrites the default row."""
    from wsbench.validate import submission_name

    default = make_results("flow-guide", "cnn3d", "rflow", quality=0.8)
    longer = copy.deepcopy(default)
    longer["plugins"]["generator"]["changed_options"] = {"steps": 2000}
    assert submission_name(default) == "flow-guide--cnn3d--rflow--seed0.json"
    name = submission_name(longer)
    assert name.startswith("flow-guide--cnn3d--rflow--seed0--o") and name.endswith(".json") and name != submission_name(default)
    longer["plugins"]["generator"]["changed_options"] = {"steps": 4000}
    assert submission_name(longer) != name
