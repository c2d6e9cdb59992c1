"""The ``luna16-synth`` dataset: the synthetic LUNA16 tree, built once, read by the LUNA16 reader.

Without ``data_dir`` the tree lives in ``cache_dir("synth", <key>)`` where the key hashes the
generator version, ``scans`` and ``seed``; it is built into a temporary folder and renamed
into place, so an interrupted build never leaves a half tree that later runs would trust.
With ``data_dir`` the tree is built there if the folder is missing or empty, and reused if it
holds a tree of the same version, scan count and seed.

Reading is exactly :class:`wsbench.builtins.datasets.Luna16Dataset` (same cases, offsets,
training view and patch cache), with truth masks from the generator (``<tree>/masks``, which
the reader's ``masks="auto"`` picks up).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from wsbench import progress as _progress
from wsbench.builtins.datasets import Luna16Dataset
from wsbench.data.synth.builder import DEFAULT_SCANS, GENERATOR_VERSION, build
from wsbench.errors import DataError
from wsbench.options import option
from wsbench.paths import cache_dir


def tree_key(scans: int, seed: int) -> str:
    """Cache folder name of the tree for (generator version, scans, seed)."""
    h = hashlib.sha256(f"synth|v{GENERATOR_VERSION}|{scans}|{seed}".encode()).hexdigest()[:12]
    return f"v{GENERATOR_VERSION}-n{scans}-s{seed}-{h}"


def read_manifest(root: Path) -> dict | None:
    p = Path(root) / "synth.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def ensure_tree(scans: int, seed: int, data_dir: Path | None = None, progress=None) -> Path:
    """The synthetic tree for (scans, seed): reused if present, else built atomically."""
    if data_dir is None:
        final = cache_dir("synth") / tree_key(scans, seed)
    else:
        final = Path(data_dir).expanduser()
    man = read_manifest(final)
    if man is not None:
        if (str(man.get("version")), man.get("scans"), man.get("seed")) != (GENERATOR_VERSION, scans, seed):
            raise DataError(f"{final} holds a synthetic set with version {man.get('version')}, scans "
                            f"{man.get('scans')}, seed {man.get('seed')}, not version {GENERATOR_VERSION}, "
                            f"scans {scans}, seed {seed}; choose another --data-dir or matching options")
        return final
    if final.exists() and any(final.iterdir()):
        raise DataError(f"{final} is not empty and holds no synth.json; point --data-dir at an empty or "
                        "new folder (or at a tree written by `wsbench data synth`)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        build(tmp, scans=scans, seed=seed, progress=progress)
        if final.exists():
            final.rmdir()  # empty (checked above); another process may have won the race
        os.rename(tmp, final)
    except OSError:
        if read_manifest(final) is None:
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


class SynthDataset(Luna16Dataset):
    """The built-in synthetic LUNA16-format set (default dataset), read by the LUNA16 reader."""

    name = "luna16-synth"
    description = ("Built-in synthetic LUNA16-format chest CT (real LIDC-IDRI nodule outlines); "
                   "built once and cached")

    @dataclass
    class Options(Luna16Dataset.Options):
        data_dir: Path | None = option(None, "where the synthetic tree lives (built there if missing); "
                                             "default: the wsbench cache")
        masks: str = option("auto", "truth masks: 'auto' (the generator's exact masks, the tree's masks/), "
                                    "'sphere' (ball of diameter_mm) or a folder of masks")
        scans: int = option(DEFAULT_SCANS, "number of synthetic CT scans (spread over subset0..9)")
        seed: int = option(0, "seed of the synthetic set and of its case offsets and training sampling")

        def validate(self) -> None:
            if self.scans < 1:
                raise ValueError(f"scans must be at least 1, got {self.scans}")
            if self.masks == "lidc":
                raise ValueError("masks=lidc needs real LIDC-IDRI scans; use 'auto' or 'sphere'")
            super().validate()

    def __init__(self, options=None, *, device="cpu", seed=0) -> None:
        super().__init__(options, device=device, seed=seed)
        self._root: Path | None = None

    def root(self, progress=None) -> Path:
        if self._root is None:
            self._root = ensure_tree(self.options.scans, self.options.seed, self.options.data_dir, progress)
        return self._root

    def prepare(self, geometry, progress=None) -> None:
        self.root(_progress.ensure(progress))
        super().prepare(geometry, progress)
