"""Why flow-guide scores what it scores: a validation-split diagnosis next to baselines.

The issue's question — when flow-guide trails the best CAM method, is it the generator, the
guidance or the binarisation? — answered with numbers on the VALIDATION cases only (the test
split is never touched). For flow-guide (the segmenter's defaults, or ``--config``) and a
few baseline segmenters (``--baselines``, default ``gradcam,saliency``: the best CAM method and
the raw input gradient flow-guide's guidance starts from) with the same predictor, per case and
then averaged:

* **localisation, threshold-free** — ``top-k precision``: the fraction of the ``k = |truth|``
  highest-scoring voxels that lie inside the truth mask; ``mass inside``: the share of the
  map's total score inside the mask;
* **binarisation** — ``fitted Dice``: the benchmark's rule fitted on these cases (what
  ``wsbench run`` would use); ``oracle Dice``: the same rule fitted on each case alone (its best threshold: an upper
  bound no method may use; a large gap to ``fitted`` means the shared threshold, not the map,
  loses Dice);
* **guidance** (flow-guide only) — the predictor's mean logit on the input, on the unguided
  and on the guided result (does the guided counterfactual actually read "no nodule"?), and
  ``heal ratio``: mean |guided − input| inside the mask over outside (> 1 = the change is on
  the nodule);
* **generator** — re-noised reconstruction error at flow-guide's ``t0`` on these patches, as a
  fraction of their intensity variance (:func:`wsbench.generators.quality.reconstruction_errors`).

Usage::

    python benchmarks/flow_guide_diagnosis.py                           # cnn3d, rflow (default options)
    python benchmarks/flow_guide_diagnosis.py -o generator.steps=2000   # a longer-trained flow
    python benchmarks/flow_guide_diagnosis.py --predictor radimgnet --config t0=0.5,scale=1 --device cuda

Predictor and generator come from the runner's checkpoint cache (trained first if absent).
Prints a table and writes ``<out>/<benchmark>/<predictor>--<generator>…/diagnosis.json``.
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


def topk_precision(score: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the ``mask.sum()`` highest-scoring voxels inside ``mask`` (ties: stable order)."""
    k = int(mask.sum())
    if k == 0:
        return float("nan")
    idx = np.argsort(-score.ravel(), kind="stable")[:k]
    return float(mask.ravel()[idx].mean())


def mass_inside(score: np.ndarray, mask: np.ndarray) -> float:
    """Share of the (non-negative) map's total inside ``mask``; nan for an all-zero map."""
    s = np.clip(score, 0, None)
    tot = float(s.sum())
    return float(s[mask].sum()) / tot if tot > 0 else float("nan")


def oracle_dice(rule: str, options: dict, score: np.ndarray, mask: np.ndarray) -> float:
    """Dice of the benchmark's binarisation rule fitted on this one case alone — the case's best
    threshold with the rule's own normalisation and component selection: an upper bound for any
    threshold shared across cases."""
    from wsbench import binarize

    return float(binarize.fit_binarizer(rule, options, [score], [mask]).validation_mean_dice)


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (
        f"{v:.3f}" if isinstance(v, float) else str(v))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", default="luna16-synth")
    ap.add_argument("--predictor", default="cnn3d")
    ap.add_argument("--generator", default="rflow")
    ap.add_argument("--baselines", default="gradcam,saliency",
                    help="comma-separated segmenters to compare with (predictor-only methods)")
    ap.add_argument("--config", default="", metavar="K=V,...", help="flow-guide options (default: its defaults)")
    ap.add_argument("-o", "--option", action="append", default=[], metavar="ROLE.KEY=VALUE",
                    help="predictor / generator option, as in `wsbench run` (e.g. -o generator.steps=2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--limit", type=int, default=None, help="validation cases used (default: all)")
    ap.add_argument("--out", default=str(ROOT / "results" / "diagnosis-flow-guide"))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from wsbench import binarize, plugins
    from wsbench.cli import parse_kv_options
    from wsbench.errors import WsbenchError
    from wsbench.generators.quality import reconstruction_errors
    from wsbench.options import parse_assignments
    from wsbench.progress import Progress
    from wsbench.runner import RunConfig, build_session, prepare, train_or_load
    from wsbench.seeding import derive_seed, seed_everything
    from wsbench.segmenters.flow_guide import FlowGuideSegmenter, counterfactuals, difference_maps

    plugin_opts = parse_kv_options(tuple(args.option))
    if "segmenter" in plugin_opts:
        raise WsbenchError("-o segmenter.*: give flow-guide settings with --config K=V,...")
    fg = FlowGuideSegmenter(parse_assignments(args.config))
    bases = {}
    for name in [n.strip() for n in args.baselines.split(",") if n.strip()]:
        cls = plugins.get_registry().get("segmenter", name).cls
        if cls.needs_generator:
            raise WsbenchError(f"--baselines: {name} needs a generator; pick predictor-only methods (e.g. gradcam)")
        bases[name] = cls()
    methods = ["flow-guide", *bases]

    cfg = RunConfig(segmenter="flow-guide", predictor=args.predictor, generator=args.generator,
                    benchmark=args.benchmark, seed=args.seed, device=args.device, limit=args.limit,
                    options=plugin_opts, progress=not args.no_progress)
    s = build_session(cfg)
    o = fg.options
    results: dict = {"benchmark": s.benchmark.name, "predictor": args.predictor, "generator": args.generator,
                     "plugin_options": plugin_opts, "flow_guide_options": fg.options_dict(),
                     "baselines": list(bases), "seed": args.seed, "device": str(s.device), "cases": []}
    with Progress(enabled=not args.no_progress) as progress:
        prepare(s, progress)
        train_or_load(s, "predictor", progress)
        train_or_load(s, "generator", progress)
        fg.to(s.device)
        for b in bases.values():
            b.to(s.device)
        cases = []
        for c in s.dataset.cases("validation", s.benchmark.geometry):
            if args.limit is not None and len(cases) >= args.limit:
                break
            cases.append(c)
        if not cases:
            raise WsbenchError("the validation split has no cases")
        maps = {m: [] for m in methods}
        masks = []
        with progress.task("diagnosis", total=len(cases)) as task:
            for case in cases:
                x = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))[None, None].to(s.device)
                m = case.mask.astype(bool)
                masks.append(m)
                seed_everything(derive_seed(args.seed, case.case_id))  # as the runner: same maps as `wsbench run`
                t = time.perf_counter()
                guided, ref = counterfactuals(
                    x, s.generator, s.predictor, t0=o.t0, steps=o.steps, guided_steps=o.guided_steps, scale=o.scale,
                    recurrences=o.recurrences, loss=o.loss, gradient=o.gradient, normalize=o.normalize,
                    inversion=o.inversion, reference=o.reference, n_seeds=o.n_seeds)
                fmap = difference_maps(guided, ref, 1, o.smoothing)[0].float().cpu().numpy()
                fg_s = time.perf_counter() - t
                case_maps = {"flow-guide": fmap}
                for name, b in bases.items():
                    seed_everything(derive_seed(args.seed, case.case_id))
                    case_maps[name] = b.segment(x, s.predictor)[0].detach().float().cpu().numpy()
                with torch.no_grad():
                    lg = lambda v: float(s.predictor.logits(v).float().mean())  # noqa: E731
                    change = np.abs(guided.float().cpu().numpy()[:, 0] - case.image[None])  # (seeds, D, H, W)
                    unguided_logit = lg(ref) if o.reference == "unguided" else None
                    rec = {"case_id": case.case_id, "diameter_mm": case.info.get("diameter_mm"),
                           "logit_input": lg(x), "logit_unguided": unguided_logit, "logit_guided": lg(guided),
                           "heal_ratio": float(change[:, m].mean() / max(change[:, ~m].mean(), 1e-12)),
                           "flow_guide_seconds": fg_s}
                for name, mp in case_maps.items():
                    maps[name].append(mp)
                    rec[name] = {"topk_precision": topk_precision(mp, m), "mass_inside": mass_inside(mp, m),
                                 "oracle_dice": oracle_dice(s.benchmark.binarization_rule,
                                                            s.benchmark.binarization_options, mp, m)}
                results["cases"].append(rec)
                task.advance(1)
        t0_err = reconstruction_errors(s.generator, np.stack([c.image for c in cases]), t0=o.t0, steps=o.steps,
                                       seed=args.seed)
    rows, summary = [], {}
    for name in methods:
        b = binarize.fit_binarizer(s.benchmark.binarization_rule, s.benchmark.binarization_options, maps[name], masks)
        per = [c[name] for c in results["cases"]]
        summary[name] = {k: float(np.nanmean([p[k] for p in per])) for k in ("topk_precision", "mass_inside",
                                                                              "oracle_dice")}
        summary[name]["fitted_dice"] = b.validation_mean_dice
        rows.append([name, summary[name]["fitted_dice"], summary[name]["oracle_dice"],
                     summary[name]["topk_precision"], summary[name]["mass_inside"]])
    cs = results["cases"]
    mean = lambda k: float(np.mean([c[k] for c in cs])) if all(c[k] is not None for c in cs) else None  # noqa: E731
    summary["guidance"] = {k: mean(k) for k in ("logit_input", "logit_unguided", "logit_guided", "heal_ratio")}
    summary["generator"] = {"t0": o.t0, "renoise_rel_mse": t0_err["renoise_rel_mse"],
                            "roundtrip_rel_mse": t0_err["roundtrip_rel_mse"]}
    results["summary"] = summary

    from tabulate import tabulate

    head = (f"flow-guide diagnosis — {s.benchmark.name} validation, {len(cases)} cases, predictor {args.predictor}, "
            f"generator {args.generator} {json.dumps(plugin_opts, sort_keys=True) if plugin_opts else ''}, "
            f"device {s.device}")
    t1 = tabulate([[r[0]] + [_fmt(v) for v in r[1:]] for r in rows],
                  headers=["method", "fitted Dice", "oracle Dice", "top-k precision", "mass inside"], tablefmt="github")
    g, q = summary["guidance"], summary["generator"]
    t2 = tabulate([[_fmt(g["logit_input"]), _fmt(g["logit_unguided"]), _fmt(g["logit_guided"]), _fmt(g["heal_ratio"]),
                    _fmt(q["renoise_rel_mse"])]],
                  headers=["logit input", "logit unguided", "logit guided", "heal ratio",
                           f"re-noise error @t0={q['t0']}"], tablefmt="github")
    text = f"{head}\n\n{t1}\n\n{t2}"
    print(text)
    key = hashlib.sha256(json.dumps([plugin_opts, fg.options_dict(), list(bases), args.limit],
                                    sort_keys=True).encode()).hexdigest()[:8]
    out = Path(args.out) / s.benchmark.name / f"{args.predictor}--{args.generator}--seed{args.seed}--{key}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnosis.json").write_text(json.dumps(results, indent=1))
    (out / "diagnosis.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    from wsbench.errors import exit_with_one_line

    exit_with_one_line(main)
