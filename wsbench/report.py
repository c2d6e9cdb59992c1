"""Pictures of a run: per-case montages, summary plots, one markdown or HTML index page.

Input: one or more results files written by the runner. Next to each ``results.json`` the runner
keeps, per test case, ``maps/test/<case_id>.npz`` with ``image`` ``(D, H, W)`` float32 in the
normalised intensity of :mod:`wsbench.data.intensity`, ``score`` ``(D, H, W)`` float32, ``pred``
and ``truth`` ``(D, H, W)`` bool and ``spacing`` ``(z, y, x)`` mm. Failed cases have no maps and
are listed without a picture.

Output (``--out``, default ``<run>/report``)::

    index.md | index.html          everything tied together
    dice_per_method.png            per-case Dice of each results file (box + points)
    dice_vs_diameter.png           per-case Dice against the nodule diameter (mm)
    cases/<method>/<NNN>-<case>.png  one montage per case

A montage is a 3 × 3 grid of :data:`MONTAGE_SIZE_PX` pixels: rows are the axial, coronal and
sagittal planes through the nodule centre (centre of mass of the truth mask; of the prediction
when the truth is empty; the grid centre when both are), columns are the CT, the score map
overlaid on the CT, and the predicted (red) against the truth (green) contour. Pixel aspect
follows the voxel spacing, so anisotropic grids are not distorted.

Example::

    wsbench report results/luna16-synth/gradcam--cnn3d--none--seed0/results.json --format html
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from wsbench.errors import WsbenchError
from wsbench.progress import ensure
from wsbench.validate import read_json, sanitize_name, structure_problems, upgrade

__all__ = ["MONTAGE_SIZE_PX", "SUMMARY_SIZE_PX", "ct_rgb", "overlay_rgb", "montage", "nodule_centre",
           "summary_plots", "make_report"]

_DPI = 100
#: (width, height) of a case montage PNG in pixels.
MONTAGE_SIZE_PX = (900, 930)
#: (width, height) of each summary plot PNG in pixels.
SUMMARY_SIZE_PX = (800, 500)
_PLANES = ("axial", "coronal", "sagittal")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


# -- panels ------------------------------------------------------------------------------------


def ct_rgb(image2d: np.ndarray) -> np.ndarray:
    """Grey RGB ``(H, W, 3)`` in ``[0, 1]`` from a normalised CT slice (``[-1, 1]`` → black..white)."""
    g = np.clip((np.asarray(image2d, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
    return np.repeat(g[..., None], 3, axis=-1)


def overlay_rgb(image2d: np.ndarray, score2d: np.ndarray, lo: float, hi: float, alpha: float = 0.6,
                cmap: str = "inferno") -> np.ndarray:
    """The score map over the CT: colour ``cmap(s)`` blended with weight ``alpha * s`` where
    ``s = clip((score - lo) / (hi - lo), 0, 1)`` — a zero score leaves the CT untouched.

    ``lo, hi``: the score range of the whole case (so the three planes share one scale); when
    ``hi <= lo`` (constant map) the overlay is the bare CT.
    """
    from matplotlib import colormaps

    base = ct_rgb(image2d)
    if not hi > lo:
        return base
    s = np.clip((np.asarray(score2d, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    colour = colormaps[cmap](s)[..., :3]
    w = alpha * s[..., None]
    return (1.0 - w) * base + w * colour


def nodule_centre(truth: np.ndarray, pred: np.ndarray | None = None) -> tuple[int, int, int]:
    """Voxel ``(z, y, x)`` through which the montage planes pass (see the module docstring)."""
    for m in (truth, pred):
        if m is not None and np.any(m):
            idx = np.argwhere(m)
            return tuple(int(round(v)) for v in idx.mean(axis=0))  # type: ignore[return-value]
    return tuple(s // 2 for s in truth.shape)  # type: ignore[return-value]


def _planes(vol: np.ndarray, c: Sequence[int]) -> list[np.ndarray]:
    # axial: (y, x); coronal: (z, x); sagittal: (z, y)
    return [vol[c[0]], vol[:, c[1], :], vol[:, :, c[2]]]


def _aspects(spacing: Sequence[float]) -> list[float]:
    sz, sy, sx = (float(s) for s in spacing)
    return [sy / sx, sz / sx, sz / sy]


def montage(arrays: dict[str, np.ndarray], out_png: str | Path, title: str = "",
            panels_out: dict | None = None) -> Path:
    """Write one case's 3 × 3 montage PNG (:data:`MONTAGE_SIZE_PX`); ``arrays`` as in the npz.

    ``panels_out``, if given, receives ``{(row, col): (x0, y0, x1, y1)}``: each panel's pixel
    box in the PNG (origin top left), e.g. to crop a panel in a test.
    """
    plt = _plt()
    image = np.asarray(arrays["image"], dtype=np.float32)
    score = np.asarray(arrays["score"], dtype=np.float32)
    pred = np.asarray(arrays["pred"]).astype(bool)
    truth = np.asarray(arrays["truth"]).astype(bool)
    spacing = tuple(np.asarray(arrays.get("spacing", (1.0, 1.0, 1.0)), dtype=np.float64).tolist())
    if not (image.shape == score.shape == pred.shape == truth.shape and image.ndim == 3):
        raise WsbenchError(f"case arrays for {out_png} have mismatched shapes: image {image.shape}, score "
                           f"{score.shape}, pred {pred.shape}, truth {truth.shape}")
    c = nodule_centre(truth, pred)
    lo, hi = float(score.min()), float(score.max())
    w, h = MONTAGE_SIZE_PX
    fig, axes = plt.subplots(3, 3, figsize=(w / _DPI, h / _DPI), dpi=_DPI)
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.03, top=0.90, wspace=0.05, hspace=0.12)
    for row, (plane, img, sc, pr, tr, asp) in enumerate(zip(
            _PLANES, _planes(image, c), _planes(score, c), _planes(pred, c), _planes(truth, c), _aspects(spacing))):
        origin = "upper" if plane == "axial" else "lower"  # superior up in coronal / sagittal views
        panels = [ct_rgb(img), overlay_rgb(img, sc, lo, hi), ct_rgb(img)]
        for col, rgb in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(rgb, aspect=asp, origin=origin, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        ax = axes[row, 2]
        # truth wide underneath, prediction thin on top: where they coincide both stay visible
        for m, colour, lw in ((tr, "#2ca02c", 3.0), (pr, "#d62728", 1.2)):
            if m.any() and not m.all():
                # no ``origin`` here: contour's origin shifts by half a voxel; imshow already set the axes
                ax.contour(m.astype(np.float32), levels=[0.5], colors=[colour], linewidths=lw)
        axes[row, 0].set_ylabel(f"{plane}\n(slice {c[row]})", fontsize=10)
    for col, name in enumerate(("CT", f"score map ({lo:.2g}..{hi:.2g})", "pred (red) vs truth (green)")):
        axes[0, col].set_title(name, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=_DPI)
    if panels_out is not None:
        fig.canvas.draw()
        for (r, c_), ax in np.ndenumerate(axes):
            b = ax.get_window_extent()
            panels_out[(r, c_)] = (int(np.ceil(b.x0)), int(np.ceil(h - b.y1)), int(b.x1), int(h - b.y0))
    plt.close(fig)
    return out_png


# -- runs and summaries ------------------------------------------------------------------------


@dataclass
class Run:
    """One results file: its upgraded data, folder and display label."""

    path: Path
    data: dict[str, Any]
    label: str

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def slug(self) -> str:
        return sanitize_name(self.label.replace(" / ", "--"))


def _label(data: dict[str, Any]) -> str:
    pl = data["plugins"]
    parts = [pl["segmenter"]["name"]] + [pl[r]["name"] for r in ("predictor", "generator") if pl.get(r)]
    return " / ".join(sanitize_name(p) for p in parts)


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Read results files (a folder means its ``results.json``); labels are made unique."""
    runs: list[Run] = []
    seen: dict[str, int] = {}
    for p in paths:
        p = Path(p)
        if p.is_dir():
            p = p / "results.json"
        raw = read_json(p)  # one-line errors for a missing file or bad JSON
        if not isinstance(raw, dict) or "schema_version" not in raw:
            raise WsbenchError(f"{p} is not a wsbench results file (no schema_version)")
        try:
            data = upgrade(raw)
        except WsbenchError as e:
            raise WsbenchError(f"{p}: {e}") from None
        problems = structure_problems(data)
        if problems:
            raise WsbenchError(f"{p} is not a readable results file: {problems[0]}; run `wsbench validate {p}`")
        label = _label(data)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label} ({seen[label]})"
        runs.append(Run(p, data, label))
    if not runs:
        raise WsbenchError("no results files given; e.g. wsbench report results/luna16-synth/RUN/results.json")
    return runs


def summary_plots(runs: Sequence[Run], out_dir: str | Path) -> dict[str, Path]:
    """``dice_per_method.png`` and ``dice_vs_diameter.png`` in ``out_dir`` (:data:`SUMMARY_SIZE_PX`)."""
    plt = _plt()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    w, h = SUMMARY_SIZE_PX
    written = {}

    fig, ax = plt.subplots(figsize=(w / _DPI, h / _DPI), dpi=_DPI)
    dices = [[c["metrics"]["dice"] for c in r.data["cases"]] for r in runs]
    ax.boxplot(dices, showfliers=False)
    rng = np.random.default_rng(0)  # fixed jitter: the same results give the same picture
    for i, d in enumerate(dices, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=12, alpha=0.6, color="#1f77b4", zorder=3)
    ax.set_xticks(range(1, len(runs) + 1))
    ax.set_xticklabels([r.label for r in runs], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("Dice per test case")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Dice per method (box: quartiles; points: cases)")
    fig.subplots_adjust(bottom=0.28, left=0.1, right=0.98, top=0.92)
    written["dice_per_method"] = out_dir / "dice_per_method.png"
    fig.savefig(written["dice_per_method"], dpi=_DPI)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(w / _DPI, h / _DPI), dpi=_DPI)
    for r in runs:
        pts = [(c["info"].get("diameter_mm"), c["metrics"]["dice"]) for c in r.data["cases"]
               if isinstance(c.get("info", {}).get("diameter_mm"), (int, float))]
        if pts:
            x, y = zip(*pts)
            ax.scatter(x, y, s=16, alpha=0.7, label=r.label)
    ax.set_xlabel("nodule diameter (mm)")
    ax.set_ylabel("Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Dice against nodule diameter")
    if runs:
        ax.legend(fontsize=8, loc="best")
    fig.subplots_adjust(bottom=0.12, left=0.1, right=0.98, top=0.92)
    written["dice_vs_diameter"] = out_dir / "dice_vs_diameter.png"
    fig.savefig(written["dice_vs_diameter"], dpi=_DPI)
    plt.close(fig)
    return written


def _fmt(v: Any, d: int = 3) -> str:
    return f"{v:.{d}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "–"


def make_report(results: Sequence[str | Path], out_dir: str | Path | None = None, fmt: str = "md",
                max_cases: int | None = None, progress=None) -> Path:
    """Write the report of one or more results files; returns the index file's path.

    ``out_dir`` defaults to ``<first run>/report``. ``max_cases`` caps the montages per run
    (the summary plots always use every case).
    """
    if fmt not in ("md", "html"):
        raise WsbenchError(f"--format {fmt!r}: use md or html")
    progress = ensure(progress)
    runs = load_runs(results)
    out = Path(out_dir) if out_dir else runs[0].folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    plots = summary_plots(runs, out)

    sections = []  # (run, [(case record, png path relative to out or None, note)])
    for run in runs:
        cases = run.data["cases"][: max_cases] if max_cases else run.data["cases"]
        entries = []
        with progress.task(f"montages {run.label}", total=len(cases)) as task:
            for i, c in enumerate(cases):
                npz = run.folder / "maps" / "test" / f"{c['case_id']}.npz"
                if not npz.is_file():
                    note = "failed: " + str(c.get("error")) if c.get("status") == "failed" else f"no maps ({npz.name})"
                    entries.append((c, None, note))
                else:
                    with np.load(npz) as z:
                        arrays = {k: z[k] for k in z.files}
                    # the index keeps names unique; the id's tail (e.g. "...781408:3") is its distinctive part
                    rel = Path("cases") / run.slug / f"{i:03d}-{sanitize_name(str(c['case_id'])[-48:])}.png"
                    title = (f"{run.label} · {c['case_id']}\nDice {_fmt(c['metrics']['dice'])} · "
                             f"MSD {_fmt(c['metrics']['msd_mm'], 2)} mm · ⌀ {_fmt(c['info'].get('diameter_mm'), 1)} mm")
                    montage(arrays, out / rel, title=title)
                    entries.append((c, rel, ""))
                task.advance(1)
        sections.append((run, entries))

    index = out / f"index.{fmt}"
    index.write_text(_render_md(runs, plots, sections) if fmt == "md" else _render_html(runs, plots, sections))
    return index


def _summary_rows(runs: Sequence[Run]) -> list[list[str]]:
    rows = []
    for r in runs:
        dice = [c["metrics"]["dice"] for c in r.data["cases"]]
        msd = [c["metrics"]["msd_mm"] for c in r.data["cases"]]
        rows.append([r.label, str(len(dice)), _fmt(float(np.mean(dice))) if dice else "–",
                     _fmt(float(np.median(dice))) if dice else "–", _fmt(float(np.median(msd)), 2) if msd else "–",
                     str(sum(c["status"] == "failed" for c in r.data["cases"]))])
    return rows


_SUMMARY_HEAD = ["method", "cases", "Dice mean", "Dice median", "MSD median (mm)", "failed"]


def _benchmarks(runs: Sequence[Run]) -> list[str]:
    """The benchmarks of the runs (more than one means the Dice plots mix protocols)."""
    return sorted({sanitize_name(r.data["benchmark"]["name"]) for r in runs})


def _md_text(s: Any) -> str:
    """A case id for markdown: characters outside ``[A-Za-z0-9._:+-]`` become ``_`` (no markup)."""
    return re.sub(r"[^A-Za-z0-9._:+-]", "_", str(s))[:200]


def _md_note(s: Any) -> str:
    """Free text from a results file (an error message) as plain markdown: no links, tags or emphasis."""
    return re.sub(r"[^A-Za-z0-9 .,:;=+-]", " ", str(s))[:300].strip()


def _render_md(runs, plots, sections) -> str:
    from tabulate import tabulate

    lines = ["# wsbench report", "",
             f"Benchmark {', '.join(f'`{b}`' for b in _benchmarks(runs))}; "
             f"{len(runs)} results file(s). Montages: axial, coronal, sagittal through the nodule centre; "
             "columns: CT, score map overlay, predicted (red) vs truth (green) contour.", "",
             tabulate(_summary_rows(runs), headers=_SUMMARY_HEAD, tablefmt="github", disable_numparse=True), "",
             f"![Dice per method]({plots['dice_per_method'].name})", "",
             f"![Dice against diameter]({plots['dice_vs_diameter'].name})", ""]
    for run, entries in sections:
        lines += [f"## {run.label}", ""]
        for c, rel, note in entries:
            head = (f"### {_md_text(c['case_id'])} — Dice {_fmt(c['metrics']['dice'])}, "
                    f"MSD {_fmt(c['metrics']['msd_mm'], 2)} mm, diameter {_fmt(c['info'].get('diameter_mm'), 1)} mm")
            lines += [head, ""]
            lines += [f"![{_md_text(c['case_id'])}]({rel.as_posix()})" if rel else
                      f"_{_md_note(note)}_", ""]
    return "\n".join(lines)


def _render_html(runs, plots, sections) -> str:
    e = html.escape
    rows = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in r) + "</tr>" for r in _summary_rows(runs))
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>wsbench report</title>",
             "<style>body{font-family:sans-serif;max-width:960px;margin:auto}td,th{padding:2px 8px}"
             "table{border-collapse:collapse}tr:nth-child(even){background:#f3f3f3}</style></head><body>",
             f"<h1>wsbench report</h1><p>Benchmark {', '.join(f'<code>{e(b)}</code>' for b in _benchmarks(runs))}; "
             f"{len(runs)} results file(s). Montages: axial, coronal, sagittal through the nodule centre; "
             "columns: CT, score map overlay, predicted (red) vs truth (green) contour.</p>",
             "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in _SUMMARY_HEAD) + f"</tr>{rows}</table>",
             f"<p><img src='{e(plots['dice_per_method'].name)}' alt='Dice per method'></p>",
             f"<p><img src='{e(plots['dice_vs_diameter'].name)}' alt='Dice against diameter'></p>"]
    for run, entries in sections:
        parts.append(f"<h2>{e(run.label)}</h2>")
        for c, rel, note in entries:
            parts.append(f"<h3>{e(str(c['case_id']))} — Dice {_fmt(c['metrics']['dice'])}, MSD "
                         f"{_fmt(c['metrics']['msd_mm'], 2)} mm, diameter {_fmt(c['info'].get('diameter_mm'), 1)} mm</h3>")
            parts.append(f"<p><img src='{e(rel.as_posix())}' width='900'></p>" if rel else f"<p><em>{e(note)}</em></p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
