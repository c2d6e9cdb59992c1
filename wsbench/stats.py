"""Aggregate statistics over per-case records: summaries, bootstrap CIs, diameter strata.

Every test case counts: a failed case carries worst-case metrics
(:func:`wsbench.metrics.failure_metrics`) and an empty prediction carries the documented
worst-case distances, so neither is dropped nor turned into a NaN that an average hides.

Output of :func:`aggregate` (JSON-able, deterministic for a given ``seed``, NaN-free)::

    {"n_cases", "n_ok", "n_failed", "n_empty_predictions",   # empty among the *ok* cases
     "dice" | "msd_mm" | "masd_mm" | "hd95_mm" | "surface_dice":
         {"n", "mean", "std", "median", "q1", "q3", "ci95": [lo, hi]},
     "hit_rate",
     "by_diameter": {"<6" | "6-10" | "10-20" | ">=20" [| "unknown"]: {same keys, per stratum}},
     "by_nodule_type": {...}  (only when records carry ``info.nodule_type``),
     "bootstrap": {"n_boot", "seed", "method"}}

``std`` is the sample standard deviation (``ddof=1``; ``None`` for fewer than two cases);
``q1``/``q3`` are the 25th/75th percentiles (linear interpolation); ``ci95`` is the percentile
bootstrap of the mean (``n_boot`` resamples of the cases with replacement, seeded). A stratum
without cases has ``n_cases = 0`` and ``None`` in place of every summary.

Example::

    >>> recs = [{"case_id": str(i), "status": "ok", "info": {"diameter_mm": d},
    ...          "metrics": {"dice": v, "msd_mm": 1.0, "hd95_mm": 2.0, "surface_dice": v, "hit": v > 0,
    ...                      "empty_prediction": v == 0}}
    ...         for i, (d, v) in enumerate([(4, 0.0), (8, 0.5), (12, 0.7), (25, 0.9)])]
    >>> a = aggregate(recs, n_boot=200)
    >>> a["n_cases"], a["n_empty_predictions"], a["dice"]["mean"], a["by_diameter"]["<6"]["dice"]["mean"]
    (4, 1, 0.525, 0.0)
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from wsbench.errors import DataError

__all__ = ["SUMMARY_METRICS", "DIAMETER_BINS", "aggregate", "summarize", "bootstrap_ci", "diameter_stratum"]

#: Metrics summarised by :func:`aggregate` (keys of :func:`wsbench.metrics.evaluate`).
SUMMARY_METRICS = ("dice", "msd_mm", "masd_mm", "hd95_mm", "surface_dice")

#: Diameter strata in mm: (label, lower bound inclusive, upper bound exclusive).
DIAMETER_BINS = (("<6", 0.0, 6.0), ("6-10", 6.0, 10.0), ("10-20", 10.0, 20.0), (">=20", 20.0, math.inf))


def diameter_stratum(diameter_mm: float | None) -> str:
    """The stratum label of a nodule diameter (``"unknown"`` if missing or not a number).

    >>> diameter_stratum(5.99), diameter_stratum(6.0), diameter_stratum(20), diameter_stratum(None)
    ('<6', '6-10', '>=20', 'unknown')
    """
    try:
        d = float(diameter_mm)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "unknown"
    if not math.isfinite(d):
        return "unknown"
    for label, lo, hi in DIAMETER_BINS:
        if lo <= d < hi:
            return label
    return "<6"  # negative diameters cannot occur in valid data; keep them visible in the smallest bin


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap confidence interval of the mean, ``[lo, hi]``; ``None`` if empty.

    Resamples the cases with replacement ``n_boot`` times (``numpy.random.default_rng(seed)``).

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    [1.0, 1.0]
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // max(v.size, 1))  # bound memory for large case counts
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        means[start:stop] = v[rng.integers(0, v.size, size=(stop - start, v.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return [float(lo), float(hi)]


def summarize(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """``{"n", "mean", "std", "median", "q1", "q3", "ci95"}`` of one metric (``None`` when empty).

    >>> summarize([0.0, 1.0], n_boot=10)["q3"]
    0.75
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "std": None, "median": None, "q1": None, "q3": None, "ci95": None}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else None,
        "median": float(med),
        "q1": float(q1),
        "q3": float(q3),
        "ci95": bootstrap_ci(v, n_boot, seed),
    }


def _check(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(records):
        cid = r.get("case_id", f"#{i}") if isinstance(r, dict) else f"#{i}"
        if not isinstance(r, dict) or not isinstance(r.get("metrics"), dict):
            raise DataError(f"case record {cid} has no 'metrics' object; a failed case must carry "
                            "wsbench.metrics.failure_metrics(...)")
        m = r["metrics"]
        for k in SUMMARY_METRICS:
            if k in m:
                v = m[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise DataError(f"case record {cid}: metric '{k}' is {v!r}, expected a finite number")
        out.append(r)
    return out


def _group(records: list[dict[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    failed = [r for r in records if r.get("status") == "failed"]
    ok = [r for r in records if r.get("status") != "failed"]
    out: dict[str, Any] = {
        "n_cases": len(records),
        "n_ok": len(ok),
        "n_failed": len(failed),
        "n_empty_predictions": sum(1 for r in ok if bool(r["metrics"].get("empty_prediction", False))),
    }
    for k in SUMMARY_METRICS:
        vals = [float(r["metrics"][k]) for r in records if k in r["metrics"]]
        out[k] = summarize(vals, n_boot, seed)
    hits = [bool(r["metrics"]["hit"]) for r in records if "hit" in r["metrics"]]
    out["hit_rate"] = float(np.mean(hits)) if hits else None
    return out


def aggregate(records: Iterable[dict[str, Any]], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Aggregate per-case records (runner format) into JSON-able statistics.

    ``records``: dicts with ``case_id``, ``status`` ("ok"/"failed"), ``info`` (``diameter_mm``,
    optionally ``nodule_type``) and ``metrics`` (keys of :func:`wsbench.metrics.evaluate`).
    Failed cases are included with their worst-case metrics and counted in ``n_failed``;
    ``n_empty_predictions`` counts ok cases whose prediction was empty. Deterministic for a
    given ``seed``. A record without metrics, or with a non-finite metric, raises
    :class:`~wsbench.errors.DataError` naming the case.
    """
    recs = _check(records)
    out = _group(recs, n_boot, seed)
    strata: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in DIAMETER_BINS}
    for r in recs:
        strata.setdefault(diameter_stratum((r.get("info") or {}).get("diameter_mm")), []).append(r)
    out["by_diameter"] = {label: _group(rs, n_boot, seed) for label, rs in strata.items()}
    types = sorted({str(t) for r in recs if (t := (r.get("info") or {}).get("nodule_type")) is not None})
    if types:
        out["by_nodule_type"] = {t: _group([r for r in recs if str((r.get("info") or {}).get("nodule_type")) == t],
                                           n_boot, seed) for t in types}
    out["bootstrap"] = {"n_boot": int(n_boot), "seed": int(seed), "method": "percentile bootstrap of the mean"}
    return out
