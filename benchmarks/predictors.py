"""Predictor figures on a benchmark (default: the synthetic ``luna16-synth``): validation and
test ROC AUC, CPU training time, inference milliseconds per patch.

Each predictor is trained exactly as ``wsbench run`` trains it (``fit(train, validation)`` on
the dataset's training view, seeded the same way), then scored on

* the **validation** training-view patches (``ds.training_patches("validation")``, the patches
  early stopping selected on), and
* **test** patches drawn from the test-split scans with the training view's own sampling rule
  (positives around each nodule at random offsets, nodule-free negatives). The dataset API has
  no image-level test view (its test split holds evaluation cases, all positive), so this script
  builds one through the LUNA16 reader's patch sampler; a test AUC is therefore only reported
  for datasets built on :class:`wsbench.builtins.datasets.Luna16Dataset`.

Inference time: median over repeats of ``logits`` on a batch (``--infer-batch``) under
``torch.no_grad`` ("ms/patch"), and of logits + gradient w.r.t. the input ("ms/patch grad",
what guidance and gradient attributions pay).

Examples::

    # everything with each predictor's default options (slow on a CPU: see the module docs)
    python benchmarks/predictors.py --threads 1
    # the configuration measured for the project note (CPU, ~40 min on 2 busy cores)
    python benchmarks/predictors.py --threads 1 --predictors cnn3d,cnn3d-gap \\
        -o cnn3d.epochs=8 -o cnn3d-gap.epochs=8 --json results/predictors-a.json
    # GAP vs GAP+GMP heads of cnn3d (FACTS.md: GAP alone stalls on small nodules)
    python benchmarks/predictors.py --heads
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsbench import plugins  # noqa: E402
from wsbench.benchmark import load_benchmark  # noqa: E402
from wsbench.data.intensity import hu_to_norm  # noqa: E402
from wsbench.data.types import PatchSet  # noqa: E402
from wsbench.predictors.training import predict_logits, roc_auc  # noqa: E402
from wsbench.progress import Progress  # noqa: E402
from wsbench.seeding import derive_seed, seed_everything  # noqa: E402

#: Named configurations: label → (predictor name, fixed options).
CONFIGS = {
    "cnn3d": ("cnn3d", {}),
    "cnn3d-gap": ("cnn3d", {"head": "gap"}),
    "radimgnet": ("radimgnet", {}),
    "medsam": ("medsam", {}),
}


def test_patchset(ds, geometry) -> PatchSet | None:
    """Image-level patches of the test-split scans, sampled like the training view.

    Uses the LUNA16 reader's sampler (private API of ``Luna16Dataset``); returns None for other
    datasets."""
    needed = ("index", "assign_splits", "_patches_of_scan", "_excluded_findings")
    if not all(hasattr(ds, n) for n in needed):
        return None
    from wsbench.data.luna16 import inside_volume, read_scan

    idx = ds.index()
    split_of = ds.assign_splits()
    excluded = ds._excluded_findings()
    patches, skipped = [], []
    for uid in idx.series_uids():
        if split_of.get(uid) != "test":
            continue
        image, _ = read_scan(idx.scans[uid])
        rows = [a for a in idx.annotations[uid] if inside_volume(image, a.xyz)]
        patches += ds._patches_of_scan(uid, image, rows, excluded.get(uid, []), geometry, skipped)
    if not patches:
        return None
    images = hu_to_norm(np.stack([p["hu16"] for p in patches]).astype(np.float32))
    return PatchSet(images, np.array([p["label"] for p in patches], np.int64), [p["id"] for p in patches],
                    [p["group"] for p in patches])


def _as_tensor(ps: PatchSet) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(ps.images, dtype=np.float32)).unsqueeze(1)


def time_inference(pred, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median ms per patch: logits without gradients, and logits + input gradient."""
    pred.eval()
    plain, grad = [], []
    with torch.no_grad():
        pred.logits(x)  # warm-up
    for _ in range(repeats):
        t = time.perf_counter()
        with torch.no_grad():
            pred.logits(x)
        plain.append(time.perf_counter() - t)
        xi = x.clone().requires_grad_(True)
        t = time.perf_counter()
        torch.autograd.grad(pred.logits(xi).sum(), xi)
        grad.append(time.perf_counter() - t)
    n = x.shape[0]
    return 1000 * statistics.median(plain) / n, 1000 * statistics.median(grad) / n


def run_one(label: str, name: str, options: dict, data: dict, args, progress) -> dict:
    cls = plugins.get("predictor", name).cls
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pred = cls(options, device="cpu", seed=args.seed)
    for w in caught:
        progress.log(f"[yellow]warning[/]: {w.message}")
    seed_everything(derive_seed(args.seed, "fit", "predictor", name))  # as the runner does
    t = time.perf_counter()
    summary = pred.fit(data["train"], data["validation"], progress)
    train_s = time.perf_counter() - t
    pred.eval()
    ebs = getattr(pred.options, "eval_batch_size", 32)
    val_auc = roc_auc(predict_logits(pred.logits, _as_tensor(data["validation"]), ebs, pred.device),
                      data["validation"].labels)
    test_auc = None
    if data["test"] is not None:
        test_auc = roc_auc(predict_logits(pred.logits, _as_tensor(data["test"]), ebs, pred.device), data["test"].labels)
    xb = _as_tensor(data["validation"])[: args.infer_batch]
    ms, ms_grad = time_inference(pred, xb, args.repeats)
    return {"config": label, "predictor": name, "options": pred.options_dict(), "init": pred.provenance().get("init"),
            "val_auc": val_auc, "test_auc": test_auc, "train_s": round(train_s, 1),
            "epochs": summary.get("epochs"), "best_epoch": summary.get("best_epoch"), "steps": summary.get("steps"),
            "ms_per_patch": round(ms, 2), "ms_per_patch_grad": round(ms_grad, 2),
            "n_train": summary.get("n_train"), "feature_cache": summary.get("feature_cache"),
            "val_auc_by_epoch": [h.get("val_auc") for h in summary.get("history", [])]}


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, _, value = item.partition("=")
        label, _, opt = key.partition(".")
        if not opt or not _:
            raise SystemExit(f"bad -o {item!r}: use CONFIG.OPTION=VALUE, e.g. medsam.max_train=300")
        out.setdefault(label, {})[opt] = value
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", default="luna16-synth")
    ap.add_argument("--predictors", default="cnn3d,radimgnet,medsam",
                    help=f"comma-separated configurations: {', '.join(CONFIGS)}")
    ap.add_argument("--heads", action="store_true", help="shortcut for --predictors cnn3d,cnn3d-gap")
    ap.add_argument("-o", dest="overrides", action="append", default=[],
                    help="CONFIG.OPTION=VALUE predictor option for one configuration (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--infer-batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-test", action="store_true", help="skip building the test-split patches")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    labels = ["cnn3d", "cnn3d-gap"] if args.heads else [s.strip() for s in args.predictors.split(",") if s.strip()]
    unknown = [lab for lab in labels if lab not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)}")
    overrides = parse_overrides(args.overrides)

    rows = []
    with Progress() as progress:
        b = load_benchmark(args.benchmark)
        ds = b.build_dataset(seed=args.seed)
        t = time.perf_counter()
        ds.prepare(b.geometry, progress)
        data = {"train": ds.training_patches("train", b.geometry),
                "validation": ds.training_patches("validation", b.geometry),
                "test": None if args.no_test else test_patchset(ds, b.geometry)}
        progress.log(f"data ready in {time.perf_counter() - t:.0f} s: " + ", ".join(
            f"{k} {len(v)} patches ({int(v.labels.sum())} positive)" for k, v in data.items() if v is not None))
        for lab in labels:
            name, fixed = CONFIGS[lab]
            opts = {**fixed, **overrides.get(lab, {})}
            progress.log(f"== {lab}: {name} {opts}")
            row = run_one(lab, name, opts, data, args, progress)
            rows.append(row)
            progress.log(json.dumps(row))
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({"benchmark": b.name, "seed": args.seed, "threads": torch.get_num_threads(),
                                                 "rows": rows}, indent=1))
    from tabulate import tabulate

    def f(v, nd=3):
        return "n/a" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else v)

    print(f"benchmark {b.name}, seed {args.seed}, torch threads {torch.get_num_threads()}, CPU")
    print(tabulate([[r["config"], r["init"], f(r["val_auc"]), f(r["test_auc"]), f(r["train_s"], 0),
                     f"{r['epochs']} ({r['best_epoch']})", f(r["ms_per_patch"], 1), f(r["ms_per_patch_grad"], 1),
                     ", ".join(f"{k}={v}" for k, v in overrides.get(r["config"], {}).items()) or "defaults"]
                    for r in rows],
                   headers=["config", "init", "val AUC", "test AUC", "train s", "epochs (best)", "ms/patch",
                            "ms/patch grad", "options"]))
    return 0


if __name__ == "__main__":
    from wsbench.errors import exit_with_one_line

    exit_with_one_line(main)
