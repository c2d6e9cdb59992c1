"""Sweep flow-guide's options on the VALIDATION split; print the validation-fitted mean Dice.

For each configuration the script segments every validation case with ``flow-guide`` (the
predictor and generator are trained once, or loaded from the runner's checkpoint cache), fits
the benchmark's binarisation rule on those maps and masks exactly as ``wsbench run`` does, and
reports that rule's mean Dice on the validation cases — the number the defaults are chosen by
(the test split is never touched). Row ``recon`` is the zero-guidance ablation at the default
t0/steps. Each configuration keeps its maps under
``<out>/<benchmark>/<predictor>--<generator>--seed<N>[-limitK]/<config>/``: rerunning resumes
(finished configurations are read back, interrupted ones continue case by case).

Usage::

    python benchmarks/flow_guide_sweep.py --quick                 # 7 configurations, 8 cases
    python benchmarks/flow_guide_sweep.py                         # 22 configurations, all cases
    python benchmarks/flow_guide_sweep.py --predictor radimgnet --device cuda
    python benchmarks/flow_guide_sweep.py --quick -o generator.steps=2000   # a longer-trained flow
    python benchmarks/flow_guide_sweep.py --config "t0=0.4,scale=0.2" --config "inversion=noise,n_seeds=8"

The per-case seed is ``derive_seed(seed, case_id)``, as in the runner, so a configuration
scores identically here and in ``wsbench run -o segmenter.key=value``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RECON = "recon"

#: (name, overrides of FlowGuideSegmenter's defaults); "recon" runs ReconstructionSegmenter with
#: flow-guide's default t0 / steps / inversion / seeds / smoothing.
PAPER = {"inversion": "ode", "reference": "input", "n_seeds": 1, "smoothing": 0.0, "scale": 0.1}
FULL_GRID: list[tuple[str, dict]] = [
    ("default", {}),
    (RECON, {}),
    ("paper-form (ode, ref=input, no smoothing)", PAPER),
    ("wolleb-like (paper-form, gradient=state, K=10, bce)", {**PAPER, "gradient": "state", "guided_steps": 10,
                                                             "loss": "bce"}),
    ("inversion=ode,n_seeds=1", {"inversion": "ode", "n_seeds": 1}),
    ("reference=input", {"reference": "input"}),
    ("n_seeds=1", {"n_seeds": 1}),
    ("n_seeds=8", {"n_seeds": 8}),
    ("smoothing=0", {"smoothing": 0.0}),
    ("smoothing=1", {"smoothing": 1.0}),
    ("smoothing=3", {"smoothing": 3.0}),
    ("t0=0.2", {"t0": 0.2}),
    ("t0=0.5", {"t0": 0.5}),
    ("scale=0.1", {"scale": 0.1}),
    ("scale=1.0", {"scale": 1.0}),
    ("K=1", {"guided_steps": 1}),
    ("K=5", {"guided_steps": 5}),
    ("recurrences=3", {"recurrences": 3}),
    ("steps=20,K=6", {"steps": 20, "guided_steps": 6}),
    ("gradient=clean", {"gradient": "clean"}),
    ("gradient=state", {"gradient": "state"}),
    ("bce,unnormalised", {"loss": "bce", "normalize": False, "scale": 1.0}),
]
QUICK_GRID = [g for g in FULL_GRID if g[0] in (
    "default", RECON, "paper-form (ode, ref=input, no smoothing)", "reference=input", "n_seeds=1", "smoothing=0",
    "scale=0.1")]


def parse_config(text: str) -> tuple[str, dict]:
    """``"t0=0.4,scale=0.2"`` → ``("t0=0.4,scale=0.2", {"t0": "0.4", "scale": "0.2"})``."""
    from wsbench.options import parse_assignments

    return text, parse_assignments(text)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "=.-_," else "_" for c in name).replace(",", "__")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", default="luna16-synth")
    ap.add_argument("--predictor", default="cnn3d")
    ap.add_argument("--generator", default="rflow")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--limit", type=int, default=None, help="validation cases used (default: all)")
    ap.add_argument("--quick", action="store_true", help="7 configurations and --limit 8 unless given")
    ap.add_argument("--config", action="append", default=[], metavar="K=V,...",
                    help="extra configuration (repeatable); with --only, the only ones run")
    ap.add_argument("--only", action="store_true", help="run only the --config configurations")
    ap.add_argument("-o", "--option", action="append", default=[], metavar="ROLE.KEY=VALUE",
                    help="predictor / generator option, as in `wsbench run` (e.g. -o generator.steps=2000); "
                         "part of the output folder's name")
    ap.add_argument("--out", default=str(ROOT / "results" / "sweep-flow-guide"))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.quick and args.limit is None:
        args.limit = 8

    import torch

    from wsbench import binarize
    from wsbench.progress import Progress
    from wsbench.runner import RunConfig, build_session, prepare, train_or_load
    from wsbench.seeding import derive_seed, seed_everything
    from wsbench.segmenters import FlowGuideSegmenter, ReconstructionSegmenter

    from wsbench.cli import parse_kv_options

    plugin_opts = parse_kv_options(tuple(args.option))
    if "segmenter" in plugin_opts:
        raise SystemExit("-o segmenter.*: give flow-guide settings with --config K=V,... instead")
    grid = [] if args.only else list(QUICK_GRID if args.quick else FULL_GRID)
    grid += [parse_config(c) for c in args.config]
    if not grid:
        raise SystemExit("nothing to run: --only needs at least one --config")
    defaults = FlowGuideSegmenter().options_dict()
    # validate every configuration before any work (bad option → one-line error)
    segs = []
    for name, over in grid:
        if name == RECON:
            segs.append(ReconstructionSegmenter({k: defaults[k] for k in ("t0", "steps", "inversion", "n_seeds",
                                                                           "smoothing")}))
        else:
            segs.append(FlowGuideSegmenter(over))

    cfg = RunConfig(segmenter="flow-guide", predictor=args.predictor, generator=args.generator,
                    benchmark=args.benchmark, seed=args.seed, device=args.device, limit=args.limit,
                    options=plugin_opts, progress=not args.no_progress)
    s = build_session(cfg)
    okey = ("--o" + hashlib.sha256(json.dumps(plugin_opts, sort_keys=True).encode()).hexdigest()[:6]) if plugin_opts else ""
    root = Path(args.out) / s.benchmark.name / (
        f"{args.predictor}--{args.generator}--seed{args.seed}" + (f"-limit{args.limit}" if args.limit else "") + okey)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    with Progress(enabled=not args.no_progress) as progress:
        prepare(s, progress)
        train_or_load(s, "predictor", progress)
        train_or_load(s, "generator", progress)
        geometry = s.benchmark.geometry
        cases = []
        for c in s.dataset.cases("validation", geometry):
            if args.limit is not None and len(cases) >= args.limit:
                break
            cases.append(c)
        if not cases:
            raise SystemExit("the validation split has no cases")
        for (name, over), seg in zip(grid, segs):
            seg.to(s.device)
            opts = seg.options_dict()
            # the folder is keyed by the full options, so cached maps never outlive a change of
            # defaults or of the configuration behind a name
            key = hashlib.sha256(json.dumps([seg.name, opts], sort_keys=True).encode()).hexdigest()[:8]
            d = root / f"{_slug(name)}-{key}"
            (d / "maps").mkdir(parents=True, exist_ok=True)
            summary_path = d / "summary.json"
            if summary_path.exists():
                old = json.loads(summary_path.read_text())
                if old.get("options") == opts and old.get("segmenter") == seg.name and old.get("n_cases") == len(cases):
                    rows.append(old)
                    continue
            maps, masks, secs = [], [], []
            with progress.task(f"sweep {name}", total=len(cases)) as task:
                for case in cases:
                    p = d / "maps" / f"{case.case_id}.npz"
                    if p.exists():
                        z = np.load(p)
                        score, sec = z["score"], float(z["seconds"])
                    else:
                        t = time.perf_counter()
                        seed_everything(derive_seed(args.seed, case.case_id))
                        x = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))[None, None].to(s.device)
                        score = seg.segment(x, s.predictor, s.generator)[0].detach().float().cpu().numpy()
                        sec = time.perf_counter() - t
                        np.savez_compressed(p, score=score, seconds=sec)
                    maps.append(score)
                    masks.append(case.mask.astype(bool))
                    secs.append(sec)
                    task.advance(1)
            b = binarize.fit_binarizer(s.benchmark.binarization_rule, s.benchmark.binarization_options, maps, masks)
            row = {"config": name, "segmenter": seg.name, "options": opts, "n_cases": len(cases),
                   "val_mean_dice": b.validation_mean_dice, "binarization": b.to_dict(),
                   "s_per_patch": float(np.mean(secs))}
            summary_path.write_text(json.dumps(row, indent=1))
            rows.append(row)

    from tabulate import tabulate

    ranked = sorted(rows, key=lambda r: -(r["val_mean_dice"] or 0.0))
    text = tabulate([[r["config"], f"{r['val_mean_dice']:.3f}",
                      ", ".join(f"{k}={v}" for k, v in r["binarization"]["params"].items()), f"{r['s_per_patch']:.2f}"]
                     for r in ranked],
                    headers=["configuration", "val mean Dice", "fitted rule", "s/patch"], tablefmt="github")
    head = (f"flow-guide sweep — {s.benchmark.name} validation, {len(cases)} cases, predictor {args.predictor}, "
            f"generator {args.generator}, seed {args.seed}, device {s.device}"
            + (f", options {json.dumps(plugin_opts, sort_keys=True)}" if plugin_opts else "") + "\n"
            f"defaults: {json.dumps(defaults)}")
    print(head)
    print(text)
    (root / "sweep.md").write_text(head + "\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    from wsbench.errors import exit_with_one_line

    exit_with_one_line(main)
