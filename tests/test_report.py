"""wsbench.report: montage PNGs of the expected size, overlays that differ from the CT, index pages."""

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.image import imread

from results_factory import make_case, write_run
from wsbench.report import (MONTAGE_SIZE_PX, SUMMARY_SIZE_PX, ct_rgb, make_report, montage, nodule_centre,
                            overlay_rgb)


def _size(png) -> tuple[int, int]:
    a = imread(png)
    return a.shape[1], a.shape[0]


def test_overlay_differs_from_ct_only_where_the_score_is():
    case = make_case(1, quality=0.9)
    c = nodule_centre(case["truth"])
    img, sc = case["image"][c[0]], case["score"][c[0]]
    lo, hi = float(case["score"].min()), float(case["score"].max())
    bare, over = ct_rgb(img), overlay_rgb(img, sc, lo, hi)
    assert bare.shape == over.shape == (*img.shape, 3)
    assert 0.0 <= over.min() and over.max() <= 1.0
    diff = np.abs(over - bare).sum(-1)
    hot = sc > lo + 0.5 * (hi - lo)
    assert diff[hot].min() > 0.05  # visible where the map is high
    assert np.all(diff[sc == lo] == 0)  # untouched where it is at its minimum
    assert np.array_equal(overlay_rgb(img, np.ones_like(sc), 1.0, 1.0), bare)  # a constant map shows nothing


def test_nodule_centre():
    m = np.zeros((9, 9, 9), bool)
    m[2:5, 4:7, 6:9] = True
    assert nodule_centre(m) == (3, 5, 7)
    assert nodule_centre(np.zeros_like(m), m) == (3, 5, 7)
    assert nodule_centre(np.zeros_like(m)) == (4, 4, 4)


def test_montage_png_size_and_panels(tmp_path):
    case = make_case(2, quality=0.7)
    panels: dict = {}
    out = montage(case, tmp_path / "m.png", title="case 2", panels_out=panels)
    assert _size(out) == MONTAGE_SIZE_PX
    png = imread(out)[..., :3]

    def crop(rc):
        x0, y0, x1, y1 = panels[rc]
        return png[y0 + 2:y1 - 2, x0 + 2:x1 - 2]

    for row in range(3):
        crops = [crop((row, col)) for col in range(3)]
        h = min(c.shape[0] for c in crops)
        w = min(c.shape[1] for c in crops)  # boxes may differ by a pixel of rounding
        assert h > 100 and w > 100
        ct, overlay, contours = (c[:h, :w] for c in crops)
        assert np.abs(overlay - ct).mean() > 0.01, f"row {row}: the overlay looks like the bare CT"
        # the contour panel is the CT plus coloured lines: red and green pixels that the CT has not
        red = (contours[..., 0] > 0.6) & (contours[..., 1] < 0.35)
        green = (contours[..., 1] > 0.45) & (contours[..., 0] < 0.35)
        assert red.sum() > 10 and green.sum() > 10, row
        assert not ((ct[..., 0] > 0.6) & (ct[..., 1] < 0.35)).any()


def test_montage_anisotropic_and_empty_prediction(tmp_path):
    case = make_case(3, quality=0.0)  # empty prediction: only the truth contour
    case["spacing"] = np.array([2.5, 0.7, 0.7])
    assert _size(montage(case, tmp_path / "a.png")) == MONTAGE_SIZE_PX


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_report_of_two_runs(tmp_path, fmt):
    a = write_run(tmp_path / "a", n=3, failed=(1,))
    b = write_run(tmp_path / "b", segmenter="flow-guide", generator="rflow", n=3, quality=0.9)
    index = make_report([a, b], tmp_path / "rep", fmt=fmt)
    assert index == tmp_path / "rep" / f"index.{fmt}"
    text = index.read_text()
    pngs = sorted((tmp_path / "rep" / "cases").rglob("*.png"))
    assert len(pngs) == 5  # the failed case has no maps, hence no montage
    for p in pngs:
        assert _size(p) == MONTAGE_SIZE_PX
        assert p.relative_to(tmp_path / "rep").as_posix() in text
    for name in ("dice_per_method.png", "dice_vs_diameter.png"):
        assert _size(tmp_path / "rep" / name) == SUMMARY_SIZE_PX and name in text
    assert "failed: RuntimeError: out of memory" in text
    assert "gradcam / cnn3d" in text and "flow-guide / cnn3d / rflow" in text


def test_report_cli(tmp_path):
    from wsbench.cli import cli

    run = write_run(tmp_path / "run", n=2)
    r = CliRunner().invoke(cli, ["report", str(run.parent), "--max-cases", "1", "-q"])
    assert r.exit_code == 0, r.output
    assert len(list((run.parent / "report" / "cases").rglob("*.png"))) == 1
    assert (run.parent / "report" / "index.md").is_file()
    r = CliRunner().invoke(cli, ["report", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_unreadable_results_give_one_line_errors(tmp_path):
    from wsbench.errors import WsbenchError

    p = tmp_path / "results.json"
    for text, msg in (("[1]", "not a wsbench results file"), ("{", "not valid JSON"),
                      ('{"schema_version": 1, "cases": []}', "not a readable results file: missing key"),
                      ('{"schema_version": 9}', "newer than this wsbench")):
        p.write_text(text)
        with pytest.raises(WsbenchError, match=msg):
            make_report([p], tmp_path / "rep")


def test_contours_sit_on_the_mask(tmp_path):
    """The contour panel's lines surround the nodule where the CT panel shows it (no half-voxel shift)."""
    case = make_case(3, quality=1.0)  # prediction == truth: the red line hides the green one
    case["image"][case["truth"]] = 1.0
    panels: dict = {}
    png = imread(montage(case, tmp_path / "c.png", panels_out=panels))[..., :3]
    for row in range(3):
        x0, y0, x1, y1 = panels[(row, 0)]
        ct = png[y0:y1, x0:x1]
        x0, y0, x1, y1 = panels[(row, 2)]
        cont = png[y0:y1, x0:x1]
        bright = np.argwhere(ct.min(-1) > 0.95)
        red = np.argwhere((cont[..., 0] > 0.6) & (cont[..., 1] < 0.35))
        assert len(bright) > 50 and len(red) > 20
        px_per_voxel = ct.shape[1] / case["image"].shape[2]
        # compare bounding-box centres (a line's pixel centroid depends on antialiasing)
        shift = np.abs((bright.min(0) + bright.max(0)) / 2 - (red.min(0) + red.max(0)) / 2)
        assert shift.max() < 0.25 * px_per_voxel, (row, shift, px_per_voxel)


def test_report_text_from_results_carries_no_markup(tmp_path):
    import json

    p = write_run(tmp_path / "run", n=2, failed=(0,))
    data = json.loads(p.read_text())
    data["cases"][0]["error"] = "<script>alert(1)</script> [click](javascript:alert(1)) **x**"
    data["failures"][0]["error"] = data["cases"][0]["error"]
    p.write_text(json.dumps(data))
    md = make_report([p], tmp_path / "md", fmt="md").read_text()
    htm = make_report([p], tmp_path / "html", fmt="html").read_text()
    assert "failed: RuntimeError" not in md and "alert 1" in md
    assert "<script>" not in md and "](javascript" not in md
    assert "<script>" not in htm and "&lt;script&gt;" in htm  # escaped; markdown syntax is inert in HTML
