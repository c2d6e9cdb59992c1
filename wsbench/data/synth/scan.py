"""One synthetic chest CT: header, anatomy, trees, nodules, candidates, scanner effects.

:func:`make_scan` is a pure function of its seed and the nodule shapes it is given, so a
build is reproducible scan by scan (and can run scans in parallel processes).

Field of view (reduced on purpose): a slab of the mid chest, 64–88 mm long (at most 110
slices), of a small adult (body 190–240 mm wide), reconstructed on a 288-pixel matrix over a
body-tight field of view — in-plane spacing 0.74–0.94 mm (LUNA16: 0.5–0.98 mm) and slices of
0.625–2.5 mm in LUNA16's proportions. A full LUNA16 volume (512² pixels × ~300 mm) is
~100 M voxels (~200 MB); this slab is 2–7 M voxels (4–14 MB), so the 60-scan default set
takes ~1.2 CPU-seconds per scan and ~400 MB, while every 32 mm evaluation patch still sees
LUNA16-like spacing, noise and anatomy (chest wall, mediastinum, vessels, airways, fissures)
around its nodule. Scans also vary in origin, direction (a quarter are stored head-first,
z direction −1), noise (12–40 HU), point spread, and padding outside the reconstruction
circle (−2000 or −3024 HU in 30 %), as real scanners do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from wsbench.data.synth.anatomy import LEFT_LUNG, RIGHT_LUNG, Thorax
from wsbench.data.synth.grid import ScanGrid
from wsbench.data.synth.nodules import (PlacedNodule, PreparedShape, nodule_type, occupancy,
                                        random_rotation)
from wsbench.data.synth.trees import Tubes, grow_tree, offset_tubes, render_tubes

#: Slice spacings (mm) and their frequencies, close to LUNA16's mix (thin 0.6–1 mm, many
#: 1.25 mm, many 2.5 mm).
SLICE_SPACINGS = (0.625, 0.7, 1.0, 1.25, 1.5, 2.0, 2.5)
SLICE_WEIGHTS = (0.08, 0.07, 0.15, 0.25, 0.1, 0.12, 0.23)
#: Reconstruction matrix across the patient (LUNA16: 512; reduced to keep the set small).
MATRIX = 288

PARAMS: dict[str, Any] = {
    "body_width_mm": [190.0, 240.0],
    "depth_ratio": [0.64, 0.74],
    "slab_height_mm": [64.0, 88.0],
    "max_slices": 110,
    "matrix": MATRIX,
    "slice_spacings_mm": list(SLICE_SPACINGS),
    "slice_weights": list(SLICE_WEIGHTS),
    "flip_z_probability": 0.25,
    "padding_probability": 0.3,
    "noise_hu": [12.0, 40.0],
    "psf_sigma_xy_mm": [0.45, 0.7],
    "placement_probabilities": {"isolated": 0.45, "juxtapleural": 0.3, "juxtavascular": 0.25},
    "vessel_hu": [30.0, 60.0],
    "solid_hu": [5.0, 60.0],
    "ground_glass_hu": [-700.0, -450.0],
    "territory_points": 3500,
    "root_radius_mm": 4.5,
    "min_radius_mm": 0.45,
    "class0_per_scan": 40,
}


@dataclass
class ScanResult:
    grid: ScanGrid
    image: np.ndarray                 # int16 HU (z, y, x)
    lungs: np.ndarray                 # uint8 0/3/4
    nodule_labels: np.ndarray         # uint8, label k = k-th nodule of ``nodules``
    nodules: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[tuple[float, float, float, int]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def sample_grid(rng: np.random.Generator, p=PARAMS):
    """Scan geometry and body size. In-plane spacing = field of view / matrix (0.76–0.97 mm)."""
    width = float(rng.uniform(*p["body_width_mm"]))
    ratio = float(rng.uniform(*p["depth_ratio"]))
    height = float(rng.uniform(*p["slab_height_mm"]))
    sz = float(rng.choice(p["slice_spacings_mm"], p=np.asarray(p["slice_weights"]) / np.sum(p["slice_weights"])))
    grow = 1.0 + 0.0015 * height / 2 + 0.01
    sxy = round((width * grow + 12.0) / p["matrix"], 6)
    nx = int(p["matrix"])
    ny = int(np.ceil((width * ratio * grow + 12.0) / sxy))
    nz = min(int(round(height / sz)), int(p["max_slices"]))
    fz = -1 if rng.random() < p["flip_z_probability"] else 1
    ox = round(-nx * sxy / 2 + rng.uniform(-15, 15), 3)
    oy = round(-ny * sxy / 2 + rng.uniform(-30, 10), 3)
    z_bottom = round(float(rng.uniform(-330, -80)), 3)
    oz = z_bottom if fz == 1 else z_bottom + (nz - 1) * sz
    grid = ScanGrid((nz, ny, nx), (sz, sxy, sxy), (ox, oy, oz), (1, 1, fz))
    return grid, width, ratio


def _texture(rng: np.random.Generator, grid: ScanGrid, cell_mm: float = 2.0) -> np.ndarray:
    """Unit-variance smooth noise (correlation ~3 mm) on the grid, made on a coarse grid."""
    ext = np.array(grid.shape) * np.array(grid.spacing)
    coarse = np.maximum(2, np.ceil(ext / cell_mm).astype(int) + 1)
    n = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 0.8)
    t = ndimage.zoom(n, np.array(grid.shape) / coarse, order=1, prefilter=False, grid_mode=False)
    t = t[:grid.shape[0], :grid.shape[1], :grid.shape[2]]
    if t.shape != grid.shape:  # zoom rounding: pad by edge values
        t = np.pad(t, [(0, g - s) for g, s in zip(grid.shape, t.shape)], mode="edge")
    return (t - t.mean()) / (t.std() + 1e-6)


def _territory(rng: np.random.Generator, thorax: Thorax, side: int, n: int) -> np.ndarray:
    """``n`` random points of one lung over the slab ± 40 mm (the tree extends past the scan)."""
    ac, bac, bpc = thorax.cavity_axes(thorax.z_lo - 40)
    pts = []
    got = 0
    while got < n:
        m = 4 * n
        x = thorax.cx + (rng.uniform(-1, 0, m) if side == RIGHT_LUNG else rng.uniform(0, 1, m)) * ac
        y = rng.uniform(thorax.cy - bac, thorax.cy + bpc, m)
        z = rng.uniform(thorax.z_lo - 40, thorax.z_hi + 40, m)
        ok = thorax.lung_label(x, y, z) == side
        p = np.stack([x[ok], y[ok], z[ok]], 1)
        pts.append(p)
        got += len(p)
    return np.concatenate(pts)[:n]


def _grow_trees(rng: np.random.Generator, thorax: Thorax, p=PARAMS):
    """Per lung: a bronchoarterial tree (airway + companion artery) and a venous tree."""
    airways, arteries, veins = [], [], []
    for side in (RIGHT_LUNG, LEFT_LUNG):
        root, inward = thorax.hilum(side)
        terr = _territory(rng, thorax, side, p["territory_points"])
        air = grow_tree(rng, root, inward, p["root_radius_mm"], terr, r_min=p["min_radius_mm"])
        gap = air.r0 * 1.2 + 0.25 + 0.95 * air.r0
        arteries.append(offset_tubes(air, rng, gap, 0.95))
        airways.append(air)
        vroot = root + np.array([0.0, -12.0, -15.0])
        vterr = _territory(rng, thorax, side, p["territory_points"])
        veins.append(grow_tree(rng, vroot, inward, p["root_radius_mm"], vterr, r_min=p["min_radius_mm"]))
    # trachea and main bronchi (lumen radius ~7.5 / 5 mm) down to each hilum
    sx, sy = thorax.spine_centre()
    ac, _, _ = thorax.cavity_axes(thorax.z_hilum)
    carina = np.array([thorax.cx + 0.04 * ac, sy - thorax.rv - 12.0, thorax.z_hilum + 15.0])
    top = carina + np.array([0.0, -4.0, 80.0])
    main_p0 = [top, carina, carina]
    main_p1 = [carina, thorax.hilum(RIGHT_LUNG)[0], thorax.hilum(LEFT_LUNG)[0]]
    main = Tubes(np.array(main_p0), np.array(main_p1), np.array([7.5, 5.5, 5.0]), np.array([7.0, 4.8, 4.6]),
                 np.array([-1, 0, 0]))
    return Tubes.concat([main] + airways), Tubes.concat(arteries), Tubes.concat(veins)


def _wall(t: Tubes) -> Tubes:
    """Outer surface of the airway wall: lumen radius + a wall ~15 % of it + 0.3 mm."""
    return Tubes(t.p0, t.p1, t.r0 * 1.15 + 0.3, t.r1 * 1.15 + 0.3, t.parent)


def make_scan(seed: int, shapes: list[PreparedShape], n_nodules: int, p=PARAMS) -> ScanResult:
    """Build one scan with (up to) ``n_nodules`` nodules drawn from ``shapes`` (in that order).

    Returns the int16 HU volume, the LUNA16-style lung labels, one label per placed nodule
    and per-nodule records (world centroid of the truth mask, diameter, texture, type,
    placement, source outline) plus candidate rows ``(x, y, z, class)``.
    """
    rng = np.random.default_rng(seed)
    grid, width, ratio = sample_grid(rng, p)
    za, ya, xa = grid.axes()
    nz, ny, nx = grid.shape
    cx = float(xa.mean() + rng.uniform(-4, 4))
    cy = float(ya.mean() + rng.uniform(-3, 3))
    z_lo, z_hi = float(za.min()), float(za.max())
    thorax = Thorax.sample(rng, cx, cy, z_lo, z_hi, width, ratio)
    Z, Y, X = grid.broadcast_axes()
    lab = thorax.labels(X, Y, Z)
    tex = _texture(rng, grid)
    hu = thorax.hu(lab, X, Y, Z, tex)
    lung = (lab == RIGHT_LUNG) | (lab == LEFT_LUNG)
    hu += 320.0 * thorax.fissure_occupancy(X, Y, Z, lab, grid.spacing[0])

    airways, arteries, veins = _grow_trees(rng, thorax, p)
    vessel_hu = float(rng.uniform(*p["vessel_hu"]))
    occ = np.zeros(grid.shape, np.float32)
    big = airways.r0 >= 0.8  # smaller airways are below CT's resolution
    vis_air = Tubes(airways.p0[big], airways.p1[big], airways.r0[big], airways.r1[big], np.full(int(big.sum()), -1))
    render_tubes(grid, _wall(vis_air), occ)
    hu += occ * (10.0 - hu)
    occ[:] = 0
    vessels = Tubes.concat([arteries, veins])
    render_tubes(grid, vessels, occ)
    hu += occ * (vessel_hu + 8.0 * tex - hu)
    occ[:] = 0
    render_tubes(grid, vis_air, occ)
    hu += occ * (-1000.0 - hu)
    del occ

    nodules, nod_lab = _place_nodules(rng, grid, thorax, lab, lung, vessels, shapes, n_nodules, hu, tex, p)
    candidates = _candidates(rng, grid, thorax, lab, vessels, vis_air, nodules, p)

    # scanner: point spread (in-plane kernel, slice profile ≈ slice thickness) and noise
    sig_xy = float(rng.uniform(*p["psf_sigma_xy_mm"]))
    sz, sy, sx = grid.spacing
    sig = (0.42 * sz / sz, sig_xy / sy, sig_xy / sx)
    hu = ndimage.gaussian_filter(hu, sig, mode="nearest", truncate=3.0)
    noise_sd = float(rng.uniform(*p["noise_hu"]))
    noise = ndimage.gaussian_filter(rng.standard_normal(grid.shape, dtype=np.float32), (0.0, 0.7, 0.7))
    hu += noise * np.float32(noise_sd / (noise.std() + 1e-6))
    img = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    pad_value = None
    if rng.random() < p["padding_probability"]:
        pad_value = int(rng.choice([-2000, -3024]))
        r = nx * sx / 2
        outside = (X - xa.mean()) ** 2 + (Y - ya.mean()) ** 2 > r ** 2
        img[np.broadcast_to(outside, grid.shape)] = pad_value
    info = {"body_width_mm": round(width, 2), "slice_spacing_mm": sz, "pixel_spacing_mm": sx,
            "flip_z": grid.flip[2] == -1, "noise_hu": round(noise_sd, 2), "psf_sigma_xy_mm": round(sig_xy, 3),
            "padding_value": pad_value, "n_vessel_pieces": len(vessels), "n_airway_pieces": len(vis_air)}
    lungs = np.where(lung, lab, 0).astype(np.uint8)
    return ScanResult(grid, img, lungs, nod_lab, nodules, candidates, info)


def _place_nodules(rng, grid: ScanGrid, thorax: Thorax, lab, lung, vessels: Tubes, shapes, n_nodules, hu, tex, p):
    """Place and paint nodules; returns (records, label volume). Edits ``hu`` in place."""
    sz, sy, sx = grid.spacing
    ds = 2
    edt = ndimage.distance_transform_edt(lung[:, ::ds, ::ds], sampling=(sz, ds * sy, ds * sx))
    za, ya, xa = grid.axes()
    nod_lab = np.zeros(grid.shape, np.uint8)
    placed: list[PlacedNodule] = []
    probs = p["placement_probabilities"]
    kinds = list(probs)
    w = np.array([probs[k] for k in kinds], float)
    vr = np.minimum(vessels.r0, vessels.r1)
    vmid = 0.5 * (vessels.p0 + vessels.p1)
    for shape in shapes[:n_nodules]:
        kind = kinds[rng.choice(len(kinds), p=w / w.sum())]
        rn = shape.radius_mm
        req = max(shape.diameter_mm / 2, 1.0)
        zlim = (za.min() + rn + 4, za.max() - rn - 4)
        centre = None
        for attempt in range(40):
            k = kind if attempt < 25 else "isolated"
            if k == "juxtavascular":
                ok = (vr >= 0.8) & (vmid[:, 2] > zlim[0]) & (vmid[:, 2] < zlim[1])
                cand = np.flatnonzero(ok)
                if len(cand) == 0:
                    continue
                i = int(rng.choice(cand))
                t = rng.uniform(0.2, 0.8)
                a = vessels.p0[i] + t * (vessels.p1[i] - vessels.p0[i])
                d = vessels.p1[i] - vessels.p0[i]
                d /= np.linalg.norm(d) + 1e-9
                side = rng.normal(size=3)
                side -= side.dot(d) * d
                side /= np.linalg.norm(side) + 1e-9
                c = a + side * (0.85 * req + vr[i])
                kji = np.round(grid.to_index(c)).astype(int)
                if np.any(kji < 0) or np.any(kji >= grid.shape):
                    continue
                e = edt[kji[0], min(kji[1] // ds, edt.shape[1] - 1), min(kji[2] // ds, edt.shape[2] - 1)]
                if e < 0.9 * rn + 1.0:
                    continue
            else:
                lo, hi = (rn + 2.0, np.inf) if k == "isolated" else (0.45 * req, 0.75 * req + 0.5)
                zk = np.clip(np.sort(np.round(grid.to_index(np.array([[0, 0, zlim[0]], [0, 0, zlim[1]]]))[:, 0]).astype(int)), 0, grid.shape[0] - 1)
                sub = edt[zk[0]:zk[1] + 1]
                cand = np.flatnonzero((sub >= lo) & (sub <= hi))
                if len(cand) == 0:
                    continue
                kk, jj, ii = np.unravel_index(int(rng.choice(cand)), sub.shape)
                c = grid.to_world(np.array([kk + zk[0], jj * ds, ii * ds], float))
            if any(np.linalg.norm(c - q.centre) < rn + q.shape.radius_mm + 4.0 for q in placed):
                continue
            centre = c
            kind = k
            break
        if centre is None:
            continue
        ntype = nodule_type(shape.texture)
        hu_solid = float(rng.uniform(*p["solid_hu"]))
        hu_ggo = float(rng.uniform(*p["ground_glass_hu"]))
        nod = PlacedNodule(shape, np.asarray(centre, float), random_rotation(rng), kind, hu_solid, hu_ggo)
        sl, f = occupancy(grid, nod)
        if sl is None:
            continue
        in_lung = lung[sl]
        truth = (f >= 0.5) & in_lung
        if not truth.any():  # a tiny nodule between slice centres: keep its best voxel
            f_l = np.where(in_lung, f, 0)
            if f_l.max() <= 0:
                continue
            truth = f_l == f_l.max()
        label = len(placed) + 1
        nod.label = label
        box_lab = nod_lab[sl]
        box_lab[truth] = label
        fl = np.where(in_lung, f, 0).astype(np.float32)
        h = hu[sl]
        t = tex[sl]
        if ntype == "solid":
            h += fl * (hu_solid + 15.0 * t - h)
        else:
            ggo = h + fl * (hu_ggo + 20.0 * t - h)
            h[...] = np.maximum(h, ggo)  # vessels stay visible through ground glass
            if ntype == "part-solid":
                _, fc = occupancy(grid, nod, which="core")
                fc = np.where(in_lung, fc, 0).astype(np.float32)
                h += fc * (hu_solid + 15.0 * t - h)
        kji = np.argwhere(box_lab == label) + np.array([s.start for s in sl])
        nod.centroid_world = grid.to_world(kji.mean(axis=0))
        nod.n_voxels = int(len(kji))
        placed.append(nod)
    records = [{
        "label": q.label, "coord_mm": [float(v) for v in q.centroid_world], "diameter_mm": q.shape.diameter_mm,
        "texture": q.shape.texture, "nodule_type": nodule_type(q.shape.texture), "placement": q.placement,
        "radius_mm": q.shape.radius_mm, "voxels": q.n_voxels, "lidc_outline": q.shape.source,
    } for q in placed]
    return records, nod_lab


def _candidates(rng, grid: ScanGrid, thorax: Thorax, lab, vessels: Tubes, airways: Tubes, nodules, p):
    """LUNA16-style candidate rows: class 1 near each nodule, class 0 on mimics.

    Class 0 sit on vessel branch points and vessel segments, airway walls, fissures, the
    pleura and random parenchyma — at least (nodule radius + 8 mm) from every nodule.
    """
    za, ya, xa = grid.axes()
    zmin, zmax = float(za.min()) + 4, float(za.max()) - 4
    rows: list[tuple[float, float, float, int]] = []
    for n in nodules:
        c = np.array(n["coord_mm"])
        for _ in range(int(rng.integers(1, 4))):
            q = c + rng.normal(size=3) * 0.15 * max(n["diameter_mm"] / 2, 1.0)
            rows.append((float(q[0]), float(q[1]), float(q[2]), 1))
    cen = np.array([n["coord_mm"] for n in nodules]).reshape(-1, 3)
    keep_r = np.array([n["radius_mm"] + 8.0 for n in nodules])

    def far(pts):
        if len(pts) == 0:
            return pts
        ok = (pts[:, 2] > zmin) & (pts[:, 2] < zmax)
        if len(cen):
            d = np.linalg.norm(pts[:, None, :] - cen[None], axis=2)
            ok &= np.all(d > keep_r[None], axis=1)
        lung_ok = thorax.lung_label(pts[:, 0], pts[:, 1], pts[:, 2]) > 0
        return pts[ok & lung_ok]

    n0 = int(p["class0_per_scan"])
    pools = []
    # vessel branch points and mid-segments (the classic false positives)
    big = np.flatnonzero(np.minimum(vessels.r0, vessels.r1) >= 0.7)
    pools.append((far(vessels.p1[big] + rng.normal(size=(len(big), 3)) * 0.3), int(0.55 * n0)))
    # airway walls
    if len(airways):
        d = airways.p1 - airways.p0
        d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-9
        s = rng.normal(size=d.shape)
        s -= (s * d).sum(1, keepdims=True) * d
        s /= np.linalg.norm(s, axis=1, keepdims=True) + 1e-9
        mid = 0.5 * (airways.p0 + airways.p1) + s * (airways.r0[:, None] * 1.08 + 0.15)
        pools.append((far(mid), int(0.1 * n0)))
    # fissures, pleura and parenchyma, from lung voxels
    lung_idx = np.argwhere((lab == RIGHT_LUNG) | (lab == LEFT_LUNG))
    if len(lung_idx):
        pick = lung_idx[rng.choice(len(lung_idx), size=min(len(lung_idx), 4000), replace=False)]
        pts = grid.to_world(pick.astype(float))
        Zp, Yp, Xp = pts[:, 2], pts[:, 1], pts[:, 0]
        fiss = thorax.fissure_occupancy(Xp, Yp, Zp, thorax.lung_label(Xp, Yp, Zp), 0.0) > 0.5
        pleura = thorax.lung_label(Xp + 3, Yp, Zp) != thorax.lung_label(Xp - 3, Yp, Zp)
        pleura |= thorax.lung_label(Xp, Yp + 3, Zp) != thorax.lung_label(Xp, Yp - 3, Zp)
        pools.append((far(pts[fiss]), int(0.1 * n0)))
        pools.append((far(pts[pleura]), int(0.15 * n0)))
        pools.append((far(pts[~fiss & ~pleura]), n0 - int(0.55 * n0) - 2 * int(0.1 * n0) - int(0.15 * n0)))
    for pts, k in pools:
        if len(pts) == 0 or k <= 0:
            continue
        sel = rng.choice(len(pts), size=min(k, len(pts)), replace=False)
        rows += [(float(q[0]), float(q[1]), float(q[2]), 0) for q in pts[sel]]
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]
