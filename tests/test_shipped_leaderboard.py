"""The checked-in leaderboard: every shipped submission validates and the page is current."""

from pathlib import Path

from click.testing import CliRunner

from wsbench.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_leaderboard_is_valid_and_current():
    subs = ROOT / "leaderboard" / "submissions"
    res = CliRunner().invoke(cli, ["leaderboard", "build", "--check", "--submissions", str(subs),
                                   "--out", str(ROOT / "leaderboard" / "README.md")])
    assert res.exit_code == 0, res.output


def test_shipped_rows_cover_every_builtin_segmenter():
    import json

    from wsbench import plugins

    reg = plugins.get_registry()
    builtin = {n for n in reg.names("segmenter") if reg.get("segmenter", n).distribution == "wsbench"}
    rows = [json.loads(p.read_text()) for p in (ROOT / "leaderboard" / "submissions" / "luna16-synth").glob("*.json")]
    by_seg: dict[str, set] = {}
    for r in rows:
        pred = r["plugins"]["predictor"]["name"] if r["plugins"].get("predictor") else None
        by_seg.setdefault(r["plugins"]["segmenter"]["name"], set()).add(pred)
    assert builtin <= set(by_seg), f"segmenters without a shipped row: {sorted(builtin - set(by_seg))}"
    for seg, preds in by_seg.items():
        if reg.get("segmenter", seg).cls.needs_predictor:
            assert "cnn3d" in preds, seg
