"""Time wsbench's Dice + MSD + HD95 against MONAI's metrics on the same nodule-like masks.

MONAI side: ``DiceMetric`` + ``SurfaceDistanceMetric(symmetric=True)`` +
``HausdorffDistanceMetric(percentile=95)``, all with ``spacing``, called once per batch of
same-sized cases (MONAI's intended use). wsbench side: one :func:`wsbench.metrics.evaluate`
call per case, which computes *more* (also MASD, surface Dice, hit, volumes). Both sides run on
identical masks; the script prints the time per case, the ratio and the largest absolute value
difference per metric, and checks wsbench against an exact float64 brute force (all pairwise
surface distances). MONAI returns float32, and ``torch.quantile`` places the 95th percentile
with float32 arithmetic, so its HD95 can differ from the exact value by ~1e-5 relative.

Masks: a lumpy ellipsoidal "nodule" (diameter 3-20 mm) placed off-centre, and a prediction
made from it by a shift, a dilation or erosion, a missing chunk and sometimes a small
false-positive blob -- the kind of masks a thresholded saliency map gives.

Usage::

    PYTHONPATH=. python benchmarks/metrics_speed.py                 # 32^3, 48^3, 64^3
    PYTHONPATH=. python benchmarks/metrics_speed.py --cases 50 --sizes 32 64 --repeats 5
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from scipy import ndimage

from wsbench.metrics import evaluate


def nodule_pair(rng: np.random.Generator, size: int, spacing: tuple[float, float, float]):
    """A (prediction, truth) pair of bool masks of shape ``(size,) * 3``."""
    shape = (size,) * 3
    sp = np.asarray(spacing)
    diameter_mm = rng.uniform(3.0, 20.0)
    radii_vox = 0.5 * diameter_mm / sp * rng.uniform(0.75, 1.25, size=3)
    centre = np.asarray(shape) / 2 + rng.uniform(-0.15, 0.15, size=3) * size
    grid = np.indices(shape, dtype=np.float32)
    r2 = sum(((grid[i] - centre[i]) / radii_vox[i]) ** 2 for i in range(3))
    lumps = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2.0)
    lumps /= np.abs(lumps).max() + 1e-9
    truth = r2 + 0.4 * lumps < 1.0
    if not truth.any():
        truth[tuple(np.clip(centre.astype(int), 0, size - 1))] = True
    pred = np.roll(truth, tuple(int(v) for v in rng.integers(-2, 3, size=3)), axis=(0, 1, 2))
    k = int(rng.integers(-1, 3))
    if k > 0:
        pred = ndimage.binary_dilation(pred, iterations=k)
    elif k < 0:
        pred = ndimage.binary_erosion(pred) | (pred & (rng.random(shape) < 0.3))
    cut = np.asarray(shape) // 2 + rng.integers(-3, 4, size=3)
    if rng.random() < 0.5:
        pred[cut[0]:, cut[1]:, :cut[2]] = False
    if rng.random() < 0.4:  # a false positive elsewhere in the patch
        fp = np.zeros(shape, bool)
        c = rng.integers(2, size - 2, size=3)
        fp[c[0] - 1:c[0] + 2, c[1] - 1:c[1] + 2, c[2] - 1:c[2] + 2] = True
        pred |= fp
    if not pred.any():
        pred = truth.copy()
    return pred, truth


def time_wsbench(pairs, spacing, repeats):
    best, values = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = [evaluate(p, t, spacing) for p, t in pairs]
        best = min(best, time.perf_counter() - t0)
        values = np.array([[m["dice"], m["msd_mm"], m["hd95_mm"]] for m in out])
    return best, values


def exact_reference(pairs, spacing):
    """Dice, pooled MSD and HD95 in float64 from all pairwise surface-voxel distances (slow, exact)."""
    from scipy.spatial.distance import cdist

    st = ndimage.generate_binary_structure(3, 1)
    out = []
    for p, t in pairs:
        a = np.argwhere(p & ~ndimage.binary_erosion(p, st)) * np.asarray(spacing)
        b = np.argwhere(t & ~ndimage.binary_erosion(t, st)) * np.asarray(spacing)
        d = cdist(a, b)
        dab, dba = d.min(axis=1), d.min(axis=0)
        out.append([2 * (p & t).sum() / (p.sum() + t.sum()), np.concatenate([dab, dba]).mean(),
                    max(np.percentile(dab, 95), np.percentile(dba, 95))])
    return np.array(out)


def time_monai(pairs, spacing, repeats):
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDistanceMetric

    yp = torch.from_numpy(np.stack([p for p, _ in pairs])[:, None].astype(np.float32))
    yt = torch.from_numpy(np.stack([t for _, t in pairs])[:, None].astype(np.float32))
    best, values = float("inf"), None
    for _ in range(repeats):
        dm = DiceMetric(include_background=True, reduction="none")
        sm = SurfaceDistanceMetric(include_background=True, symmetric=True, reduction="none")
        hm = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
        t0 = time.perf_counter()
        d = dm(y_pred=yp, y=yt)
        s = sm(y_pred=yp, y=yt, spacing=list(spacing))
        h = hm(y_pred=yp, y=yt, spacing=list(spacing))
        best = min(best, time.perf_counter() - t0)
        values = torch.stack([d[:, 0], s[:, 0], h[:, 0]], dim=1).double().numpy()
    return best, values


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64], help="patch edge lengths (voxels)")
    ap.add_argument("--cases", type=int, default=40, help="mask pairs per size and spacing")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (best is kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (MONAI side)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # MONAI warns on (rare) empty masks

    rng = np.random.default_rng(args.seed)
    spacings = [(1.0, 1.0, 1.0), (1.25, 0.7, 0.7)]
    header = f"{'size':>6} {'spacing (mm)':>17} {'cases':>5} {'wsbench ms/case':>16} {'MONAI ms/case':>14} " \
             f"{'speed-up':>9} {'max|d| dice':>12} {'max|d| msd':>11} {'max|d| hd95':>12}"
    print(header)
    print("-" * len(header))
    tot_w = tot_m = 0.0
    worst = np.zeros(3)
    worst_rel = np.zeros(3)
    worst_exact = np.zeros(3)
    for size in args.sizes:
        for sp in spacings:
            pairs = [nodule_pair(rng, size, sp) for _ in range(args.cases)]
            tw, vw = time_wsbench(pairs, sp, args.repeats)
            tm, vm = time_monai(pairs, sp, args.repeats)
            diff = np.abs(vw - vm).max(axis=0)
            worst = np.maximum(worst, diff)
            worst_exact = np.maximum(worst_exact, np.abs(vw - exact_reference(pairs, sp)).max(axis=0))
            worst_rel = np.maximum(worst_rel, (np.abs(vw - vm) / np.maximum(np.abs(vw), 1e-12)).max(axis=0))
            tot_w += tw
            tot_m += tm
            print(f"{size:>4}^3 {str(sp):>17} {args.cases:>5} {1e3 * tw / args.cases:>16.3f} "
                  f"{1e3 * tm / args.cases:>14.3f} {tm / tw:>8.1f}x {diff[0]:>12.2e} {diff[1]:>11.2e} {diff[2]:>12.2e}")
    print("-" * len(header))
    print(f"overall: wsbench {1e3 * tot_w:.1f} ms, MONAI {1e3 * tot_m:.1f} ms -> {tot_m / tot_w:.1f}x faster; "
          f"largest value difference: dice {worst[0]:.2e}, msd {worst[1]:.2e} mm, hd95 {worst[2]:.2e} mm "
          f"(MONAI computes in float32)")
    print(f"largest relative difference: dice {worst_rel[0]:.2e}, msd {worst_rel[1]:.2e}, hd95 {worst_rel[2]:.2e} "
          f"(float32 epsilon is 1.19e-07)")
    print(f"wsbench vs exact float64 brute force (all pairwise distances): largest difference dice "
          f"{worst_exact[0]:.1e}, msd {worst_exact[1]:.1e} mm, hd95 {worst_exact[2]:.1e} mm")


if __name__ == "__main__":
    main()
