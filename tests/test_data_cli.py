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
                                   "-o", "masks=auto", "-o", "train_subsets=0-9",
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


def test_luna16_reading_of_a_synth_tree_equals_the_builtin_dataset(tree, tmp_path, monkeypatch, pool):
    """`data synth --out X` read with `--dataset luna16 --data-dir X` gives the same
    fingerprint and the same cases as `luna16-synth` (built separately into the cache)."""
    import numpy as np

    from wsbench import plugins
    from wsbench.data.types import Geometry

    monkeypatch.setattr(builder, "default_shapes", lambda progress=None: pool)
    monkeypatch.setenv("WSBENCH_CACHE", str(tmp_path / "cache"))
    man = json.loads((tree / "synth.json").read_text())
    used = sorted({s["subset"] for s in man["series"]})
    split = {"train_subsets": str(used[0]), "validation_subsets": "", "test_subsets": str(used[1])}
    synth = plugins.get("dataset", "luna16-synth").cls({"scans": 2, "seed": 4, **split})
    real = plugins.get("dataset", "luna16").cls({"data_dir": str(tree), "seed": 4, **split})  # masks: auto
    assert synth.root() != tree
    assert synth.fingerprint() == real.fingerprint()
    geo = Geometry(size=24, spacing_mm=1.0, max_offset_vox=4)
    a, b = list(synth.cases("test", geo)), list(real.cases("test", geo))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.case_id == y.case_id and x.info["nodule_type"] == y.info["nodule_type"]
        assert np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask)
