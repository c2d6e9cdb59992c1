"""`wsbench data synth | prepare | show` through click's CliRunner."""

import json

import pytest
from click.testing import CliRunner

from wsbench.data.synth import builder


@pytest.fixture(scope="module")
def pool():
    from wsbench.data.lidc import lidc_nodule_shapes

    return lidc_nodule_shapes(3, 30, limit=80, seed=0)


@pytest.fixture
def cli(monkeypatch, pool):
    from wsbench.cli import cli as _cli

    monkeypatch.setattr(builder, "default_shapes", lambda progress=None: pool)
    return _cli


@pytest.fixture(scope="module")
def tree(tmp_path_factory, pool):
    from wsbench.cli import cli as _cli

    out = tmp_path_factory.mktemp("cli") / "tree"
    orig = builder.default_shapes
    builder.default_shapes = lambda progress=None: pool
    try:
        res = CliRunner().invoke(_cli, ["data", "synth", "--out", str(out), "--scans", "2", "--seed", "4",
                                        "--workers", "1"])
    finally:
        builder.default_shapes = orig
    assert res.exit_code == 0, res.output
    assert "wrote 2 scans" in res.output and "nodules per split" in res.output
    return out


def test_synth_writes_a_tree(tree):
    man = json.loads((tree / "synth.json").read_text())
    assert man["scans"] == 2 and man["seed"] == 4
    assert len(list(tree.glob("subset*/*.mhd"))) == 2 and len(list(tree.glob("subset*/*.raw"))) == 2
    assert (tree / "annotations.csv").is_file() and (tree / "candidates_V2.csv").is_file()


def test_synth_refuses_a_used_folder_with_one_line(cli, tree):
    res = CliRunner().invoke(cli, ["data", "synth", "--out", str(tree), "--scans", "1"])
    assert res.exit_code == 2
    assert "not empty" in res.output and "Traceback" not in res.output


def test_show_writes_a_png(cli, tree, tmp_path):
    png = tmp_path / "show.png"
    res = CliRunner().invoke(cli, ["data", "show", "--data-dir", str(tree), "--out", str(png), "--split", "all",
                                   "--nodules", "3"])
    assert res.exit_code == 0, res.output
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_show_on_an_empty_split_says_so(cli, tree, tmp_path):
    man = json.loads((tree / "synth.json").read_text())
    empty = next(s for s in ("train", "validation", "test")
                 if not any(n["subset"] in {"train": range(7), "validation": [7], "test": [8, 9]}[s]
                            for n in man["nodules"]))
    res = CliRunner().invoke(cli, ["data", "show", "--data-dir", str(tree), "--out", str(tmp_path / "x.png"),
                                   "--split", empty])
    assert res.exit_code == 2 and "--split all" in res.output


def test_prepare_reads_the_tree_as_luna16(cli, tree, tmp_path, monkeypatch):
    monkeypatch.setenv("WSBENCH_CACHE", str(tmp_path / "cache"))
    res = CliRunner().invoke(cli, ["data", "prepare", "-b", "luna16", "--data-dir", str(tree),
                                   "-o", f"masks={tree / 'masks'}", "-o", "train_subsets=0-9",
                                   "-o", "validation_subsets=", "-o", "test_subsets="])
    assert res.exit_code == 0, res.output
    assert "fingerprint" in res.output and "'train': 2" in res.output


def test_bad_dataset_option_is_one_line(cli, tmp_path):
    res = CliRunner().invoke(cli, ["data", "prepare", "-o", "scanz=3"])
    assert res.exit_code == 2 and "did you mean 'scans'" in res.output


@pytest.mark.parametrize("cmd", ["synth", "prepare", "show"])
def test_help_has_an_example(cli, cmd):
    res = CliRunner().invoke(cli, ["data", cmd, "--help"])
    assert res.exit_code == 0 and "Example" in res.output and "wsbench data" in res.output
