"""Every segmenter × predictor on a benchmark's test split, through the runner.

Prints, per (segmenter, predictor): test cases, Dice mean / median, median mean surface
distance (ASSD, mm), median HD95 (mm), seconds per patch and failed cases. Each run lives in its
own output directory (``<out>/<benchmark>/<segmenter>--<predictor>--<generator>--seed<N>[-limitK]``),
so rerunning the script resumes: finished runs are read back, interrupted ones continue where
they stopped (the runner's per-case journal), and trained predictors / generators come from the
checkpoint cache.

Usage::

    python benchmarks/segmenters.py                      # all segmenters x cnn3d, radimgnet, medsam
    python benchmarks/segmenters.py --quick              # 8 validation + 8 test cases per run
    python benchmarks/segmenters.py --segmenters gradcam,flow-guide --predictors cnn3d --device cuda
    python benchmarks/segmenters.py --cam-speed          # own CAM code vs captum vs MONAI, timing only

The shipped leaderboard rows come from one command (every built-in segmenter plus the
first-party ``blob-dot`` plugin, × cnn3d and radimgnet, full test split; each complete run is
validated, submitted to ``leaderboard/submissions/`` and the page rebuilt)::

    python benchmarks/segmenters.py --predictors cnn3d,radimgnet --with-plugins --submit

``--cam-speed`` times Grad-CAM and Grad-CAM++ on a batch of 3-D patches with a small 3-D CNN:
our torch-native implementation (:mod:`wsbench.segmenters.cam`), captum's ``LayerGradCam`` +
trilinear ``LayerAttribution.interpolate``, and MONAI's ``GradCAM`` / ``GradCAMpp``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_PREDICTORS = ("cnn3d", "radimgnet", "medsam")


def _median(xs):
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(np.median(xs)) if xs else float("nan")


def summarize(results: dict) -> dict:
    """Table row from a results dict (per-case records; failed cases carry worst-case metrics)."""
    cases = results.get("cases", [])
    dice = [c["metrics"]["dice"] for c in cases]
    return {
        "n": len(cases),
        "dice_mean": float(np.mean(dice)) if dice else float("nan"),
        "dice_median": _median(dice),
        "msd_median_mm": _median([c["metrics"].get("msd_mm") for c in cases]),
        "hd95_median_mm": _median([c["metrics"].get("hd95_mm") for c in cases]),
        "s_per_patch": float(np.mean([c["seconds"] for c in cases])) if cases else float("nan"),
        "failed": sum(1 for c in cases if c.get("status") == "failed"),
        "val_dice": (results.get("binarization") or {}).get("validation_mean_dice"),
        "complete": bool(results.get("complete")),
    }


def parse_plugin_options(pairs: list[str]) -> dict[str, dict[str, str]]:
    """``["medsam.input_size=64"]`` → ``{"medsam": {"input_size": "64"}}`` (values are coerced,
    and unknown keys rejected, by the plugin's typed options when the run starts)."""
    from wsbench.errors import WsbenchError

    out: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name, dot, opt = key.partition(".")
        if not (sep and dot and name and opt):
            raise WsbenchError(f"bad -o '{pair}': expected PLUGIN.KEY=VALUE, e.g. -o medsam.input_size=64")
        out.setdefault(name, {})[opt] = value
    return out


def run_matrix(args) -> list[dict]:
    from wsbench import plugins
    from wsbench.runner import RunConfig, run

    reg = plugins.get_registry()
    segs = args.segmenters.split(",") if args.segmenters else [
        n for n in reg.names("segmenter")
        if reg.get("segmenter", n).distribution == "wsbench" or getattr(args, "with_plugins", False)]
    preds = args.predictors.split(",")
    rows = []
    for seg in segs:
        info = reg.get("segmenter", seg)
        for pred in (preds if info.cls.needs_predictor else [None]):
            gen = args.generator if info.cls.needs_generator else None
            popts, plabel = dict(args.plugin_options.get(pred, {})) if pred else {}, pred or "-"
            if seg == "cam" and pred:
                # CAM proper needs a GAP->linear head: use the predictor's exact-CAM variant
                # when it has one (a differently trained classifier, labelled so), else skip
                from wsbench.segmenters.cam import gap_head_option

                pcls = reg.get("predictor", pred).cls
                if not gap_head_option(pcls):
                    rows.append({"segmenter": seg, "predictor": pred, "generator": "-",
                                 "error": "n/a: predictor has no GAP-linear head (CAM undefined)"})
                    continue
                popts, plabel = {**popts, "head": "gap"}, f"{pred}[head=gap]"
            # key the run folder by the segmenter's resolved options too, so a change of its
            # defaults starts a fresh run instead of resuming stale cases
            overrides = {role: o for role, o in (("segmenter", args.plugin_options.get(seg, {})),
                                                 ("predictor", popts if pred else {}),
                                                 ("generator", args.plugin_options.get(gen, {}) if gen else {})) if o}
            ident = info.cls().options_dict()
            if any(args.plugin_options.get(n) for n in (seg, pred, gen) if n):  # else keep older folders' names
                ident = {"segmenter-defaults": ident, "overrides": overrides}
            okey = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:6]
            tag = (f"{seg}--{plabel}--{gen or 'none'}--seed{args.seed}" + (f"-limit{args.limit}" if args.limit else "")
                   + f"--o{okey}")
            out = Path(args.out) / args.benchmark / tag.replace("+", "p").replace("[", "_").replace("]", "")
            row = {"segmenter": seg, "predictor": plabel, "generator": gen or "-", "out": str(out)}
            t = time.perf_counter()
            try:
                cfg = RunConfig(segmenter=seg, predictor=pred, generator=gen, benchmark=args.benchmark,
                                seed=args.seed, device=args.device, limit=args.limit, out_dir=str(out),
                                options=overrides, progress=not args.no_progress)
                res = run(cfg)
                row.update(summarize(res))
            except KeyboardInterrupt:
                raise
            except Exception as e:  # one broken combination must not stop the table
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
                if args.traceback:
                    traceback.print_exc()
            row["wall_s"] = time.perf_counter() - t
            rows.append(row)
            print(f"[{len(rows)}] {seg} x {pred or '-'}: "
                  + (row.get("error") or f"Dice {row['dice_mean']:.3f} (n={row['n']})"), file=sys.stderr, flush=True)
    return rows


def print_table(rows: list[dict], file=sys.stdout) -> str:
    from tabulate import tabulate

    table = []
    for r in rows:
        if "error" in r:
            table.append([r["segmenter"], r["predictor"], "-", "-", "-", "-", "-", "-", "-", r["error"]])
            continue
        vd = r.get("val_dice")
        table.append([r["segmenter"], r["predictor"], r["n"], f"{r['dice_mean']:.3f}", f"{r['dice_median']:.3f}",
                      f"{r['msd_median_mm']:.2f}", f"{r['hd95_median_mm']:.2f}", f"{r['s_per_patch']:.3f}",
                      r["failed"], f"val Dice {vd:.3f}" if vd is not None else ""])
    text = tabulate(table, headers=["segmenter", "predictor", "n", "Dice mean", "Dice median", "MSD med mm",
                                    "HD95 med mm", "s/patch", "failed", "note"], tablefmt="github")
    print(text, file=file)
    return text


# ------------------------------------------------------------------------------ CAM speed ---
def cam_speed(args) -> None:
    import torch
    from torch import nn

    from wsbench.interfaces import Predictor
    from wsbench.segmenters import GradCAMPlusPlusSegmenter, GradCAMSegmenter

    torch.manual_seed(0)
    dev = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            c = [1, 16, 32, 64, 64]
            layers = []
            for i in range(4):
                layers += [nn.Conv3d(c[i], c[i + 1], 3, padding=1, stride=1 if i == 0 else 2), nn.ReLU()]
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(64, 1)

        def forward(self, x):
            return self.head(self.features(x).mean((2, 3, 4)))

    net = Net().to(dev).eval()

    class P(Predictor):
        name = "speed"

        def __init__(self):
            super().__init__()
            self.model = net

        def logits(self, x):
            return self.model(x)[:, 0]

        def target_layer(self):
            return self.model.features

        fit = save = load = lambda *a, **k: None

    pred = P()
    x = torch.randn(args.batch, 1, 32, 32, 32, device=dev)

    def timeit(fn, n=args.repeats):
        try:
            fn()
        except Exception as e:  # report implementations that break on 5-D batches
            return f"fails: {type(e).__name__}: {str(e).splitlines()[0][:90]}"
        ts = []
        for _ in range(n):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    from captum.attr import LayerAttribution, LayerGradCam
    from monai.visualize import GradCAM as MGradCAM, GradCAMpp as MGradCAMpp

    lgc = LayerGradCam(pred.logits, net.features)
    mg = MGradCAM(nn_module=net, target_layers="features")
    mgpp = MGradCAMpp(nn_module=net, target_layers="features")
    rows = [
        ["Grad-CAM", "wsbench (torch)", timeit(lambda: GradCAMSegmenter().segment(x, pred))],
        ["Grad-CAM", "captum LayerGradCam + interpolate", timeit(lambda: LayerAttribution.interpolate(
            lgc.attribute(x, relu_attributions=True), (32, 32, 32), interpolate_mode="trilinear"))],
        ["Grad-CAM", "MONAI GradCAM", timeit(lambda: mg(x, class_idx=0))],
        ["Grad-CAM++", "wsbench (torch)", timeit(lambda: GradCAMPlusPlusSegmenter().segment(x, pred))],
        ["Grad-CAM++", "MONAI GradCAMpp", timeit(lambda: mgpp(x, class_idx=0))],
    ]
    from tabulate import tabulate

    print(f"device {dev}, batch {args.batch} x 1 x 32^3, 4-layer 3-D CNN, median of {args.repeats} runs, "
          f"torch threads {torch.get_num_threads()}")
    print(tabulate([[a, b, t if isinstance(t, str) else f"{t * 1000:.1f}"] for a, b, t in rows], headers=["method", "implementation", "ms/batch"],
                   tablefmt="github"))


def submit(rows: list[dict], args) -> None:
    """Validate + submit every complete full-split run, then rebuild the leaderboard page."""
    import subprocess

    if args.limit:
        print("--submit ignored: runs with --limit are not leaderboard submissions", file=sys.stderr)
        return
    for r in rows:
        if "error" in r or not r.get("complete"):
            continue
        res = subprocess.run([sys.executable, "-m", "wsbench", "leaderboard", "submit", "--force", str(Path(r["out"]) / "results.json")],
                             capture_output=True, text=True)
        print((res.stdout + res.stderr).strip(), file=sys.stderr)
    subprocess.run([sys.executable, "-m", "wsbench", "leaderboard", "build"], check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", default="luna16-synth")
    ap.add_argument("--segmenters", default="", help="comma-separated (default: every built-in segmenter)")
    ap.add_argument("--predictors", default=",".join(DEFAULT_PREDICTORS), help="comma-separated")
    ap.add_argument("--generator", default="rflow", help="generator of flow-guide / recon")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--limit", type=int, default=None, help="cases per split (validation and test)")
    ap.add_argument("--quick", action="store_true", help="--limit 8 unless --limit is given")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench-segmenters"))
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--traceback", action="store_true", help="print tracebacks of failed runs")
    ap.add_argument("--with-plugins", action="store_true",
                    help="also run the installed third-party segmenters (e.g. blob-dot from plugins/)")
    ap.add_argument("--submit", action="store_true",
                    help="submit each complete run (no --limit) to the leaderboard and rebuild it")
    ap.add_argument("-o", "--option", action="append", default=[], metavar="PLUGIN.KEY=VALUE",
                    help="an option of one plugin wherever it runs, e.g. -o medsam.input_size=64 "
                         "-o rflow.steps=2000 -o flow-guide.t0=0.4 (repeatable; part of each run folder's name)")
    ap.add_argument("--cam-speed", action="store_true", help="only time CAM implementations")
    ap.add_argument("--batch", type=int, default=8, help="--cam-speed batch size")
    ap.add_argument("--repeats", type=int, default=20, help="--cam-speed repeats")
    args = ap.parse_args(argv)
    if args.cam_speed:
        cam_speed(args)
        return 0
    args.plugin_options = parse_plugin_options(args.option)
    if args.quick and args.limit is None:
        args.limit = 8
    rows = run_matrix(args)
    text = print_table(rows)
    out = Path(args.out) / args.benchmark
    out.mkdir(parents=True, exist_ok=True)
    tag = f"summary-seed{args.seed}" + (f"-limit{args.limit}" if args.limit else "")
    if args.plugin_options:  # a differently-configured table must not overwrite the default one
        tag += "--o" + hashlib.sha256(json.dumps(args.plugin_options, sort_keys=True).encode()).hexdigest()[:6]
    (out / f"{tag}.json").write_text(json.dumps(rows, indent=1, default=float))
    (out / f"{tag}.md").write_text(text + "\n")
    if args.submit:
        submit(rows, args)
    return 0 if all(r.get("error", "n/a").startswith("n/a") for r in rows) else 1


if __name__ == "__main__":
    from wsbench.errors import exit_with_one_line

    exit_with_one_line(main)
