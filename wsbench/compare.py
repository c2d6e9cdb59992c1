"""Paired comparison of two results files on their shared test cases.

For one metric, :func:`compare` pairs the per-case values of runs A and B by ``case_id`` and
reports the mean of each, the per-case differences ``B - A`` (mean, median, seeded bootstrap
95 % CI of the mean), how often A is better, B is better or they tie, and the two-sided
Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``; zero differences are dropped, its
``wilcox`` convention). Failed cases take part with their worst-case metrics, as in
:func:`wsbench.stats.aggregate`.

"Better" follows the metric: higher for ``dice``, ``surface_dice`` and ``hit``; lower for
the distances ``msd_mm``, ``masd_mm`` and ``hd95_mm``.

Example::

    >>> a = {"schema_version": 1, "cases": [{"case_id": str(i), "status": "ok", "metrics": {"dice": d}}
    ...      for i, d in enumerate([0.1, 0.2, 0.3, 0.4])]}
    >>> b = {"schema_version": 1, "cases": [{"case_id": str(i), "status": "ok", "metrics": {"dice": d}}
    ...      for i, d in enumerate([0.2, 0.4, 0.3, 0.9])]}
    >>> c = compare(a, b, "dice")
    >>> c["n_shared"], c["a_better"], c["ties"], c["b_better"], round(c["mean_diff"], 3)
    (4, 0, 1, 3, 0.2)
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from wsbench.errors import DataError, OptionError
from wsbench.stats import bootstrap_ci, diameter_stratum

__all__ = ["METRICS", "load_results", "compare"]

#: Comparable metrics → True if higher is better.
METRICS: dict[str, bool] = {"dice": True, "surface_dice": True, "hit": True, "msd_mm": False, "masd_mm": False,
                            "hd95_mm": False}

#: Per-case differences at most this large (absolute) count as ties.
TIE_TOL = 1e-9


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a wsbench results JSON (a file, or a run folder holding ``results.json``).

    Raises :class:`~wsbench.errors.DataError` with one line naming the file and the fix when the
    file is missing, not JSON, or not a wsbench results file.
    """
    p = Path(path)
    if p.is_dir():
        if not (p / "results.json").is_file():
            raise DataError(f"{p} is a folder without results.json; pass the results.json of a finished "
                            "`wsbench run` (its --out folder)")
        p = p / "results.json"
    if not p.is_file():
        raise DataError(f"results file {p} does not exist; pass the results.json written by `wsbench run`")
    try:
        data = json.loads(p.read_text())
    except UnicodeDecodeError:
        raise DataError(f"{p} is not a text file; pass the results.json written by `wsbench run`") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{p} is not valid JSON (line {e.lineno}: {e.msg}); pass the results.json written by "
                        "`wsbench run`") from None
    if not isinstance(data, dict) or "schema_version" not in data or not isinstance(data.get("cases"), list):
        raise DataError(f"{p} is not a wsbench results file (no schema_version/cases); pass the results.json "
                        "written by `wsbench run`")
    if data["schema_version"] != 1:
        raise DataError(f"{p} has results schema_version {data['schema_version']!r}; this wsbench reads version 1 "
                        "(upgrade wsbench)")
    for i, c in enumerate(data["cases"]):
        if not isinstance(c, dict) or "case_id" not in c or not isinstance(c.get("metrics"), dict):
            raise DataError(f"{p}: case #{i} lacks case_id or metrics; the file is damaged or hand-edited")
    data.setdefault("_path", str(p))
    return data


def _label(r: dict[str, Any], fallback: str) -> str:
    if "_path" in r:
        return str(r["_path"])
    pl = (r.get("plugins") or {}).get("segmenter") or {}
    return pl.get("name") or fallback


def _values(r: dict[str, Any], metric: str, label: str) -> dict[str, float]:
    out = {}
    for c in r["cases"]:
        if metric not in c["metrics"]:
            raise DataError(f"{label}: case {c['case_id']} has no metric '{metric}'")
        v = float(c["metrics"][metric])
        if not math.isfinite(v):
            raise DataError(f"{label}: case {c['case_id']} has a non-finite '{metric}' ({v})")
        out[str(c["case_id"])] = v
    return out


def _wilcoxon(diff: np.ndarray) -> float | None:
    nz = diff[np.abs(diff) > TIE_TOL]
    if nz.size == 0:
        return 1.0  # no case differs: no evidence of a difference
    from scipy.stats import wilcoxon

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about small samples; the p-value is still exact
        p = float(wilcoxon(nz, zero_method="wilcox", alternative="two-sided").pvalue)
    return p if math.isfinite(p) else None


def compare(a: dict[str, Any], b: dict[str, Any], metric: str = "dice", n_boot: int = 2000,
            seed: int = 0) -> dict[str, Any]:
    """Paired comparison of results ``a`` and ``b`` (dicts as from :func:`load_results`) on one metric.

    Returns a JSON-able dict: ``metric``, ``higher_is_better``, ``label_a``/``label_b``,
    ``n_shared``, ``only_a``/``only_b`` (counts of unpaired cases), ``n_failed_a``/``n_failed_b``
    (among shared), ``mean_a``, ``mean_b``, ``mean_diff`` (B − A), ``median_diff``, ``ci95_diff``,
    ``a_better``, ``ties``, ``b_better``, ``wilcoxon_p``, ``by_diameter`` ({stratum: {n, mean_diff,
    a_better, ties, b_better}}), ``warnings`` (e.g. different benchmarks) and ``cases``
    ([{case_id, diameter_mm, a, b, diff}]). No shared case → :class:`DataError`.
    """
    if metric not in METRICS:
        raise OptionError(f"unknown metric '{metric}' for compare; choose one of {', '.join(METRICS)}")
    la, lb = _label(a, "A"), _label(b, "B")
    va, vb = _values(a, metric, la), _values(b, metric, lb)
    shared = [cid for cid in va if cid in vb]
    if not shared:
        raise DataError(f"{la} and {lb} share no case ids; compare runs of the same benchmark and split")
    higher = METRICS[metric]
    xa = np.array([va[c] for c in shared])
    xb = np.array([vb[c] for c in shared])
    diff = xb - xa
    better_b = diff > TIE_TOL if higher else diff < -TIE_TOL
    better_a = diff < -TIE_TOL if higher else diff > TIE_TOL
    info = {str(c["case_id"]): (c.get("info") or {}) for c in a["cases"]}
    status_a = {str(c["case_id"]): c.get("status") for c in a["cases"]}
    status_b = {str(c["case_id"]): c.get("status") for c in b["cases"]}

    warn = []
    ba, bb = a.get("benchmark") or {}, b.get("benchmark") or {}
    if (ba.get("name"), ba.get("version")) != (bb.get("name"), bb.get("version")):
        warn.append(f"different benchmarks: {ba.get('name')} v{ba.get('version')} vs {bb.get('name')} "
                    f"v{bb.get('version')}")
    fa, fb = (a.get("dataset") or {}).get("fingerprint"), (b.get("dataset") or {}).get("fingerprint")
    if fa and fb and fa != fb:
        warn.append("different dataset fingerprints: the same case id may not be the same case")
    if len(shared) < len(va) or len(shared) < len(vb):
        warn.append(f"only {len(shared)} shared cases ({len(va) - len(shared)} only in A, "
                    f"{len(vb) - len(shared)} only in B)")

    strata: dict[str, list[int]] = {}
    for i, cid in enumerate(shared):
        strata.setdefault(diameter_stratum(info[cid].get("diameter_mm")), []).append(i)
    by_diameter = {}
    for label in ("<6", "6-10", "10-20", ">=20", "unknown"):
        idx = strata.get(label, [])
        if label == "unknown" and not idx:
            continue
        by_diameter[label] = {
            "n": len(idx),
            "mean_diff": float(diff[idx].mean()) if idx else None,
            "a_better": int(better_a[idx].sum()) if idx else 0,
            "ties": int(len(idx) - better_a[idx].sum() - better_b[idx].sum()) if idx else 0,
            "b_better": int(better_b[idx].sum()) if idx else 0,
        }

    return {
        "metric": metric,
        "higher_is_better": higher,
        "label_a": la,
        "label_b": lb,
        "n_shared": len(shared),
        "only_a": len(va) - len(shared),
        "only_b": len(vb) - len(shared),
        "n_failed_a": sum(1 for c in shared if status_a.get(c) == "failed"),
        "n_failed_b": sum(1 for c in shared if status_b.get(c) == "failed"),
        "mean_a": float(xa.mean()),
        "mean_b": float(xb.mean()),
        "mean_diff": float(diff.mean()),
        "median_diff": float(np.median(diff)),
        "ci95_diff": bootstrap_ci(diff, n_boot=n_boot, seed=seed),
        "a_better": int(better_a.sum()),
        "ties": int(len(shared) - better_a.sum() - better_b.sum()),
        "b_better": int(better_b.sum()),
        "wilcoxon_p": _wilcoxon(diff),
        "by_diameter": by_diameter,
        "warnings": warn,
        "cases": [{"case_id": cid, "diameter_mm": info[cid].get("diameter_mm"), "a": float(xa[i]),
                   "b": float(xb[i]), "diff": float(diff[i])} for i, cid in enumerate(shared)],
    }
