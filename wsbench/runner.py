"""The runner: one evaluation protocol for every method.

``run(RunConfig(...))`` does, in order:

1. load the benchmark definition and build every plugin with its options — a bad option, an
   unknown name or a missing dependency fails here, before any work;
2. ``dataset.prepare`` (cached on disk), then train or load the predictor / generator through
   the checkpoint cache (:mod:`wsbench.checkpoints`);
3. segment every **validation** case, fit the binarisation rule on those maps and masks only;
4. segment every **test** case, binarise with the fitted rule, score with
   :func:`wsbench.metrics.evaluate`, append the record to ``<out>/cases.jsonl``;
5. aggregate (:func:`wsbench.stats.aggregate`) and write ``<out>/results.json`` atomically.

Rerunning the same configuration into the same ``out_dir`` resumes: stored validation maps and
finished test cases are reused; torch is seeded per case (``derive_seed(seed, case_id)``), so
a resumed run gives the same per-case metrics as an uninterrupted one. An exception raised by a
plugin on one case is recorded (one line in the record, the traceback in ``<out>/errors.log``)
and scored as a failure; the run goes on.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsbench import __version__, plugins
from wsbench.benchmark import DEFAULT_BENCHMARK, Benchmark, load_benchmark
from wsbench.checkpoints import cache_key, fit_or_load
from wsbench.data.types import Case
from wsbench.errors import WsbenchError
from wsbench.progress import Progress, ensure
from wsbench.results import SCHEMA_VERSION, CaseJournal, git_hash, write_json_atomic
from wsbench.seeding import derive_seed, seed_everything

DEFAULT_PREDICTOR = "cnn3d"
DEFAULT_GENERATOR = "rflow"
ROLES_WITH_OPTIONS = ("segmenter", "predictor", "generator", "dataset", "binarization")


@dataclass
class RunConfig:
    """Everything that defines a run (what ``wsbench run`` parses its flags into).

    ``options`` maps a role (``segmenter``, ``predictor``, ``generator``, ``dataset``,
    ``binarization``) to that plugin's options; values may be strings (coerced) or typed.
    ``limit`` caps the number of validation and test cases each (quick runs); it is part of the
    run's identity, since the fitted binarisation depends on it.
    """

    segmenter: str
    predictor: str | None = None
    generator: str | None = None
    benchmark: str = DEFAULT_BENCHMARK
    dataset: str | None = None
    data_dir: str | None = None
    seed: int = 0
    device: str = "auto"
    limit: int | None = None
    out_dir: str | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: bool = True
    retrain: bool = False
    command: str | None = None

    def identity(self) -> dict[str, Any]:
        """The fields that must match for a run directory to be resumed."""
        d = asdict(self)
        for k in ("out_dir", "progress", "retrain", "command", "device"):
            d.pop(k)
        return json.loads(json.dumps(d, sort_keys=True, default=str))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WsbenchError(f"--device {device} requested but CUDA is not available here; use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise WsbenchError(f"bad --device '{device}': {e}; use cpu, cuda, cuda:N or auto") from None


def _plugin_record(plugin, info, ckpt: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "name": plugin.name, "distribution": info.distribution, "version": info.version,
        "options": plugin.options_dict(), "changed_options": plugin.changed_options(),
        "provenance": plugin.provenance(),
        "training": (ckpt or {}).get("training"), "checkpoint_sha256": (ckpt or {}).get("sha256"),
    }


@dataclass
class Session:
    """Built plugins and prepared data: what ``run`` and ``wsbench train`` share."""

    config: RunConfig
    benchmark: Benchmark
    device: torch.device
    dataset: Any
    dataset_info: Any
    segmenter: Any = None
    segmenter_info: Any = None
    predictor: Any = None
    predictor_info: Any = None
    generator: Any = None
    generator_info: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_session(cfg: RunConfig, *, need_segmenter: bool = True) -> Session:
    """Step 1: resolve names and validate every option; no data is touched yet."""
    unknown = set(cfg.options) - set(ROLES_WITH_OPTIONS)
    if unknown:
        raise WsbenchError(f"options for unknown role(s) {', '.join(sorted(unknown))}; "
                           f"use -o ROLE.KEY=VALUE with ROLE one of {', '.join(ROLES_WITH_OPTIONS)}")
    device = resolve_device(cfg.device)
    bench = load_benchmark(cfg.benchmark)
    ds_name = cfg.dataset or bench.dataset
    ds_info = plugins.get("dataset", ds_name)
    ds_opts = dict(bench.dataset_options) if ds_name == bench.dataset else {}
    if cfg.data_dir is not None:
        ds_opts["data_dir"] = cfg.data_dir
    ds_opts.update(cfg.options.get("dataset", {}))
    dataset = ds_info.cls(ds_opts, seed=cfg.seed)
    s = Session(cfg, bench, device, dataset, ds_info)

    if need_segmenter:
        s.segmenter_info = plugins.get("segmenter", cfg.segmenter)
        seg_cls = s.segmenter_info.cls
        s.segmenter = seg_cls(cfg.options.get("segmenter", {}), device=device, seed=cfg.seed)
        pred_name = cfg.predictor or (DEFAULT_PREDICTOR if seg_cls.needs_predictor else None)
        gen_name = cfg.generator or (DEFAULT_GENERATOR if seg_cls.needs_generator else None)
        if not seg_cls.needs_predictor:
            pred_name = None
        if not seg_cls.needs_generator:
            gen_name = None
    else:
        pred_name, gen_name = cfg.predictor, cfg.generator
    if pred_name:
        s.predictor_info = plugins.get("predictor", pred_name)
        s.predictor = s.predictor_info.cls(cfg.options.get("predictor", {}), device=device, seed=cfg.seed)
    if gen_name:
        s.generator_info = plugins.get("generator", gen_name)
        s.generator = s.generator_info.cls(cfg.options.get("generator", {}), device=device, seed=cfg.seed)
    return s


def prepare(s: Session, progress: Progress) -> None:
    """Step 2a: read / build / cache the data."""
    t = time.perf_counter()
    s.dataset.prepare(s.benchmark.geometry, progress)
    s.timings["prepare_s"] = time.perf_counter() - t


def train_or_load(s: Session, role: str, progress: Progress) -> dict[str, Any] | None:
    """Step 2b: fit ``role``'s plugin on the training view, or load its cached checkpoint."""
    plugin = getattr(s, role)
    info = getattr(s, f"{role}_info")
    if plugin is None:
        return None
    if not plugin.needs_fit():
        plugin.to(s.device).eval()
        s.timings[f"train_{role}_s"] = 0.0
        return None
    geometry = s.benchmark.geometry

    def train_fn():
        seed_everything(derive_seed(s.config.seed, "fit", role, plugin.name))
        train = s.dataset.training_patches("train", geometry)
        val = s.dataset.training_patches("validation", geometry)
        plugin.to(s.device)
        return plugin.fit(train, val, progress)

    key = cache_key(plugin, s.dataset.name, s.dataset.fingerprint(), s.dataset.split_info(),
                    geometry.to_dict(), info.version)
    ck = fit_or_load(plugin, key, train_fn, retrain=s.config.retrain)
    plugin.to(s.device).eval()
    progress.log(f"{role} '{plugin.name}': {'loaded cached checkpoint' if ck['cached'] else 'trained and cached'}"
                 f" {ck['path']}")
    s.timings[f"train_{role}_s"] = 0.0 if ck["cached"] else ck["seconds"]
    s.checkpoints[role] = ck
    return ck


def _segment(s: Session, case: Case) -> np.ndarray:
    """Score map of one case, validated: ``(D, H, W)`` float32, finite."""
    seed_everything(derive_seed(s.config.seed, case.case_id))
    x = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))[None, None].to(s.device)
    out = s.segmenter.segment(x, s.predictor, s.generator)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"segment() returned {type(out).__name__}, expected a torch.Tensor")
    expected = (1, *case.image.shape)
    if tuple(out.shape) != expected:
        raise ValueError(f"segment() returned shape {tuple(out.shape)}, expected {expected}")
    score = out.detach().float().cpu().numpy()[0]
    if not np.isfinite(score).all():
        raise ValueError(f"segment() returned {int((~np.isfinite(score)).sum())} non-finite values")
    return score


def _save_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def _limited(cases, limit: int | None) -> list[Case]:
    out = []
    for c in cases:
        if limit is not None and len(out) >= limit:
            break
        out.append(c)
    return out


def default_out_dir(cfg: RunConfig, s: Session) -> Path:
    parts = [s.segmenter.name, s.predictor.name if s.predictor else "none",
             s.generator.name if s.generator else "none", f"seed{cfg.seed}"]
    return Path("results") / s.benchmark.name / "--".join(parts)


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run one benchmark configuration end to end; returns the results dict (also on disk)."""
    from wsbench import binarize, metrics, stats

    started = time.perf_counter()
    s = build_session(cfg)
    out = Path(cfg.out_dir) if cfg.out_dir else default_out_dir(cfg, s)
    out.mkdir(parents=True, exist_ok=True)
    ident_path = out / "config.json"
    # Resolved options (defaults included) and plugin versions are part of the identity: a
    # changed default must not silently resume cases computed under the old one.
    ident = {**cfg.identity(), "resolved": {
        role: {"name": p.name, "version": info.version, "options": p.options_dict()}
        for role, p, info in (("segmenter", s.segmenter, s.segmenter_info), ("predictor", s.predictor, s.predictor_info),
                              ("generator", s.generator, s.generator_info), ("dataset", s.dataset, s.dataset_info))
        if p is not None}}
    ident = json.loads(json.dumps(ident, sort_keys=True, default=str))
    if ident_path.exists():
        old = json.loads(ident_path.read_text())
        if old != ident:
            diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
            raise WsbenchError(f"{out} holds a run with a different configuration (differs in: {', '.join(diff)}); "
                               f"use another --out or delete that folder")
    else:
        write_json_atomic(ident_path, ident)
    (out / "maps" / "validation").mkdir(parents=True, exist_ok=True)
    (out / "maps" / "test").mkdir(parents=True, exist_ok=True)
    errlog = out / "errors.log"
    journal = CaseJournal(out / "cases.jsonl")
    geometry = s.benchmark.geometry

    with Progress(enabled=cfg.progress) as progress:
        prepare(s, progress)
        fp_path = out / "dataset_fingerprint"
        fp = s.dataset.fingerprint()
        if fp_path.exists() and fp_path.read_text().strip() != fp:
            raise WsbenchError(f"{out} holds a run on other data (dataset fingerprint {fp_path.read_text().strip()} "
                               f"!= {fp}); use another --out or delete that folder")
        fp_path.write_text(fp + "\n")
        for role in ("predictor", "generator"):
            train_or_load(s, role, progress)
        if s.segmenter is not None:
            s.segmenter.to(s.device)

        failures: list[dict[str, Any]] = []

        def record_failure(case: Case, split: str, exc: BaseException) -> str:
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            with open(errlog, "a") as f:
                f.write(f"=== {split} {case.case_id} ===\n{''.join(traceback.format_exception(exc))}\n")
            failures.append({"case_id": case.case_id, "split": split, "error": msg})
            return msg

        # -- validation: score maps for the binarisation rule -----------------------------------
        t = time.perf_counter()
        val_cases = _limited(s.dataset.cases("validation", geometry), cfg.limit)
        val_maps, val_masks = [], []
        with progress.task(f"validation ({s.segmenter.name})", total=len(val_cases)) as task:
            for case in val_cases:
                p = out / "maps" / "validation" / f"{case.case_id}.npz"
                if p.exists():
                    score = np.load(p)["score"]
                else:
                    try:
                        score = _segment(s, case)
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:  # one case's failure must not end the run
                        record_failure(case, "validation", e)
                        task.advance(1)
                        continue
                    _save_npz(p, score=score.astype(np.float32))
                val_maps.append(score)
                val_masks.append(case.mask.astype(bool))
                task.advance(1)
        s.timings["validation_s"] = time.perf_counter() - t
        if not val_maps:
            raise WsbenchError(f"no validation case could be segmented ({len(failures)} failed; see {errlog}); "
                               "the binarisation rule cannot be fitted")
        binar_opts = {**s.benchmark.binarization_options, **cfg.options.get("binarization", {})}
        binarizer = binarize.fit_binarizer(s.benchmark.binarization_rule, binar_opts, val_maps, val_masks)
        write_json_atomic(out / "binarization.json", binarizer.to_dict())

        # -- test: score, binarise, evaluate; one journal line per finished case ----------------
        t = time.perf_counter()
        test_cases = _limited(s.dataset.cases("test", geometry), cfg.limit)
        tol = float(s.benchmark.metrics.get("surface_dice_tolerance_mm", 1.0))
        n_done_before = sum(1 for c in test_cases if c.case_id in journal)
        with progress.task(f"test ({s.segmenter.name})", total=len(test_cases)) as task:
            task.advance(n_done_before)
            for case in test_cases:
                if case.case_id in journal:
                    continue
                t_case = time.perf_counter()
                rec: dict[str, Any] = {"case_id": case.case_id, "split": "test", "info": case.info}
                try:
                    score = _segment(s, case)
                    pred = binarizer.apply(score)
                    rec["status"], rec["error"] = "ok", None
                    rec["metrics"] = metrics.evaluate(pred, case.mask, case.spacing, tolerance_mm=tol)
                    _save_npz(out / "maps" / "test" / f"{case.case_id}.npz", image=case.image.astype(np.float32),
                              score=score.astype(np.float32), pred=pred, truth=case.mask.astype(bool),
                              spacing=np.asarray(case.spacing, dtype=np.float64))
                except KeyboardInterrupt:
                    raise
                except Exception as e:
                    rec["status"], rec["error"] = "failed", record_failure(case, "test", e)
                    truth_ml = float(case.mask.sum()) * float(np.prod(case.spacing)) / 1000.0
                    rec["metrics"] = metrics.failure_metrics(case.image.shape, case.spacing, truth_volume_ml=truth_ml)
                rec["seconds"] = time.perf_counter() - t_case
                journal.append(rec)
                task.advance(1, dice=f"{rec['metrics']['dice']:.3f}")
        s.timings["test_s"] = time.perf_counter() - t

    records = journal.ordered([c.case_id for c in test_cases])
    for rec in records:  # failures from an earlier, interrupted invocation
        if rec["status"] == "failed" and not any(f["case_id"] == rec["case_id"] and f["split"] == "test"
                                                 for f in failures):
            failures.append({"case_id": rec["case_id"], "split": "test", "error": rec["error"]})
    secs = [r["seconds"] for r in records]
    s.timings["seconds_per_case"] = float(np.mean(secs)) if secs else 0.0
    s.timings["total_s"] = time.perf_counter() - started
    results = {
        "schema_version": SCHEMA_VERSION,
        "wsbench_version": __version__,
        "git_hash": git_hash(),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": cfg.command or "wsbench.runner.run(" + json.dumps(cfg.identity(), sort_keys=True) + ")",
        "device": str(s.device),
        # CPU float reductions depend on the thread count: bit-identical reruns need the same one
        "torch_threads": torch.get_num_threads(),
        "seed": cfg.seed,
        "limit": cfg.limit,
        "benchmark": s.benchmark.to_dict(),
        "dataset": {"name": s.dataset.name, "options": s.dataset.options_dict(),
                    "fingerprint": s.dataset.fingerprint(), "split": s.dataset.split_info(),
                    "skipped": list(s.dataset.skipped())},
        "plugins": {
            "segmenter": _plugin_record(s.segmenter, s.segmenter_info, None),
            "predictor": _plugin_record(s.predictor, s.predictor_info, s.checkpoints.get("predictor"))
            if s.predictor else None,
            "generator": _plugin_record(s.generator, s.generator_info, s.checkpoints.get("generator"))
            if s.generator else None,
        },
        "binarization": {**binarizer.to_dict(), "fitted_on": "validation"},
        "cases": records,
        "aggregate": stats.aggregate(records, seed=cfg.seed),
        "timings": {k: float(v) for k, v in s.timings.items()},
        "failures": failures,
        "complete": len(records) == len(test_cases),
    }
    write_json_atomic(out / "results.json", results)
    results["_out_dir"] = str(out)
    return results


def command_line() -> str:
    return shlex.join(["wsbench", *sys.argv[1:]])
