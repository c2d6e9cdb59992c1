"""Checkpoint cache for trainable plugins (predictors, generators).

A checkpoint is keyed by everything that changes the fitted weights: the plugin's role, name,
distribution version, training options (``Trainable.training_options``), the dataset's name and
fingerprint, its split, the patch geometry and the seed. With a hit the runner loads it; with a
miss it fits, then saves atomically (a killed training never leaves a half-written checkpoint).
Files live in ``<cache>/checkpoints/<role>-<name>-<key>.pt`` with a JSON sidecar.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from wsbench.interfaces import Plugin, Trainable
from wsbench.paths import cache_dir


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(plugin: Plugin, dataset_name: str, fingerprint: str, split: dict[str, Any],
              geometry: dict[str, Any], version: str) -> str:
    opts = plugin.options_dict()
    keys = getattr(plugin, "training_options", None)
    if keys is not None:
        opts = {k: v for k, v in opts.items() if k in keys}
    payload = json.dumps({
        "role": plugin.role, "name": plugin.name, "version": version, "options": opts,
        "dataset": dataset_name, "fingerprint": fingerprint, "split": split.get("rule", split),
        "geometry": geometry, "seed": plugin.seed,
    }, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def checkpoint_path(plugin: Plugin, key: str, root: Path | None = None) -> Path:
    root = root or cache_dir("checkpoints")
    return root / f"{plugin.role}-{plugin.name}-{key}.pt"


def fit_or_load(plugin, key: str, train_fn, root: Path | None = None,
                retrain: bool = False) -> dict[str, Any]:
    """Load the cached checkpoint for ``key`` or call ``train_fn()`` (→ fit summary) and save.

    Returns ``{"cached": bool, "path": str, "sha256": str, "training": summary, "seconds": s}``.
    """
    assert isinstance(plugin, Trainable)
    path = checkpoint_path(plugin, key, root)
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists() and not retrain:
        t = time.perf_counter()
        plugin.load(path)
        meta = json.loads(meta_path.read_text())
        return {"cached": True, "path": str(path), "sha256": meta.get("sha256") or file_sha256(path),
                "training": meta.get("training"), "seconds": time.perf_counter() - t}
    t = time.perf_counter()
    summary = train_fn()
    seconds = time.perf_counter() - t
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    plugin.save(tmp)
    os.replace(tmp, path)
    sha = file_sha256(path)
    meta = {"role": plugin.role, "name": plugin.name, "options": plugin.options_dict(), "seed": plugin.seed,
            "training": summary, "sha256": sha, "train_seconds": seconds,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmpm = meta_path.with_name(meta_path.name + f".tmp{os.getpid()}")
    tmpm.write_text(json.dumps(meta, indent=2, default=str))
    os.replace(tmpm, meta_path)
    return {"cached": False, "path": str(path), "sha256": sha, "training": summary, "seconds": seconds}
