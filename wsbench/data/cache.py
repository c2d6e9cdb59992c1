"""Dataset fingerprints and the on-disk patch cache.

* :func:`tree_fingerprint` — a fast, stable hash of a LUNA16 tree: the relative path and size of
  every volume file, the bytes of every ``.mhd`` header and of the CSVs, and the mask source's
  own fingerprint. No voxel data is read (hashing 888 raw files would take minutes); two trees
  with equal headers, sizes and CSVs are treated as equal. Modification times are ignored so a
  copied tree keeps its fingerprint.
* :class:`PatchCache` — one ``.npz`` per split (evaluation cases and/or training patches) plus
  ``meta.json``, in ``cache_dir("patches", key)`` where ``key`` hashes fingerprint + geometry +
  sampling options. Files are written to a temporary name and renamed (atomic), ``meta.json``
  last, so a half-written cache is never used and a second ``prepare`` reads no volume.

Images are stored as int16 HU (rounded; 0.5 HU at most, far below CT noise) and converted
with :func:`~wsbench.data.intensity.hu_to_norm` on load — the first run reads them back
the same way, so cached and fresh runs see identical arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from wsbench.data.intensity import HU_MAX, HU_MIN, hu_to_norm
from wsbench.data.types import Case, PatchSet
from wsbench.interfaces.dataset import SPLITS
from wsbench.paths import cache_dir

#: bump when the fingerprint's recipe changes (changes every dataset's fingerprint)
FINGERPRINT_VERSION = 1
#: bump when what is cached changes (sampling, resampling, masks): old cache entries are ignored
CACHE_VERSION = 2


def tree_fingerprint(root: Path, files: Iterable[Path], extra: Iterable[str] = ()) -> str:
    """sha256 (16 hex) of ``files`` (paths relative to ``root``, sizes; ``.mhd``/``.csv`` bytes)
    and ``extra`` strings (e.g. the mask source's fingerprint)."""
    h = hashlib.sha256(f"wsbench-tree-v{FINGERPRINT_VERSION}\n".encode())
    root = Path(root)
    for p in sorted(set(Path(f) for f in files)):
        if not p.is_file():
            continue
        rel = p.relative_to(root) if p.is_relative_to(root) else p
        h.update(f"{rel.as_posix()}|{p.stat().st_size}\n".encode())
        if p.suffix.lower() in (".mhd", ".csv"):
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    for e in extra:
        h.update(f"extra|{e}\n".encode())
    return h.hexdigest()[:16]


def cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str).encode()).hexdigest()[:16]


def to_hu16(hu: np.ndarray) -> np.ndarray:
    """HU → int16 clipped to the benchmark window (values outside it normalise identically)."""
    return np.rint(np.clip(hu, HU_MIN, HU_MAX)).astype(np.int16)


def _atomic_savez(path: Path, **arrays) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class PatchCache:
    """The prepared patches of one (dataset fingerprint, geometry, sampling options) key."""

    def __init__(self, key: str, root: Path | None = None) -> None:
        self.key = key
        self.dir = (Path(root) / key) if root is not None else cache_dir("patches", key)
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def meta_path(self) -> Path:
        return self.dir / "meta.json"

    def complete(self) -> bool:
        """True when ``meta.json`` (written last) and every split file exist and the meta parses;
        anything less (an interrupted or damaged cache) is rebuilt."""
        if not self.meta_path.is_file() or not all((self.dir / f"{s}.npz").is_file() for s in SPLITS):
            return False
        try:
            self.meta()
        except (OSError, ValueError):
            return False
        return True

    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_path.read_text())

    def write_split(self, split: str, cases: list[dict], patches: list[dict]) -> None:
        """``cases``: dicts with ``case_id, hu16, mask, spacing, info``; ``patches``: dicts with
        ``id, hu16, label, group``."""
        n = len(cases)
        arrays: dict[str, np.ndarray] = {}
        if n:
            arrays["case_hu"] = np.stack([c["hu16"] for c in cases])
            arrays["case_mask"] = np.packbits(np.stack([c["mask"] for c in cases]).astype(bool), axis=None)
            arrays["case_shape"] = np.array(arrays["case_hu"].shape, np.int64)
        arrays["case_json"] = np.array(json.dumps(
            [{"case_id": c["case_id"], "spacing": list(c["spacing"]), "info": c["info"]} for c in cases]))
        if patches:
            arrays["patch_hu"] = np.stack([p["hu16"] for p in patches])
        arrays["patch_label"] = np.array([p["label"] for p in patches], np.int64)
        arrays["patch_json"] = np.array(json.dumps({"ids": [p["id"] for p in patches],
                                                    "groups": [p["group"] for p in patches]}))
        _atomic_savez(self.dir / f"{split}.npz", **arrays)

    def write_meta(self, meta: dict[str, Any]) -> None:
        _atomic_write_text(self.meta_path, json.dumps(meta, indent=1, sort_keys=True))

    def _load(self, split: str) -> dict[str, np.ndarray]:
        with np.load(self.dir / f"{split}.npz") as z:
            return {k: z[k] for k in z.files}

    def cases(self, split: str) -> list[Case]:
        a = self._load(split)
        recs = json.loads(str(a["case_json"]))
        if not recs:
            return []
        shape = tuple(int(v) for v in a["case_shape"])
        masks = np.unpackbits(a["case_mask"], count=int(np.prod(shape))).astype(bool).reshape(shape)
        images = hu_to_norm(a["case_hu"].astype(np.float32))
        return [Case(r["case_id"], images[i], masks[i], tuple(r["spacing"]), r["info"]) for i, r in enumerate(recs)]

    def patches(self, split: str, size: int) -> PatchSet:
        a = self._load(split)
        meta = json.loads(str(a["patch_json"]))
        if "patch_hu" in a:
            images = hu_to_norm(a["patch_hu"].astype(np.float32))
        else:
            images = np.zeros((0, size, size, size), np.float32)
        return PatchSet(images, a["patch_label"].astype(np.int64), list(meta["ids"]), list(meta["groups"]))
