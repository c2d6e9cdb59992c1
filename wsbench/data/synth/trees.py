"""Branching, tapering tubular trees (pulmonary vessels, airways) and their rasterisation.

Trees grow by *territory splitting*: a branch owns a cloud of points sampled in its lung,
heads for their centroid, and at its end splits the cloud in two across the cloud's
principal axis (at a random quantile, so branchings are asymmetric). Radii follow Murray's
law (r³ proportional to the territory served), so vessels taper generation by generation
from ~5 mm at the hilum to the resolution limit, and the tree fills the lung the way real
pulmonary trees do. Bronchi and arteries share one tree (bronchovascular bundles: the
artery runs beside its bronchus); veins grow a separate tree, interleaved with it.

:func:`render_tubes` draws capsules with partial-volume occupancy onto a scan grid,
vectorised over many short pieces at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsbench.data.synth.grid import ScanGrid


@dataclass
class Tubes:
    """Capsule pieces: ``p0``, ``p1`` ``(n, 3)`` world ``(x, y, z)`` mm; radii ``r0``, ``r1`` ``(n,)`` mm
    at the two ends; ``parent`` index of the piece this one continues or branches from (−1: root)."""

    p0: np.ndarray
    p1: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    parent: np.ndarray

    def __len__(self) -> int:
        return int(self.r0.shape[0])

    def take(self, keep) -> "Tubes":
        """A subset (parents dropped: the subset is for drawing, not for walking the tree)."""
        return Tubes(self.p0[keep], self.p1[keep], self.r0[keep], self.r1[keep],
                     np.full(len(self.r0[keep]), -1))

    @staticmethod
    def concat(items: list["Tubes"]) -> "Tubes":
        items = [t for t in items if len(t)]
        if not items:
            z = np.zeros((0, 3))
            return Tubes(z, z, np.zeros(0), np.zeros(0), np.zeros(0, int))
        off = np.cumsum([0] + [len(t) for t in items[:-1]])
        return Tubes(np.concatenate([t.p0 for t in items]), np.concatenate([t.p1 for t in items]),
                     np.concatenate([t.r0 for t in items]), np.concatenate([t.r1 for t in items]),
                     np.concatenate([np.where(t.parent >= 0, t.parent + o, -1) for t, o in zip(items, off)]))


def grow_tree(rng: np.random.Generator, root: np.ndarray, direction: np.ndarray, radius: float,
              territory: np.ndarray, r_min: float = 0.55, reach: float = 0.5) -> Tubes:
    """Grow one tree from ``root`` (x, y, z mm) into ``territory`` (N, 3) points.

    ``radius``: root radius (mm) serving all N points; a branch serving n points has radius
    ``radius * (n / N) ** (1/3)`` (Murray). Branches thinner than ``r_min`` end.
    Each branch covers ``reach`` of the way to its territory's centroid, bending gently.
    Returns the branches as :class:`Tubes` (radius tapering to the larger child's).
    """
    n_total = len(territory)
    p0s, p1s, rs, parents = [], [], [], []
    stack = [(np.asarray(root, float), float(radius), territory, np.asarray(direction, float), -1)]
    while stack:
        p, r, pts, d_par, parent = stack.pop()
        c = pts.mean(axis=0)
        to_c = c - p
        dist = float(np.linalg.norm(to_c))
        d = to_c / dist if dist > 1e-6 else d_par
        d = 0.75 * d + 0.25 * d_par
        d /= np.linalg.norm(d)
        length = float(np.clip(reach * dist, 2.0 * r + 1.0, 40.0))
        if len(pts) < 2 or r * (0.5) ** (1 / 3) < r_min:
            length = float(np.clip(dist, 1.5, 4.0 * r + 2.0))
        q = p + length * d
        idx = len(rs)
        # a gently curved branch: two pieces through a jittered midpoint
        mid = 0.5 * (p + q)
        jitter = rng.normal(size=3)
        jitter -= jitter.dot(d) * d
        mid = mid + 0.08 * length * jitter
        p0s += [p, mid]
        p1s += [mid, q]
        rs += [r, r]
        parents += [parent, idx]
        if len(pts) < 2 or r * (0.5) ** (1 / 3) < r_min:
            continue
        dev = pts - c
        w, v = np.linalg.eigh(dev.T @ dev)
        s = dev @ v[:, -1]
        k = int(np.clip(round(rng.uniform(0.3, 0.7) * len(s)), 1, len(s) - 1))
        cut = np.partition(s, k - 1)[k - 1]
        for part in (pts[s <= cut], pts[s > cut]):
            if len(part) == 0:
                continue
            rc = r * (len(part) / len(pts)) ** (1.0 / 3.0)
            if rc < r_min:
                continue
            stack.append((q, rc, part, d, idx + 1))
    p0 = np.array(p0s)
    p1 = np.array(p1s)
    r0 = np.array(rs)
    parent = np.array(parents, int)
    # taper: a piece ends at the radius of its thickest continuation
    r1 = r0.copy()
    kids_max = np.zeros(len(r0))
    np.maximum.at(kids_max, parent[parent >= 0], r0[parent >= 0])
    has = kids_max > 0
    r1[has] = np.minimum(r0[has], kids_max[has])
    r1[~has] = 0.8 * r0[~has]
    return Tubes(p0, p1, r0, r1, parent)


def offset_tubes(t: Tubes, rng: np.random.Generator, gap: np.ndarray, scale: float) -> Tubes:
    """A companion tree: each piece shifted sideways by ``gap`` (n,) mm, radii × ``scale``.

    The sideways direction is perpendicular to each piece and derived from one fixed vector
    per tree, so a companion (the artery beside its bronchus) stays on one side.
    """
    ref = rng.normal(size=3)
    ref /= np.linalg.norm(ref)
    d = t.p1 - t.p0
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    side = np.cross(d, ref)
    side /= np.maximum(np.linalg.norm(side, axis=1, keepdims=True), 1e-6)
    sh = side * gap[:, None]
    # keep pieces connected: a piece starts where its parent's shifted end is
    p0 = t.p0 + sh
    ok = t.parent >= 0
    p0[ok] = t.p1[t.parent[ok]] + sh[t.parent[ok]]
    return Tubes(p0, t.p1 + sh, t.r0 * scale, t.r1 * scale, t.parent.copy())


def _split_long(t: Tubes, max_len: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut pieces longer than ``max_len`` so every piece has a small bounding box."""
    L = np.linalg.norm(t.p1 - t.p0, axis=1)
    k = np.maximum(1, np.ceil(L / max_len).astype(int))
    rep = np.repeat(np.arange(len(t)), k)
    j = np.concatenate([np.arange(n) for n in k]) if len(k) else np.zeros(0, int)
    kk = k[rep].astype(float)
    a = (j / kk)[:, None]
    b = ((j + 1) / kk)[:, None]
    d = t.p1[rep] - t.p0[rep]
    p0 = t.p0[rep] + a * d
    p1 = t.p0[rep] + b * d
    r0 = t.r0[rep] + a[:, 0] * (t.r1[rep] - t.r0[rep])
    r1 = t.r0[rep] + b[:, 0] * (t.r1[rep] - t.r0[rep])
    return p0, p1, r0, r1


def _overlaps(grid: ScanGrid, t: Tubes, pad: float) -> np.ndarray:
    """Pieces whose bounding box (+ radius + pad) meets the grid's world box."""
    za, ya, xa = grid.axes()
    lo = np.array([xa.min(), ya.min(), za.min()]) - pad
    hi = np.array([xa.max(), ya.max(), za.max()]) + pad
    r = np.maximum(t.r0, t.r1)[:, None]
    a = np.minimum(t.p0, t.p1) - r
    b = np.maximum(t.p0, t.p1) + r
    return np.all((b >= lo) & (a <= hi), axis=1)


def splat_tubes(grid: ScanGrid, tubes: Tubes, out: np.ndarray, step_mm: float = 0.25) -> np.ndarray:
    """Add the partial volume of thin tubes (radius below a voxel) to ``out``.

    A tube thinner than a voxel is seen by CT only through its partial volume: each
    ``step_mm`` of axis carries ``pi r^2 step`` mm³, spread trilinearly over the 8 nearest
    voxels (then the scanner blur shapes it). Occupancy is capped at 1 by the caller.
    """
    if len(tubes) == 0:
        return out
    L = np.linalg.norm(tubes.p1 - tubes.p0, axis=1)
    k = np.maximum(1, np.ceil(L / step_mm).astype(int))
    rep = np.repeat(np.arange(len(tubes)), k)
    j = np.arange(len(rep)) - np.repeat(np.cumsum(k) - k, k)
    t = ((j + 0.5) / k[rep])[:, None]
    pts = tubes.p0[rep] + t * (tubes.p1[rep] - tubes.p0[rep])
    r = tubes.r0[rep] + t[:, 0] * (tubes.r1[rep] - tubes.r0[rep])
    vol = np.pi * r ** 2 * (L[rep] / k[rep]) / float(np.prod(grid.spacing))
    q = grid.to_index(pts)
    base = np.floor(q).astype(int)
    fr = q - base
    shape = np.array(grid.shape)
    acc = np.zeros(int(np.prod(shape)), np.float64)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                idx = base + np.array([dz, dy, dx])
                w = (np.where(dz, fr[:, 0], 1 - fr[:, 0]) * np.where(dy, fr[:, 1], 1 - fr[:, 1])
                     * np.where(dx, fr[:, 2], 1 - fr[:, 2]))
                ok = np.all((idx >= 0) & (idx < shape), axis=1)
                flat = np.ravel_multi_index(idx[ok].T, grid.shape)
                acc += np.bincount(flat, weights=(vol * w)[ok], minlength=acc.size)
    out += acc.reshape(grid.shape).astype(np.float32)
    return out


def render_tubes(grid: ScanGrid, tubes: Tubes, out: np.ndarray, *, soft_mm: float = 0.35,
                 chunk: int = 400, thin_mm: float | None = None) -> np.ndarray:
    """Max-composite capsule occupancy (0..1, float32) of ``tubes`` into ``out`` (grid shape).

    Occupancy is ``clip((r - d) / (2 soft_mm) + 0.5, 0, 1)`` with ``d`` the distance from the
    voxel centre to the piece's axis, averaged over 1–3 points across each slice's thickness
    so thin vessels in thick slices get their partial volume instead of flickering. Pieces
    thinner than ``thin_mm`` (default: 0.9 × the in-plane spacing) are splatted instead
    (:func:`splat_tubes`): the same partial volume at a fraction of the cost.
    """
    if len(tubes) == 0:
        return out
    tubes = tubes.take(_overlaps(grid, tubes, 2.0))
    sz, sy, sx = grid.spacing
    thin_mm = 0.9 * sy if thin_mm is None else thin_mm
    thin = np.maximum(tubes.r0, tubes.r1) < thin_mm
    if thin.any():
        extra = splat_tubes(grid, tubes.take(thin), np.zeros(grid.shape, np.float32))
        np.maximum(out, np.minimum(extra, 1.0), out=out)
        tubes = tubes.take(~thin)
    if len(tubes) == 0:
        return out
    nsub = 1 if sz < 1.2 else (2 if sz < 1.9 else 3)
    zsub = (np.arange(nsub) - (nsub - 1) / 2) * (sz / nsub)
    rr = np.maximum(tubes.r0, tubes.r1)
    groups = [(np.flatnonzero(rr <= 1.3), 4.0), (np.flatnonzero((rr > 1.3) & (rr <= 2.5)), 5.0),
              (np.flatnonzero(rr > 2.5), 8.0)]
    za, ya, xa = grid.axes()
    flat_out = out.reshape(-1)
    for idx, max_len in groups:
        if len(idx) == 0:
            continue
        sub = Tubes(tubes.p0[idx], tubes.p1[idx], tubes.r0[idx], tubes.r1[idx], np.full(len(idx), -1))
        p0, p1, r0, r1 = _split_long(sub, max_len)
        rmax = float(np.max(np.maximum(r0, r1)))
        ext = max_len + 2 * (rmax + 2 * soft_mm) + 1.0
        nb = np.array([int(np.ceil(ext / s)) + 2 for s in (sz, sy, sx)])
        nb = np.minimum(nb, grid.shape)
        for c0 in range(0, len(r0), chunk):
            a, b = p0[c0:c0 + chunk], p1[c0:c0 + chunk]
            ra, rb = r0[c0:c0 + chunk], r1[c0:c0 + chunk]
            lo_idx = np.floor(grid.to_index(np.minimum(a, b) - (np.maximum(ra, rb) + 2 * soft_mm)[:, None]))
            lo_idx2 = np.floor(grid.to_index(np.maximum(a, b) + (np.maximum(ra, rb) + 2 * soft_mm)[:, None]))
            lo = np.minimum(lo_idx, lo_idx2).astype(int)
            lo = np.clip(lo, 0, np.array(grid.shape) - nb)
            kz = lo[:, 0:1] + np.arange(nb[0])[None]  # (n, nbz)
            ky = lo[:, 1:2] + np.arange(nb[1])[None]
            kx = lo[:, 2:3] + np.arange(nb[2])[None]
            Zw = za[kz][:, :, None, None]
            Yw = ya[ky][:, None, :, None]
            Xw = xa[kx][:, None, None, :]
            d = (b - a).astype(np.float32)
            L2 = np.maximum((d * d).sum(1), 1e-6).astype(np.float32)
            ax_, ay_, az_ = (a[:, i].astype(np.float32)[:, None, None, None] for i in range(3))
            dx_, dy_, dz_ = (d[:, i][:, None, None, None] for i in range(3))
            L2 = L2[:, None, None, None]
            r0f = ra.astype(np.float32)[:, None, None, None]
            r1f = rb.astype(np.float32)[:, None, None, None]
            X = Xw - ax_
            Y = Yw - ay_
            acc = None
            for zo in zsub:
                Z = Zw + np.float32(zo) - az_
                t = np.clip((X * dx_ + Y * dy_ + Z * dz_) / L2, 0, 1)
                ex = X - t * dx_
                ey = Y - t * dy_
                ez = Z - t * dz_
                dist = np.sqrt(ex * ex + ey * ey + ez * ez)
                rad = r0f + t * (r1f - r0f)
                f = np.clip((rad - dist) / np.float32(2 * soft_mm) + 0.5, 0, 1)
                acc = f if acc is None else acc + f
            f = acc / np.float32(nsub)
            flat = (kz[:, :, None, None] * grid.shape[1] + ky[:, None, :, None]) * grid.shape[2] + kx[:, None, None, :]
            sel = f > 0.01
            np.maximum.at(flat_out, flat[sel], f[sel])
    return out
