"""Generator measurements: speed, round-trip error vs t0, and "all" vs "negatives" training data.

What it measures (``rflow`` at the benchmark's 32³ geometry, on the CPU):

1. training seconds per step (batch 8) and sampling milliseconds per Euler step (batch 1 and 8);
2. the quality check of :mod:`wsbench.generators.quality` on held-out validation patches, and
   reconstruction error (deterministic round trip and stochastic re-noising) vs
   ``t0 ∈ {0.1, 0.3, 0.5, 0.7}``;
3. a model trained on all training patches vs one trained on negatives only: on validation
   nodule cases, re-noised to ``t0 ∈ {0.3, 0.5}`` and regenerated, the mean absolute change
   inside the truth mask vs outside it (a negatives-only model should "heal" nodules more,
   i.e. change the inside more). The truth masks are used for this measurement only.

Data: the ``luna16-synth`` benchmark (prepared and cached on first use); ``--data phantom``
uses a small built-in phantom instead (no dataset needed).

Usage::

    PYTHONPATH=. python benchmarks/generators.py                  # defaults: rflow's default steps
    PYTHONPATH=. python benchmarks/generators.py --steps 100 --threads 2 --out gen.json

The figures in :mod:`wsbench.generators.rflow` came from ``--steps 200 --checkpoints DIR``, with the
``negatives`` model trained by a second process (``--train-only negatives``) and the evaluation
run with ``--wait``. Two trainings at the default 400 steps take ~12 min on two free cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsbench.data.intensity import hu_to_norm  # noqa: E402
from wsbench.data.types import PatchSet  # noqa: E402
from wsbench.generators.quality import check_generator, reconstruction_errors  # noqa: E402
from wsbench.generators.rflow import RFlowGenerator  # noqa: E402


def phantom(n: int, size: int = 32, seed: int = 0):
    """Chest-CT-like phantom patches: parenchyma, vessels, chest wall, nodules (half of them).

    Returns ``(images (n, s, s, s) normalised, labels (n,), masks (n, s, s, s) bool)``."""
    from scipy.ndimage import distance_transform_edt

    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*(np.arange(size, dtype=np.float32),) * 3, indexing="ij"), -1)
    images = np.empty((n, size, size, size), np.float32)
    masks = np.zeros((n, size, size, size), bool)
    labels = np.zeros(n, np.int64)
    for i in range(n):
        hu = np.full((size,) * 3, -850.0, np.float32)
        if rng.random() < 0.35:  # chest wall
            nrm = rng.normal(size=3)
            nrm /= np.linalg.norm(nrm)
            hu[(g - size / 2) @ nrm > rng.uniform(4, 14)] = 40.0
        for _ in range(rng.integers(2, 6)):  # curved vessels
            p, d = rng.uniform(0, size, 3), rng.normal(size=3)
            d /= np.linalg.norm(d)
            ts = np.linspace(-size, size, 4 * size)
            pts = p + ts[:, None] * d + ts[:, None] ** 2 * rng.normal(scale=0.02, size=3)
            pts = np.floor(pts[(pts >= 0).all(1) & (pts < size).all(1)]).astype(int)
            if len(pts):
                seeds = np.ones((size,) * 3, bool)
                seeds[pts[:, 0], pts[:, 1], pts[:, 2]] = False
                hu[distance_transform_edt(seeds) < rng.uniform(0.7, 2.0)] = 30.0
        if rng.random() < 0.5:  # a solid or ground-glass nodule
            labels[i] = 1
            c = size / 2 + rng.integers(-(size // 5), size // 5 + 1, 3)
            radii = rng.uniform(1.5, 8.0) * rng.uniform(0.8, 1.2, 3)
            masks[i] = (((g - c) / radii) ** 2).sum(-1) < 1
            hu[masks[i]] = -550.0 if rng.random() < 0.3 else 20.0
        hu += rng.normal(scale=25.0, size=hu.shape).astype(np.float32)
        images[i] = hu_to_norm(hu)
    return images, labels, masks


def load_data(kind: str, n_phantom: int, size: int = 32):
    """``(train PatchSet, validation PatchSet, nodule images (k, D, H, W), nodule masks, source)``."""
    if kind == "synth":
        from wsbench.benchmark import load_benchmark

        b = load_benchmark("luna16-synth")
        ds = b.build_dataset()
        ds.prepare(b.geometry)
        train = ds.training_patches("train", b.geometry)
        val = ds.training_patches("validation", b.geometry)
        cases = list(ds.cases("validation", b.geometry))
        imgs = np.stack([c.image for c in cases]).astype(np.float32)
        masks = np.stack([c.mask for c in cases]).astype(bool)
        return train, val, imgs, masks, f"luna16-synth (fingerprint {ds.fingerprint()})"
    x, y, _ = phantom(n_phantom, size=size, seed=1)
    xv, yv, mv = phantom(64, size=size, seed=2)
    ids = [f"p{i}" for i in range(len(y))]
    train = PatchSet(x, y, ids, ids)
    val = PatchSet(xv, yv, [f"v{i}" for i in range(len(yv))])
    return train, val, xv[yv == 1], mv[yv == 1], "phantom"


@torch.no_grad()
def sampling_ms_per_step(gen: RFlowGenerator, size: int, batch: int, reps: int = 10) -> float:
    z = torch.randn(batch, 1, size, size, size)
    t = torch.full((batch,), 0.5)
    gen.velocity(z, t)  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        gen.velocity(z, t)
    return (time.perf_counter() - start) / reps * 1000.0


@torch.no_grad()
def heal_scores(gen: RFlowGenerator, images: np.ndarray, masks: np.ndarray, t0: float, steps: int = 10,
                seed: int = 0) -> dict[str, float]:
    """Mean |x - x_rec| inside / outside the nodule masks after re-noising to ``t0``, and the
    mean-squared error relative to the images' variance."""
    g = torch.Generator().manual_seed(seed)
    inside, outside, se = [], [], 0.0
    for i in range(0, len(images), 8):
        x = torch.from_numpy(images[i:i + 8, None])
        eps = torch.randn(x.shape, generator=g)
        xr = gen.generate((1 - t0) * x + t0 * eps, t0, steps)
        d = (xr - x).abs()[:, 0].numpy()
        se += float((d.astype(np.float64) ** 2).sum())
        m = masks[i:i + 8]
        inside.extend(d[j][m[j]].mean() for j in range(len(m)) if m[j].any())
        outside.extend(d[j][~m[j]].mean() for j in range(len(m)) if (~m[j]).any())
    a, b = float(np.mean(inside)), float(np.mean(outside))
    return {"inside": a, "outside": b, "ratio": a / b, "rel_mse": se / images.size / float(images.var())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=("synth", "phantom"), default="synth")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: rflow's default)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    ap.add_argument("--phantom-patches", type=int, default=1000)
    ap.add_argument("--phantom-size", type=int, default=32, help="phantom patch side (voxels)")
    ap.add_argument("--held-out", type=int, default=8, help="validation patches for the error measurements")
    ap.add_argument("--skip-negatives", action="store_true", help="train only the 'all' model")
    ap.add_argument("--train-only", choices=("all", "negatives"), default=None,
                    help="train (and save to --checkpoints) this one model, then stop: to train both in parallel")
    ap.add_argument("--checkpoints", type=Path, default=None, help="folder to save/reuse the two checkpoints")
    ap.add_argument("--wait", action="store_true", help="wait for a checkpoint another process is training")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    t = time.perf_counter()
    train, val, nod_x, nod_m, source = load_data(args.data, args.phantom_patches, args.phantom_size)
    print(f"data: {source}: {len(train)} training patches ({int(train.labels.sum())} positive), "
          f"{len(val)} validation patches, {len(nod_x)} validation nodule cases; {time.perf_counter() - t:.0f} s",
          flush=True)
    size = train.images.shape[1]
    rng = np.random.default_rng(0)
    held = val.images[np.sort(rng.choice(len(val), size=min(args.held_out, len(val)), replace=False))]
    nod_x, nod_m = nod_x[:16], nod_m[:16]
    results: dict = {"data": source, "threads": args.threads, "patch_size": size}

    def get_model(data: str) -> RFlowGenerator:
        opts = {"data": data}
        if args.steps is not None:
            opts["steps"] = args.steps
        gen = RFlowGenerator(opts, seed=0)
        ck = args.checkpoints / f"rflow-{data}-{gen.options.steps}.pt" if args.checkpoints else None
        if ck is not None and args.wait and not ck.is_file():
            print(f"[{data}] waiting for {ck} (trained by another process)", flush=True)
            while not ck.is_file():
                time.sleep(10)
        if ck is not None and ck.is_file():
            gen.load(ck)
            print(f"[{data}] loaded {ck}", flush=True)
        else:
            gen.fit(train, val)
            if ck is not None:
                gen.save(ck)
        print(f"[{data}] training: {json.dumps(gen.summary)}", flush=True)
        results[f"training_{data}"] = gen.summary
        return gen

    if args.train_only:
        get_model(args.train_only)
        return 0
    gen = get_model("all")
    models = {"all": gen}
    results["sampling_ms_per_step"] = {f"batch{b}": round(sampling_ms_per_step(gen, size, b), 1) for b in (1, 8)}
    print(f"sampling ms per Euler step: {results['sampling_ms_per_step']}", flush=True)

    rep = check_generator(gen, held, t0=0.5, steps=10, n_samples=8, sample_steps=20, seed=0)
    results["quality_all"] = rep.to_dict()
    print(f"quality check ('all' model, {rep.n_patches} held-out patches): passed={rep.passed} "
          f"renoise_rel_mse={rep.renoise_rel_mse:.3f} roundtrip_rel_mse={rep.roundtrip_rel_mse:.5f} "
          f"inversion_noise_std={rep.inversion_noise_std:.3f} sample_w1_hu={rep.sample_w1_hu:.1f} "
          f"{rep.failures}", flush=True)
    untrained = RFlowGenerator({}, seed=0)
    rep0 = check_generator(untrained, held, t0=0.5, steps=10, n_samples=4, sample_steps=20, seed=0)
    results["quality_untrained"] = rep0.to_dict()
    print(f"quality check (untrained): passed={rep0.passed} renoise_rel_mse={rep0.renoise_rel_mse:.3f} "
          f"roundtrip_rel_mse={rep0.roundtrip_rel_mse:.5f} sample_w1_hu={rep0.sample_w1_hu:.1f}", flush=True)

    rows = []
    for t0 in (0.1, 0.3, 0.5, 0.7):
        e = reconstruction_errors(gen, held, t0=t0, steps=10, seed=1)
        rows.append([t0, e["roundtrip_rel_mse"], e["renoise_rel_mse"], e["inversion_noise_std"]])
    results["round_trip_vs_t0"] = [dict(zip(("t0", "roundtrip_rel_mse", "renoise_rel_mse", "inversion_noise_std"), r))
                                   for r in rows]
    print(f"\nreconstruction error vs t0 ('all' model, {len(held)} held-out patches; MSE / data variance; "
          f"10 Euler steps)")
    print(tabulate(rows, headers=["t0", "deterministic round trip", "re-noised", "inverted-noise std"],
                   floatfmt=".4f"), flush=True)

    if not args.skip_negatives:
        models["negatives"] = get_model("negatives")
    rows = []
    for data, g in models.items():
        for t0 in (0.3, 0.5):
            h = heal_scores(g, nod_x, nod_m, t0, seed=2)
            rows.append([data, t0, h["inside"], h["outside"], h["ratio"], h["rel_mse"]])
    results["all_vs_negatives"] = [dict(zip(("data", "t0", "inside", "outside", "ratio", "renoise_rel_mse"), r))
                                   for r in rows]
    print(f"\nnodule cases ({len(nod_x)}): mean |x - x_rec| inside vs outside the truth mask after re-noising "
          f"(10 Euler steps)")
    print(tabulate(rows, headers=["training data", "t0", "inside", "outside", "inside/outside", "re-noised rel MSE"],
                   floatfmt=".4f"), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=float))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    from wsbench.errors import exit_with_one_line

    exit_with_one_line(main)
