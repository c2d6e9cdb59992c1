"""Small generated phantom patches for the predictor tests (no dataset needed).

Each patch: smooth textured parenchyma in normalised intensity, 1–3 bright tube "vessels"
(straight segments through the patch), and — for positives — a ball ("nodule") of radius
2–5 voxels at up to ±5 voxels from the centre, solid or ground glass.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from wsbench.data.types import PatchSet


def phantom_patch(rng: np.random.Generator, size: int = 32, nodule: bool = True) -> np.ndarray:
    img = -0.75 + 0.6 * gaussian_filter(rng.normal(0, 0.15, (size,) * 3), 1.5) + rng.normal(0, 0.02, (size,) * 3)
    zz, yy, xx = np.meshgrid(*(np.arange(size, dtype=np.float32),) * 3, indexing="ij")
    pts = np.stack([zz, yy, xx], -1)
    for _ in range(rng.integers(1, 4)):
        p0 = rng.uniform(0, size, 3)
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        rel = pts - p0
        dist = np.linalg.norm(rel - (rel @ d)[..., None] * d, axis=-1)
        r = rng.uniform(0.8, 1.6)
        img = np.where(dist <= r, rng.uniform(-0.1, 0.1), img)
    if nodule:
        c = size / 2 + rng.uniform(-5, 5, 3)
        r = rng.uniform(2.0, 5.0)
        ball = np.linalg.norm(pts - c, axis=-1) <= r
        level = rng.choice([0.0, -0.45])  # solid or ground glass
        img = np.where(ball, level + rng.normal(0, 0.03, img.shape), img)
    return img.astype(np.float32)


def phantom_patchset(n: int, seed: int, size: int = 32, pos_fraction: float = 0.5) -> PatchSet:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < pos_fraction).astype(np.int64)
    labels[0], labels[-1] = 1, 0  # both classes present
    imgs = np.stack([phantom_patch(rng, size, bool(l)) for l in labels])
    ids = [f"ph{seed}:{'pos' if l else 'neg'}:{i}" for i, l in enumerate(labels)]
    return PatchSet(imgs, labels, ids, [f"ph{seed}"] * n)
