"""Small, schema-correct results files for the validate / leaderboard / report tests.

Per-case metrics come from :func:`wsbench.metrics.evaluate` on synthetic sphere masks and the
aggregate from :func:`wsbench.stats.aggregate`, exactly as the runner produces them; nothing
is trained. ``write_run`` also writes the runner's per-case maps (``maps/test/<id>.npz``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from wsbench import metrics
from wsbench.benchmark import load_benchmark
from wsbench.binarize import Binarizer

SHAPE = (24, 24, 24)
SPACING = (1.0, 1.0, 1.0)


def _sphere(centre, radius, shape=SHAPE) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def make_case(k: int, quality: float) -> dict[str, Any]:
    """Arrays of case ``k``: a nodule of radius 3..6 voxels, a prediction shifted by ``(1 - quality) * 5``
    voxels (``quality <= 0``: empty prediction), a soft score map and a CT-like image."""
    rng = np.random.default_rng(1000 + k)
    radius = 3 + k % 4
    centre = (12 + rng.integers(-2, 3), 12 + rng.integers(-2, 3), 12 + rng.integers(-2, 3))
    truth = _sphere(centre, radius)
    shift = int(round((1 - quality) * 5))
    pred = _sphere((centre[0], centre[1] + shift, centre[2]), radius) if quality > 0 else np.zeros(SHAPE, bool)
    z, y, x = np.indices(SHAPE)
    d2 = (z - centre[0]) ** 2 + (y - centre[1] - shift) ** 2 + (x - centre[2]) ** 2
    score = np.exp(-d2 / (2.0 * radius ** 2)).astype(np.float32)
    image = (-0.7 + 0.05 * rng.standard_normal(SHAPE)).astype(np.float32)
    image[truth] = 0.4
    return {"image": image, "score": score, "pred": pred, "truth": truth, "spacing": np.asarray(SPACING),
            "diameter_mm": float(2 * radius), "case_id": f"synth-{k:03d}"}


def make_results(segmenter: str = "gradcam", predictor: str | None = "cnn3d", generator: str | None = None,
                 *, n: int = 6, quality: float = 0.8, seed: int = 0, failed: tuple[int, ...] = (),
                 init: str = "scratch", created: str = "2026-12-01T10:00:00Z",
                 cases_out: list | None = None) -> dict[str, Any]:
    """A results dict (schema 1) of ``n`` synthetic test cases; ``failed`` case indices crash."""
    from wsbench import stats

    bench = load_benchmark("luna16-synth")
    records = []
    for k in range(n):
        q = quality - 0.1 * (k % 3)
        arrays = make_case(k, q)
        if cases_out is not None:
            cases_out.append(arrays)
        rec = {"case_id": arrays["case_id"], "split": "test",
               "info": {"seriesuid": f"1.2.826.0.1.{k}", "diameter_mm": arrays["diameter_mm"],
                        "texture": 1 + k % 5, "nodule_type": "solid" if k % 2 else "ground-glass"},
               "seconds": 0.25 + 0.01 * k}
        if k in failed:
            rec.update(status="failed", error="RuntimeError: out of memory",
                       metrics=metrics.failure_metrics(SHAPE, SPACING))
        else:
            rec.update(status="ok", error=None, metrics=metrics.evaluate(arrays["pred"], arrays["truth"], SPACING))
        records.append(json.loads(json.dumps(rec)))

    def plugin(name, version="0.1.0", prov=None):
        if name is None:
            return None
        return {"name": name, "distribution": "wsbench", "version": version, "options": {"a": 1},
                "provenance": prov or {}, "training": {"steps": 10} if prov else None,
                "checkpoint_sha256": "ab" * 32 if prov else None}

    return {
        "schema_version": 1,
        "wsbench_version": "0.1.0",
        "git_hash": None,
        "created": created,
        "command": f"wsbench run --segmenter {segmenter}",
        "device": "cpu",
        "seed": seed,
        "limit": None,
        "benchmark": bench.to_dict(),
        "dataset": {"name": "luna16-synth", "options": {}, "fingerprint": "fp-test-0001",
                    "split": {"test": n}, "skipped": []},
        "plugins": {"segmenter": plugin(segmenter), "predictor": plugin(predictor, prov={"init": init}),
                    "generator": plugin(generator, prov={"init": "scratch"})},
        "binarization": {"rule": bench.binarization_rule, "options": Binarizer(bench.binarization_rule, {}, {}).options,
                         "params": {"threshold": 0.5},
                         "fitted_on": "validation", "n_cases": n, "validation_mean_dice": 0.5},
        "cases": records,
        "aggregate": json.loads(json.dumps(stats.aggregate(records, seed=seed))),
        "timings": {"prepare_s": 1.0, "train_predictor_s": 2.0, "train_generator_s": 0.0, "validation_s": 1.0,
                    "test_s": 1.5, "seconds_per_case": float(np.mean([r["seconds"] for r in records]))},
        "failures": [{"case_id": r["case_id"], "split": "test", "error": r["error"]}
                     for r in records if r["status"] == "failed"],
        "complete": True,
    }


def write_run(out: Path, **kw) -> Path:
    """Write ``results.json`` and ``maps/test/<case_id>.npz`` as the runner does; returns the json path."""
    out = Path(out)
    arrays: list = []
    data = make_results(cases_out=arrays, **kw)
    (out / "maps" / "test").mkdir(parents=True, exist_ok=True)
    failed = {c["case_id"] for c in data["cases"] if c["status"] == "failed"}
    for a in arrays:
        if a["case_id"] in failed:
            continue
        np.savez_compressed(out / "maps" / "test" / f"{a['case_id']}.npz", image=a["image"], score=a["score"],
                            pred=a["pred"], truth=a["truth"], spacing=a["spacing"])
    path = out / "results.json"
    path.write_text(json.dumps(data, indent=1))
    return path
