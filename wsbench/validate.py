"""Validate results files: schema, types, consistency and safety.

A results file (:mod:`wsbench.results`) is trusted by the leaderboard only when
:func:`validate_results` finds no problem. The checks, in order:

Schema (versioned)
    Every file carries ``schema_version``. Older versions are upgraded in memory, one step at a
    time, by the functions registered in :data:`UPGRADERS` (``{0: upgrade_0_to_1}``), so files
    written by older wsbench releases still load; a version newer than :data:`CURRENT_SCHEMA`
    is refused ("upgrade wsbench"). Historic example files live in ``tests/data/``.

Types
    Required keys and their JSON types (see :data:`wsbench.results` and CONTRIBUTING.md); every
    per-case record has ``case_id, split, status, error, info, metrics, seconds`` with the metric
    keys of :data:`wsbench.metrics.METRIC_KEYS`; numbers are finite; Dice in ``[0, 1]``;
    distances ``>= 0``.

Consistency
    * the aggregate recomputed with :func:`wsbench.stats.aggregate` from the per-case records
      (with the recorded seed) matches every number stored in ``aggregate`` within
      ``1e-9 * max(1, |x|)``;
    * case ids are unique, failed cases and the ``failures`` list agree,
      ``timings.seconds_per_case`` is the mean of the per-case seconds, and the number of cases
      equals the dataset's recorded test-case count (``dataset.split.cases.test``, if present);
    * when the benchmark definition is known here (``benchmarks/<name>.toml`` or
      ``WSBENCH_BENCHMARK_PATH``): version, geometry and binarisation rule match, and — when it
      carries ``[expected]`` — the dataset fingerprint and the number of test cases match.

Safety
    Names that end up in the leaderboard table or in file names (benchmark, dataset, plugin
    names, versions) must match ``[A-Za-z0-9._+-]{1,64}`` and not start with ``.`` — no
    markdown, HTML, spaces, slashes or ``..``; :func:`submission_path` keeps derived paths
    inside ``leaderboard/submissions/<benchmark>/``.

Example::

    >>> from wsbench.validate import validate_results
    >>> validate_results({"schema_version": 1})[:1]
    ["missing key 'wsbench_version'"]
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

from wsbench.errors import WsbenchError

__all__ = ["CURRENT_SCHEMA", "UPGRADERS", "NAME_RE", "validate_results", "load_results", "upgrade",
           "check_name", "sanitize_name", "submission_name", "submission_path", "recompute_aggregate",
           "structure_problems", "read_json"]

CURRENT_SCHEMA = 1
NAME_MAX = 64
#: Allowed characters of every name that reaches a table cell or a file name.
NAME_RE = re.compile(r"[A-Za-z0-9._+-]{1,%d}" % NAME_MAX)
#: Relative tolerance of the aggregate consistency check.
AGG_TOL = 1e-9

# -- names -------------------------------------------------------------------------------------


def check_name(value: Any, what: str) -> str | None:
    """The problem with ``value`` as a name (``None`` when it is safe).

    >>> check_name("flow-guide", "segmenter") is None
    True
    >>> check_name("<img src=x>", "segmenter")
    "segmenter name '<img src=x>' has characters outside [A-Za-z0-9._+-] (markup or paths are not allowed)"
    """
    if not isinstance(value, str):
        return f"{what} name must be a string, got {type(value).__name__}"
    shown = value if len(value) <= 80 else value[:77] + "..."
    if not value:
        return f"{what} name is empty"
    if len(value) > NAME_MAX:
        return f"{what} name '{shown}' is longer than {NAME_MAX} characters"
    if not NAME_RE.fullmatch(value):
        return f"{what} name {shown!r} has characters outside [A-Za-z0-9._+-] (markup or paths are not allowed)"
    if value.startswith("."):
        return f"{what} name '{shown}' starts with '.'"
    return None


def sanitize_name(value: Any, default: str = "none") -> str:
    """``value`` made safe for a table cell and a file name: every run of other characters
    becomes ``-``, leading dots and dashes are stripped, the length is capped at 64.

    >>> sanitize_name("../../etc/passwd")
    'etc-passwd'
    >>> sanitize_name(None)
    'none'
    """
    if value is None:
        return default
    s = re.sub(r"[^A-Za-z0-9._+-]+", "-", str(value))
    s = re.sub(r"\.{2,}", ".", s).lstrip(".-")[:NAME_MAX].rstrip("-")
    return s or default


def _plugin_name(data: Mapping[str, Any], role: str) -> str | None:
    p = (data.get("plugins") or {}).get(role)
    return p.get("name") if isinstance(p, dict) else None


def submission_name(data: Mapping[str, Any]) -> str:
    """File name of a submission: ``<segmenter>--<predictor>--<generator>--seed<N>[--o<hash>].json``.

    The ``--o<hash>`` suffix (6 hex digits of the sorted JSON of every plugin's
    ``changed_options``) appears only when some option differs from its default, so a run with
    e.g. a longer-trained flow never overwrites the default configuration's row.
    """
    roles = ("segmenter", "predictor", "generator")
    parts = [sanitize_name(_plugin_name(data, r)) for r in roles]
    seed = data.get("seed")
    parts.append(f"seed{int(seed)}" if isinstance(seed, int) and not isinstance(seed, bool) else "seed-none")
    plugs = data.get("plugins") if isinstance(data.get("plugins"), dict) else {}
    changed = {r: plugs[r].get("changed_options") for r in roles
               if isinstance(plugs.get(r), dict) and plugs[r].get("changed_options")}
    if changed:
        parts.append("o" + hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:6])
    return "--".join(parts) + ".json"


def submission_path(submissions_dir: str | Path, data: Mapping[str, Any]) -> Path:
    """Where a results file is filed: ``<submissions_dir>/<benchmark>/<submission_name>``.

    Raises :class:`WsbenchError` if the path would leave ``submissions_dir/<benchmark>`` (it
    cannot with sanitised names; checked anyway, after resolving symlinks).
    """
    root = Path(submissions_dir).resolve()
    bench = sanitize_name((data.get("benchmark") or {}).get("name"), default="unknown")
    folder = (root / bench).resolve()
    path = (folder / submission_name(data)).resolve()
    if not folder.is_relative_to(root) or path.parent != folder:
        raise WsbenchError(f"refusing submission path {path}: it is outside {root / bench}")
    return path


# -- schema versions ---------------------------------------------------------------------------

#: Schema 0 (wsbench 0.0.x): flat per-case metrics, top-level plugin blocks, the benchmark as a
#: bare name with a separate ``geometry``, a bare ``threshold`` instead of a ``binarization``
#: block, and a flat aggregate (``dice_mean``, ``dice_median``, ``msd_median_mm``, ...).
_V0_FLAT_AGGREGATE = {
    "dice_mean": ("dice", "mean"), "dice_median": ("dice", "median"), "dice_std": ("dice", "std"),
    "msd_mean_mm": ("msd_mm", "mean"), "msd_median_mm": ("msd_mm", "median"),
    "hd95_median_mm": ("hd95_mm", "median"), "surface_dice_mean": ("surface_dice", "mean"),
}
_V0_COUNTS = ("n_cases", "n_failed", "n_empty_predictions")


def upgrade_0_to_1(old: dict[str, Any]) -> dict[str, Any]:
    """Schema 0 → 1. The flat aggregate becomes the nested one (only the numbers schema 0 had;
    the consistency check compares those against the recomputed aggregate)."""
    from wsbench.metrics import METRIC_KEYS

    d = copy.deepcopy(old)
    cases = []
    for c in d.get("cases") or []:
        if not isinstance(c, dict):
            cases.append(c)
            continue
        metrics = {k: c.pop(k) for k in list(c) if k in METRIC_KEYS}
        c.setdefault("split", "test")
        c["metrics"] = metrics
        cases.append(c)
    bench_name = d.get("benchmark")
    bench = {"name": bench_name, "version": str(d.pop("benchmark_version", "1")),
             "geometry": d.pop("geometry", None), "metrics": d.pop("metric_settings", {}),
             "binarization": {"rule": d.get("threshold_rule", "val-dice-threshold"), "options": {}}}
    agg_old = d.get("aggregate") if isinstance(d.get("aggregate"), dict) else {}
    agg: dict[str, Any] = {}
    for flat, (metric, stat) in _V0_FLAT_AGGREGATE.items():
        if flat in agg_old:
            agg.setdefault(metric, {})[stat] = agg_old[flat]
    for k in _V0_COUNTS:
        if k in agg_old:
            agg[k] = agg_old[k]
    failures = [{"case_id": c["case_id"], "split": "test", "error": c.get("error")}
                for c in cases if isinstance(c, dict) and c.get("status") == "failed"]
    return {
        "schema_version": 1,
        "wsbench_version": d.get("wsbench_version"),
        "git_hash": d.get("git_hash"),
        "created": d.get("created"),
        "command": d.get("command"),
        "device": d.get("device"),
        "seed": d.get("seed"),
        "limit": d.get("limit"),
        "benchmark": bench,
        "dataset": d.get("dataset"),
        "plugins": {r: d.get(r) for r in ("segmenter", "predictor", "generator")},
        "binarization": {"rule": bench["binarization"]["rule"], "params": {"threshold": d.get("threshold")},
                         "fitted_on": "validation", "n_cases": d.get("n_validation_cases"),
                         "validation_mean_dice": d.get("validation_mean_dice")},
        "cases": cases,
        "aggregate": agg,
        "timings": d.get("timings"),
        "failures": failures,
        "complete": bool(d.get("complete", True)),
        "upgraded_from": 0,
    }


#: ``{version: function}`` turning a version-``version`` document into version ``version + 1``.
UPGRADERS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: upgrade_0_to_1}


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a results document to :data:`CURRENT_SCHEMA` (a new dict; the input is untouched).

    Raises :class:`WsbenchError` for a missing, non-integer or too new ``schema_version``.
    """
    v = data.get("schema_version")
    if not isinstance(v, int) or isinstance(v, bool):
        raise WsbenchError(f"schema_version is {v!r}, expected an integer (0..{CURRENT_SCHEMA})")
    if v > CURRENT_SCHEMA:
        raise WsbenchError(f"schema_version {v} is newer than this wsbench understands ({CURRENT_SCHEMA}); "
                           "upgrade wsbench")
    if v < 0 or any(k not in UPGRADERS for k in range(v, CURRENT_SCHEMA)):
        raise WsbenchError(f"schema_version {v} is not a known results schema (known: 0..{CURRENT_SCHEMA})")
    while v < CURRENT_SCHEMA:
        data = UPGRADERS[v](data)
        v += 1
    return data


# -- type checks -------------------------------------------------------------------------------

_NUM = (int, float)


def _is_num(x: Any) -> bool:
    return isinstance(x, _NUM) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true/false", dict: "an object", list: "a list",
               "num": "a finite number", type(None): "null"}


def _type_ok(x: Any, t: Any) -> bool:
    if t == "num":
        return _is_num(x)
    if t is int:
        return _is_int(x)
    if t is type(None):
        return x is None
    return isinstance(x, t)


def _need(problems: list[str], obj: Mapping[str, Any], key: str, types: Any, where: str = "") -> Any:
    """Check ``obj[key]`` exists with one of ``types``; return it (or None)."""
    types = types if isinstance(types, tuple) else (types,)
    name = f"{where}{key}"
    if key not in obj:
        problems.append(f"missing key '{name}'")
        return None
    v = obj[key]
    if not any(_type_ok(v, t) for t in types):
        problems.append(f"'{name}' must be {' or '.join(_TYPE_NAMES[t] for t in types)}, got {_short(v)}")
        return None
    return v


def _short(v: Any) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 60 else s[:57] + "..."


def _check_plugin(problems: list[str], block: Any, role: str) -> None:
    where = f"plugins.{role}."
    if block is None:
        if role == "segmenter":
            problems.append("'plugins.segmenter' must not be null")
        return
    if not isinstance(block, dict):
        problems.append(f"'plugins.{role}' must be an object or null, got {_short(block)}")
        return
    name = _need(problems, block, "name", str, where)
    if name is not None and (p := check_name(name, role)):
        problems.append(p)
    for k in ("distribution", "version"):
        v = _need(problems, block, k, str, where)
        if v is not None and (p := check_name(v, f"{role} {k}")):
            problems.append(p)
    opts = _need(problems, block, "options", dict, where)
    changed = block.get("changed_options")  # optional (older files lack it): the non-default options
    if changed is not None:
        if not isinstance(changed, dict):
            problems.append(f"'{where}changed_options' must be an object, got {_short(changed)}")
        elif isinstance(opts, dict):
            for k, v in changed.items():
                if k not in opts or opts[k] != v:
                    problems.append(f"'{where}changed_options.{k}' = {_short(v)} disagrees with "
                                    f"'{where}options.{k}' = {_short(opts.get(k))}")
    _need(problems, block, "provenance", dict, where)
    _need(problems, block, "training", (dict, type(None)), where)
    _need(problems, block, "checkpoint_sha256", (str, type(None)), where)


def _check_case(problems: list[str], i: int, c: Any) -> None:
    from wsbench.metrics import METRIC_KEYS

    if not isinstance(c, dict):
        problems.append(f"cases[{i}] must be an object, got {_short(c)}")
        return
    where = f"cases[{i}]."
    cid = _need(problems, c, "case_id", str, where)
    if cid is not None:
        where = f"cases[{i}] ({cid[:60]})."
        if not cid:
            problems.append(f"cases[{i}].case_id is empty")
    split = _need(problems, c, "split", str, where)
    if split is not None and split != "test":
        problems.append(f"'{where}split' is {split!r}; results hold test cases only")
    status = _need(problems, c, "status", str, where)
    error = _need(problems, c, "error", (str, type(None)), where)
    if status is not None and status not in ("ok", "failed"):
        problems.append(f"'{where}status' is {status!r}, expected 'ok' or 'failed'")
    if status == "failed" and not error:
        problems.append(f"'{where}error' must say why a failed case failed")
    m0 = c.get("metrics")
    if status == "failed" and isinstance(m0, dict) and (m0.get("dice") != 0 or m0.get("empty_prediction") is not True):
        problems.append(f"'{where}metrics' of a failed case must be the worst case (Dice 0, empty prediction)")
    if status == "ok" and error is not None:
        problems.append(f"'{where}error' must be null for an ok case")
    info = _need(problems, c, "info", dict, where)
    if info is not None:
        _need(problems, info, "seriesuid", str, where + "info.")
        _need(problems, info, "diameter_mm", "num", where + "info.")
    secs = _need(problems, c, "seconds", "num", where)
    if secs is not None and secs < 0:
        problems.append(f"'{where}seconds' is negative")
    m = _need(problems, c, "metrics", dict, where)
    if m is None:
        return
    for k in METRIC_KEYS:
        if k not in m:
            problems.append(f"missing key '{where}metrics.{k}'")
            continue
        v = m[k]
        if k in ("hit", "empty_prediction", "empty_truth"):
            if not isinstance(v, bool):
                problems.append(f"'{where}metrics.{k}' must be true/false, got {_short(v)}")
        elif not _is_num(v):
            problems.append(f"'{where}metrics.{k}' must be a finite number, got {_short(v)}")
        elif k in ("dice", "surface_dice") and not 0.0 <= v <= 1.0:
            problems.append(f"'{where}metrics.{k}' = {v} is outside [0, 1]")
        elif k.endswith("_mm") and v < 0:
            problems.append(f"'{where}metrics.{k}' = {v} is negative")


def _check_types(d: dict[str, Any]) -> list[str]:
    p: list[str] = []
    _need(p, d, "schema_version", int)
    v = _need(p, d, "wsbench_version", str)
    if v is not None and (e := check_name(v, "wsbench version")):
        p.append(e)
    _need(p, d, "git_hash", (str, type(None)))
    created = _need(p, d, "created", str)
    if created is not None:
        try:
            datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            p.append(f"'created' is {created!r}, not an ISO 8601 time (e.g. 2026-01-31T12:00:00Z)")
    _need(p, d, "command", str)
    dev = _need(p, d, "device", str)
    if dev is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,32}(:[0-9]{1,3})?", dev):
        p.append(f"device {dev[:40]!r} is not a device name such as cpu, cuda or cuda:1")
    _need(p, d, "seed", int)
    if "limit" in d and d["limit"] is not None and not (_is_int(d["limit"]) and d["limit"] >= 1):
        p.append(f"'limit' must be null or a positive integer, got {_short(d['limit'])}")
    b = _need(p, d, "benchmark", dict)
    if b is not None:
        name = _need(p, b, "name", str, "benchmark.")
        if name is not None and (e := check_name(name, "benchmark")):
            p.append(e)
        ver = _need(p, b, "version", str, "benchmark.")
        if ver is not None and (e := check_name(ver, "benchmark version")):
            p.append(e)
        g = _need(p, b, "geometry", dict, "benchmark.")
        if g is not None:
            _need(p, g, "size", int, "benchmark.geometry.")
            _need(p, g, "spacing_mm", "num", "benchmark.geometry.")
            _need(p, g, "max_offset_vox", int, "benchmark.geometry.")
        _need(p, b, "metrics", dict, "benchmark.")
        bb = _need(p, b, "binarization", dict, "benchmark.")
        if bb is not None:
            _need(p, bb, "rule", str, "benchmark.binarization.")
            _need(p, bb, "options", dict, "benchmark.binarization.")
    ds = _need(p, d, "dataset", dict)
    if ds is not None:
        name = _need(p, ds, "name", str, "dataset.")
        if name is not None and (e := check_name(name, "dataset")):
            p.append(e)
        _need(p, ds, "options", dict, "dataset.")
        _need(p, ds, "fingerprint", str, "dataset.")
        _need(p, ds, "split", dict, "dataset.")
    pl = _need(p, d, "plugins", dict)
    if pl is not None:
        for role in ("segmenter", "predictor", "generator"):
            if role not in pl:
                p.append(f"missing key 'plugins.{role}'")
            else:
                _check_plugin(p, pl[role], role)
    bz = _need(p, d, "binarization", dict)
    if bz is not None:
        _need(p, bz, "rule", str, "binarization.")
        params = _need(p, bz, "params", dict, "binarization.")
        if params is not None:
            for k, v in params.items():
                if not (_is_num(v) or isinstance(v, (str, bool)) or v is None):
                    p.append(f"'binarization.params.{k}' must be a number, got {_short(v)}")
        fo = _need(p, bz, "fitted_on", str, "binarization.")
        if fo is not None and fo != "validation":
            p.append(f"'binarization.fitted_on' is {fo!r}; the rule must be fitted on 'validation' only")
        for k, t in (("n_cases", (int, type(None))), ("validation_mean_dice", ("num", type(None)))):
            if k in bz:
                _need(p, bz, k, t, "binarization.")
    cases = _need(p, d, "cases", list)
    if cases is not None:
        for i, c in enumerate(cases):
            _check_case(p, i, c)
    _need(p, d, "aggregate", dict)
    t = _need(p, d, "timings", dict)
    if t is not None:
        for k, v in t.items():
            if not _is_num(v) or v < 0:
                p.append(f"'timings.{k}' must be a non-negative number, got {_short(v)}")
        _need(p, t, "seconds_per_case", "num", "timings.")
    f = _need(p, d, "failures", list)
    if f is not None:
        for i, x in enumerate(f):
            if not isinstance(x, dict) or not isinstance(x.get("case_id"), str) or "error" not in x:
                p.append(f"failures[{i}] must be an object with 'case_id' and 'error', got {_short(x)}")
    _need(p, d, "complete", bool)
    return p


def structure_problems(data: dict[str, Any]) -> list[str]:
    """Schema and type problems only (no consistency checks) of an *upgraded* results dict —
    enough to read the file safely (e.g. for a report of a run on a private benchmark)."""
    return _check_types(data)


# -- consistency -------------------------------------------------------------------------------


def recompute_aggregate(data: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`wsbench.stats.aggregate` of the file's per-case records, with the bootstrap
    settings recorded in ``aggregate.bootstrap`` (else the run's seed and the default count)."""
    from wsbench import stats

    boot = (data.get("aggregate") or {}).get("bootstrap")
    kw: dict[str, Any] = {"seed": data.get("seed", 0)}
    if isinstance(boot, dict):
        if _is_int(boot.get("seed")):
            kw["seed"] = boot["seed"]
        if _is_int(boot.get("n_boot")) and 1 <= boot["n_boot"] <= 100_000:
            kw["n_boot"] = boot["n_boot"]
    return stats.aggregate(list(data["cases"]), **kw)


def _compare(stored: Any, fresh: Any, path: str, out: list[str]) -> None:
    """Every value in ``stored`` must be matched by ``fresh`` (``fresh`` may hold more keys)."""
    if len(out) >= 20:
        return
    if isinstance(stored, dict):
        if not isinstance(fresh, dict):
            out.append(f"aggregate.{path} does not match the recomputed aggregate ({_short(fresh)})")
            return
        for k, v in stored.items():
            sub = f"{path}.{k}" if path else str(k)
            if k not in fresh:
                out.append(f"aggregate.{sub} is not produced by wsbench.stats.aggregate")
            else:
                _compare(v, fresh[k], sub, out)
    elif isinstance(stored, list):
        if not isinstance(fresh, (list, tuple)) or len(fresh) != len(stored):
            out.append(f"aggregate.{path} = {_short(stored)} but recomputed {_short(fresh)}")
            return
        for i, (a, b) in enumerate(zip(stored, fresh)):
            _compare(a, b, f"{path}[{i}]", out)
    elif _is_num(stored) and isinstance(fresh, _NUM) and not isinstance(fresh, bool):
        fresh = float(fresh)
        if not math.isfinite(fresh) or abs(stored - fresh) > AGG_TOL * max(1.0, abs(fresh)):
            out.append(f"aggregate.{path} = {stored!r} but the per-case records give {fresh!r}")
    elif stored != fresh:
        out.append(f"aggregate.{path} = {_short(stored)} but the per-case records give {_short(fresh)}")


def _required_aggregate(d: dict[str, Any]) -> list[str]:
    """Keys the leaderboard reads; schema-0 files (upgraded) carry only part of them."""
    if d.get("upgraded_from") is not None:
        return []
    agg = d["aggregate"]
    p = []
    dice = agg.get("dice")
    if not isinstance(dice, dict):
        return ["missing key 'aggregate.dice'"]
    for k in ("mean", "median", "ci95"):
        if k not in dice:
            p.append(f"missing key 'aggregate.dice.{k}'")
    if "n_cases" not in agg:
        p.append("missing key 'aggregate.n_cases'")
    return p


def _check_consistency(d: dict[str, Any], benchmark: Any = None) -> list[str]:
    p: list[str] = []
    cases = d["cases"]
    ids = [c["case_id"] for c in cases]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        p.append(f"duplicate case ids: {', '.join(dup[:5])}")
    failed = {c["case_id"] for c in cases if c["status"] == "failed"}
    listed = {f["case_id"] for f in d["failures"] if f.get("split", "test") == "test"}
    if failed != listed:
        diff = sorted(failed ^ listed)
        p.append(f"'failures' and the failed cases disagree on: {', '.join(diff[:5])}")
    if cases:
        mean_s = sum(c["seconds"] for c in cases) / len(cases)
        spc = d["timings"]["seconds_per_case"]
        if abs(spc - mean_s) > 1e-6 * max(1.0, mean_s):
            p.append(f"timings.seconds_per_case = {spc} but the per-case seconds average {mean_s}")
    # the dataset's own count of test cases (luna16 / luna16-synth record split.cases.test)
    n_split = (d["dataset"]["split"].get("cases") or {}).get("test") if isinstance(
        d["dataset"]["split"].get("cases"), dict) else None
    if _is_int(n_split):
        want = n_split if d.get("limit") is None else min(n_split, int(d["limit"]))
        if len(cases) != want:
            p.append(f"{len(cases)} test cases, but the dataset's split records {n_split}"
                     + (f" (limit {d['limit']})" if d.get("limit") is not None else ""))
    p.extend(_required_aggregate(d))
    try:
        fresh = recompute_aggregate(d)
    except ImportError as e:
        p.append(f"cannot recompute the aggregate: {e}")
        fresh = None
    except Exception as e:  # a malformed record that slipped through the type checks
        p.append(f"cannot recompute the aggregate from the per-case records: {type(e).__name__}: {e}")
        fresh = None
    if fresh is not None:
        _compare(d["aggregate"], json.loads(json.dumps(fresh, default=float)), "", p)
    p.extend(_check_benchmark(d, benchmark))
    return p


def _check_benchmark(d: dict[str, Any], benchmark: Any) -> list[str]:
    from wsbench.benchmark import available, load_benchmark

    name = d["benchmark"]["name"]
    if benchmark is None:
        if name not in available():
            return [f"benchmark '{name}' is not defined here (no benchmarks/{name}.toml on the search path); "
                    "its expected split cannot be checked"]
        benchmark = load_benchmark(name)
    p = []
    if benchmark.name != name:
        p.append(f"results are for benchmark '{name}', checked against '{benchmark.name}'")
    if str(benchmark.version) != d["benchmark"]["version"]:
        p.append(f"benchmark version {d['benchmark']['version']!r} differs from the definition's "
                 f"{benchmark.version!r}")
    geo = d["benchmark"]["geometry"]
    want = benchmark.geometry.to_dict()
    if {k: geo.get(k) for k in want} != want:
        p.append(f"benchmark.geometry {_short(geo)} differs from the definition's {_short(want)}")
    if d["benchmark"]["metrics"] != dict(benchmark.metrics):
        p.append(f"benchmark.metrics {_short(d['benchmark']['metrics'])} differ from the definition's "
                 f"{_short(dict(benchmark.metrics))}")
    rule = d["binarization"]["rule"]
    if rule != benchmark.binarization_rule:
        p.append(f"binarization rule {rule!r} differs from the benchmark's {benchmark.binarization_rule!r}")
    exp = benchmark.expected or {}
    fp = exp.get("fingerprint")
    if fp is not None and d["dataset"]["fingerprint"] != str(fp):
        p.append(f"dataset fingerprint {d['dataset']['fingerprint']!r} differs from the benchmark's expected "
                 f"{fp!r} (different data or split)")
    n = exp.get("n_test_cases")
    if n is not None:
        limit = d.get("limit")
        want_n = int(n) if limit is None else min(int(n), int(limit))
        if len(d["cases"]) != want_n:
            p.append(f"{len(d['cases'])} test cases, but the benchmark's test split has {want_n}"
                     + (f" (limit {limit})" if limit is not None else ""))
    return p


# -- entry points ------------------------------------------------------------------------------


def read_json(path: Path) -> Any:
    """Parse a results file (a folder means its ``results.json``); :class:`WsbenchError` if unreadable."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise WsbenchError(f"results file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WsbenchError(f"cannot read {path}: {e}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:
        raise WsbenchError(f"{path} is not valid JSON ({e}); is it a wsbench results file?") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _upgraded(data_or_path: Any) -> tuple[dict[str, Any] | None, list[str]]:
    data = read_json(data_or_path) if isinstance(data_or_path, (str, Path)) else data_or_path
    if not isinstance(data, dict):
        return None, [f"a results file is a JSON object, got {type(data).__name__}"]
    if "schema_version" not in data:
        return None, ["missing key 'schema_version' (not a wsbench results file?)"]
    try:
        return upgrade(data), []
    except WsbenchError as e:
        return None, [str(e)]


def validate_results(data_or_path: Any, *, benchmark: Any = None, submission: bool = False) -> list[str]:
    """Problems with a results file or dict (an empty list means valid).

    ``benchmark``: a :class:`wsbench.benchmark.Benchmark` to check against (default: the
    definition named in the file, from the benchmark search path). ``submission=True`` also
    requires a complete run over the whole test split (``complete`` true, no ``limit``), as
    the leaderboard does. A path that cannot be read raises :class:`WsbenchError`.

    >>> validate_results({"schema_version": 7})
    ['schema_version 7 is newer than this wsbench understands (1); upgrade wsbench']
    """
    d, problems = _upgraded(data_or_path)
    if d is None:
        return problems
    problems = _check_types(d)
    if problems:
        return problems
    problems = _check_consistency(d, benchmark)
    if submission:
        if not d["complete"]:
            problems.append("the run is not complete ('complete' is false); finish it before submitting")
        used = d["binarization"].get("options")
        if used is not None:
            want = _resolved_binarization_options(d["binarization"]["rule"], d["benchmark"]["binarization"]["options"])
            if want is None or used != want:
                problems.append(f"binarization options {_short(used)} differ from the benchmark's "
                                f"{_short(want)}; submissions use the benchmark's rule")
        if d.get("limit") is not None:
            problems.append(f"the run used --limit {d['limit']}; submissions must cover the whole test split")
    return problems


def _resolved_binarization_options(rule: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """The benchmark's binarisation options with the rule's defaults filled in (as the runner
    records them), or None if the rule or options are unknown to this wsbench."""
    from wsbench.binarize import Binarizer

    try:
        return json.loads(json.dumps(Binarizer(rule, dict(options), {}).options))
    except WsbenchError:
        return None


def load_results(path: str | Path, *, benchmark: Any = None, submission: bool = False) -> dict[str, Any]:
    """Read, upgrade to :data:`CURRENT_SCHEMA` and validate a results file; raise
    :class:`WsbenchError` naming the file and its first problem(s) if it is not valid."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    raw = read_json(path)
    problems = validate_results(raw, benchmark=benchmark, submission=submission)
    if problems:
        more = f" (and {len(problems) - 3} more; run `wsbench validate {path}`)" if len(problems) > 3 else ""
        raise WsbenchError(f"{path} is not a valid results file: {'; '.join(problems[:3])}{more}")
    return upgrade(raw)
