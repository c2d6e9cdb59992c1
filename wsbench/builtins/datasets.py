"""Built-in dataset plugin ``luna16``: a LUNA16-format tree read with SimpleITK.

The same reader serves the real LUNA16 and the built-in synthetic set (``luna16-synth``
subclasses :class:`Luna16Dataset` and overrides :meth:`Luna16Dataset.root`).

Per split (by scan; subsets 0-6 / 7 / 8-9 by default, a seeded by-scan split of a flat folder):

* evaluation cases (validation, test): one patch per ``annotations.csv`` row, the nodule at a
  seeded off-centre offset (``derive_seed(seed, case_id)``), with its truth mask
  (:mod:`wsbench.data.masks`: ``auto`` by default — the tree's own ``masks/`` folder if it
  has one, else the LIDC-IDRI 50 % consensus; any other nodule reaching into the patch is
  truth too); case id ``<seriesuid>:<k>`` (k-th valid row of the scan);
* training view (train, validation): image-level labels only — ``positives_per_nodule``
  patches per nodule with jittered offsets (label 1), and ``negatives_per_scan`` patches
  (label 0) centred near ``class 0`` candidates (a ``candidate_fraction`` share) and random
  lung positions, each keeping every nodule (annotations, class-1 candidates and, when
  present, ``annotations_excluded.csv``) ``margin_mm`` outside the patch box. No masks are
  computed for the training view.

All sampling uses the dataset option ``seed`` (not the run's seed), so every run of a benchmark
sees the same cases. Everything is cached by :class:`wsbench.data.cache.PatchCache`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from wsbench import progress as _progress
from wsbench.data.cache import PatchCache, cache_key, to_hu16, tree_fingerprint
from wsbench.data.luna16 import (Luna16Index, ScanFile, inside_volume, read_scan, read_volume,
                                 subset_numbers, voxel_to_world)
from wsbench.data.masks import mask_source
from wsbench.data.patches import (distance_to_box, draw_offset, is_far_from, lung_positions, mask_extent_mm,
                                  offset_bounds, patch_box, patch_origin, resample_hu, resample_mask)
from wsbench.data.types import Case, Geometry, PatchSet
from wsbench.errors import DataError, WsbenchError
from wsbench.hookspecs import hookimpl
from wsbench.interfaces.dataset import SPLITS, Dataset
from wsbench.options import option
from wsbench.seeding import derive_seed

#: texture rating → nodule type (the usual LIDC-IDRI grouping)
NODULE_TYPE = {1: "ground-glass", 2: "ground-glass", 3: "part-solid", 4: "part-solid", 5: "solid"}


class Luna16Dataset(Dataset):
    """LUNA16 (or any tree in its format); truth masks from LIDC-IDRI, spheres or a folder.

    Example::

        ds = Luna16Dataset({"data_dir": "/data/LUNA16", "masks": "lidc"})
        ds.prepare(Geometry())                 # reads every scan once, then cached
        case = next(ds.cases("test", Geometry()))
        patches = ds.training_patches("train", Geometry())

    Subclasses (e.g. the synthetic set) override :meth:`root` and may change option defaults.
    """

    name = "luna16"
    description = "LUNA16-format CT tree (subset*/ .mhd, annotations.csv, candidates_V2.csv); --data-dir ROOT"

    @dataclass
    class Options:
        data_dir: Path | None = option(None, "LUNA16 root folder (subset0..subset9/, annotations.csv, "
                                             "candidates_V2.csv); set by --data-dir")
        masks: str = option("auto", "truth masks: 'lidc' (50% consensus of LIDC-IDRI outlines), 'sphere' "
                                    "(ball of diameter_mm), a folder of <seriesuid>.mhd/.nii.gz masks, or "
                                    "'auto' (the tree's masks/ folder if it has one, else lidc)")
        train_subsets: str = option("0-6", "subset numbers of the training split, e.g. 0-6")
        validation_subsets: str = option("7", "subset numbers of the validation split")
        test_subsets: str = option("8-9", "subset numbers of the test split")
        split_fractions: tuple[float, float, float] = option(
            (0.7, 0.1, 0.2), "flat folder (no subset*/): train,validation,test fractions of a seeded by-scan split")
        positives_per_nodule: int = option(4, "training view: patches per nodule, each at its own random offset")
        negatives_per_scan: int = option(12, "training view: nodule-free patches per scan")
        candidate_fraction: float = option(0.5, "share of negatives centred on class-0 candidates "
                                                "(the rest at random lung positions)")
        margin_mm: float = option(2.0, "negatives: every nodule's ball stays this far outside the patch box")
        seed: int = option(0, "seed of the flat-folder split, the case offsets and the training sampling "
                              "(not the run seed: every run sees the same cases)")

        def validate(self) -> None:
            for name in ("train_subsets", "validation_subsets", "test_subsets"):
                subset_numbers(getattr(self, name))  # ValueError → OptionError
            sets = [set(subset_numbers(getattr(self, n))) for n in ("train_subsets", "validation_subsets",
                                                                    "test_subsets")]
            if sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]:
                raise ValueError("a subset is in two splits; train/validation/test subsets must be disjoint")
            if any(f < 0 for f in self.split_fractions) or sum(self.split_fractions) <= 0:
                raise ValueError(f"split_fractions {self.split_fractions} must be >= 0 with a positive sum")
            if self.positives_per_nodule < 0 or self.negatives_per_scan < 0:
                raise ValueError("positives_per_nodule and negatives_per_scan must be >= 0")
            if not 0 <= self.candidate_fraction <= 1:
                raise ValueError(f"candidate_fraction must be in [0, 1], got {self.candidate_fraction}")
            if self.margin_mm < 0:
                raise ValueError(f"margin_mm must be >= 0, got {self.margin_mm}")

    def __init__(self, options=None, *, device="cpu", seed=0) -> None:
        super().__init__(options, device=device, seed=seed)
        self._index: Luna16Index | None = None
        self._masks = None
        self._fingerprint: str | None = None
        self._cache: PatchCache | None = None
        self._geometry: Geometry | None = None
        self._meta: dict[str, Any] | None = None

    # ---------------------------------------------------------------- inputs
    def root(self) -> Path:
        """The tree to read (``data_dir``); subclasses may build or locate one."""
        if self.options.data_dir is None:
            raise WsbenchError(f"dataset '{self.name}' needs a data folder: pass --data-dir ROOT "
                               "(or -o dataset.data_dir=ROOT) pointing at a LUNA16 tree")
        return Path(self.options.data_dir)

    def index(self) -> Luna16Index:
        if self._index is None:
            self._index = Luna16Index.scan(self.root())
        return self._index

    def mask_source(self):
        if self._masks is None:
            root = self.root() if self.options.masks not in ("lidc", "sphere") else None
            self._masks = mask_source(self.options.masks, root)
        return self._masks

    def _files(self) -> list[Path]:
        idx = self.index()
        files: list[Path] = []
        for s in idx.scans.values():
            files += [s.mhd, s.mhd.with_suffix(".raw"), s.mhd.with_suffix(".zraw")]
        for p in idx.lung_masks.values():
            files += [p, p.with_suffix(".raw"), p.with_suffix(".zraw")]
        files += [idx.root / n for n in ("annotations.csv", "candidates_V2.csv", "candidates.csv",
                                         "annotations_excluded.csv")]
        return files

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = tree_fingerprint(self.index().root, self._files(), [self.mask_source().fingerprint()])
        return self._fingerprint

    def _sampling(self) -> dict[str, Any]:
        o = self.options_dict()
        o.pop("data_dir", None)
        return o

    def assign_splits(self) -> dict[str, str]:
        """seriesuid → split. Subset folders by the subset options; a flat folder by a seeded
        permutation of the sorted seriesuids cut at ``split_fractions``."""
        idx = self.index()
        uids = idx.series_uids()
        out: dict[str, str] = {}
        if not idx.flat:
            where = {}
            for split, opt in zip(SPLITS, ("train_subsets", "validation_subsets", "test_subsets")):
                for n in subset_numbers(getattr(self.options, opt)):
                    where[n] = split
            for u in uids:
                sp = where.get(idx.scans[u].subset)
                if sp is not None:
                    out[u] = sp
            return out
        f = np.asarray(self.options.split_fractions, float)
        f = f / f.sum()
        perm = np.random.default_rng(derive_seed(self.options.seed, "split")).permutation(len(uids))
        n = len(uids)
        n_val = int(round(f[1] * n))
        n_test = int(round(f[2] * n))
        if n >= 3:  # every split with a positive fraction gets a scan
            n_val = max(n_val, 1 if f[1] > 0 else 0)
            n_test = max(n_test, 1 if f[2] > 0 else 0)
        n_train = max(n - n_val - n_test, 0)
        for rank, i in enumerate(perm):
            out[uids[i]] = "train" if rank < n_train else ("validation" if rank < n_train + n_val else "test")
        return out

    def annotation_info(self, annotation, k: int) -> dict[str, Any]:
        """Extra JSON-able facts recorded in a case's ``info`` for the ``k``-th valid row of its
        scan (e.g. ``texture``, ``nodule_type``, ``placement``). Default: none; a subclass
        whose tree carries them elsewhere (a manifest) overrides this. Values here take
        precedence over the mask source's (LIDC readers' median texture)."""
        return {}

    def split_rule(self) -> str:
        if self.index().flat:
            f = self.options.split_fractions
            return f"flat folder, seeded by-scan split {f[0]:g}/{f[1]:g}/{f[2]:g} (seed {self.options.seed})"
        o = self.options
        return f"subsets {o.train_subsets} train, {o.validation_subsets} validation, {o.test_subsets} test"

    # ---------------------------------------------------------------- prepare
    def prepare(self, geometry: Geometry, progress=None) -> None:
        progress = _progress.ensure(progress)
        key = cache_key("luna16", self.fingerprint(), geometry.to_dict(), self._sampling())
        cache = PatchCache(key)
        if not cache.complete():
            self._build(cache, geometry, progress)
        self._cache, self._geometry, self._meta = cache, geometry, cache.meta()

    def _build(self, cache: PatchCache, geometry: Geometry, progress) -> None:
        t0 = time.perf_counter()
        idx = self.index()
        split_of = self.assign_splits()
        idx.candidates  # parse now, so its skip notes are in idx.skipped below
        skipped = list(idx.skipped)
        masks = self.mask_source()
        excluded = self._excluded_findings()
        out = {s: {"cases": [], "patches": []} for s in SPLITS}
        scans_ok = {s: 0 for s in SPLITS}
        uids = [u for u in idx.series_uids() if u in split_of]
        with progress.task(f"preparing {self.name} patches", total=len(uids)) as task:
            for uid in uids:
                split = split_of[uid]
                task.advance(1)
                try:
                    image, warning = read_scan(idx.scans[uid])
                except DataError as e:
                    skipped.append(f"{e}; scan skipped")
                    continue
                if warning:
                    skipped.append(warning)
                scans_ok[split] += 1
                rows = []
                for a in idx.annotations[uid]:
                    if inside_volume(image, a.xyz):
                        rows.append(a)
                    else:
                        skipped.append(f"{idx.root / 'annotations.csv'}:{a.row}: ({a.xyz[0]:g}, {a.xyz[1]:g}, "
                                       f"{a.xyz[2]:g}) mm lies outside {idx.scans[uid].mhd.name}; row skipped")
                if split in ("validation", "test"):
                    out[split]["cases"] += self._cases_of_scan(uid, idx.scans[uid], image, rows, masks,
                                                               geometry, skipped)
                if split in ("train", "validation"):
                    out[split]["patches"] += self._patches_of_scan(uid, image, rows, excluded.get(uid, []),
                                                                   geometry, skipped)
        for s in SPLITS:
            cache.write_split(s, out[s]["cases"], out[s]["patches"])
        counts = {s: sum(1 for u in uids if split_of[u] == s) for s in SPLITS}
        cache.write_meta({
            "split": {
                "rule": self.split_rule(),
                "scans": scans_ok,
                "scans_listed": counts,
                "cases": {s: len(out[s]["cases"]) for s in ("validation", "test")},
                "patches": {s: {"positive": sum(p["label"] for p in out[s]["patches"]),
                                "negative": sum(1 - p["label"] for p in out[s]["patches"])}
                            for s in ("train", "validation")},
                # what the masks are, not how they were asked for ('auto', a path…): equal trees
                # with equal masks give equal split records whichever plugin read them
                "mask_source": self.mask_source().fingerprint(),
                "unused_scans": len(idx.scans) - len(uids),
            },
            "skipped": skipped,
            "prepare_seconds": round(time.perf_counter() - t0, 3),
            "n_scans_read": sum(scans_ok.values()),
        })

    def _excluded_findings(self) -> dict[str, list[tuple[tuple[float, float, float], float]]]:
        """``annotations_excluded.csv`` (LUNA16's irrelevant findings), when present: kept out of negatives."""
        import csv

        path = self.index().root / "annotations_excluded.csv"
        out: dict[str, list] = {}
        if not path.is_file():
            return out
        with open(path, newline="") as f:
            for rec in csv.DictReader(f):
                try:
                    xyz = (float(rec["coordX"]), float(rec["coordY"]), float(rec["coordZ"]))
                    d = float(rec.get("diameter_mm") or 0)
                    d = d if d > 0 else 0.0
                except (KeyError, TypeError, ValueError):
                    continue
                out.setdefault(rec.get("seriesuid", ""), []).append((xyz, d / 2))
        return out

    def _cases_of_scan(self, uid: str, scan: ScanFile, image, rows, masks, geometry: Geometry,
                       skipped: list[str]) -> list[dict]:
        ms, infos, notes = masks.nodule_masks(uid, image, rows)
        skipped += notes
        cases = []
        for k, (a, m, minfo) in enumerate(zip(rows, ms, infos)):
            case_id = f"{uid}:{k}"
            if m is None or not m.mask.any():
                if m is not None:
                    skipped.append(f"{self.index().root / 'annotations.csv'}:{a.row}: empty truth mask; case skipped")
                continue
            rng = np.random.default_rng(derive_seed(self.options.seed, case_id))
            lo, hi = mask_extent_mm(image, m, a.xyz)
            off = draw_offset(rng, offset_bounds(lo, hi, geometry))
            origin = patch_origin(a.xyz, geometry, off)
            hu16 = to_hu16(resample_hu(image, origin, geometry))
            mask = resample_mask(image, m, origin, geometry)
            if not mask.any():
                skipped.append(f"{self.index().root / 'annotations.csv'}:{a.row}: truth mask vanished on the "
                               "patch grid; case skipped")
                continue
            # any other nodule reaching into the patch is truth too (segment nodules, not one nodule)
            lo_box, hi_box = patch_box(origin, geometry)
            others = 0
            for b, m2 in zip(rows, ms):
                if b is a or m2 is None or m2 is m or not m2.mask.any():
                    continue
                if distance_to_box(b.xyz, lo_box, hi_box) <= b.diameter_mm / 2 + 2 * max(image.GetSpacing()):
                    extra_mask = resample_mask(image, m2, origin, geometry)
                    if extra_mask.any():
                        mask |= extra_mask
                        others += 1
            extra = {**dict(a.extra), **self.annotation_info(a, k)}
            texture = extra.get("texture", minfo.get("texture"))
            info = {
                "seriesuid": uid, "diameter_mm": float(a.diameter_mm),
                "texture": int(texture) if texture is not None else None,
                "nodule_type": extra.get("nodule_type") or (NODULE_TYPE.get(int(texture)) if texture else None),
                "annotation_row": a.row, "subset": scan.subset,
                "centre_world_mm": [float(v) for v in a.xyz],
                "offset_vox": [int(v) for v in off],
                "centre_vox": [float((geometry.size - 1) / 2 + v) for v in off],
                "mask_voxels": int(mask.sum()),
                "other_nodules_in_patch": others,
                **{k2: v for k2, v in minfo.items() if k2 not in ("texture",)},
                **{k2: v for k2, v in extra.items() if k2 not in ("texture", "nodule_type")},
            }
            cases.append({"case_id": case_id, "hu16": hu16, "mask": mask, "spacing": geometry.spacing, "info": info})
        return cases

    def _patches_of_scan(self, uid: str, image, rows, excluded, geometry: Geometry, skipped: list[str]) -> list[dict]:
        o = self.options
        idx = self.index()
        patches: list[dict] = []
        s = geometry.spacing_mm
        for a in rows:
            r = a.diameter_mm / 2
            bounds = offset_bounds([r] * 3, [r] * 3, geometry)  # the ball, not a mask: no masks here
            for j in range(o.positives_per_nodule):
                rng = np.random.default_rng(derive_seed(o.seed, uid, "pos", a.row, j))
                origin = patch_origin(a.xyz, geometry, draw_offset(rng, bounds))
                patches.append({"id": f"{uid}:pos:{a.row}.{j}", "hu16": to_hu16(resample_hu(image, origin, geometry)),
                                "label": 1, "group": uid})
        # everything that must stay out of a negative patch
        keep_out = [(a.xyz, a.diameter_mm / 2) for a in idx.annotations[uid]]
        keep_out += [(c.xyz, 0.0) for c in idx.candidates.get(uid, []) if c.label == 1]
        keep_out += list(excluded)
        n_neg = o.negatives_per_scan
        n_cand = int(round(n_neg * o.candidate_fraction))
        rng = np.random.default_rng(derive_seed(o.seed, uid, "neg"))
        full = (np.full(3, -geometry.max_offset_vox), np.full(3, geometry.max_offset_vox))
        got = 0
        cands = [c for c in idx.candidates.get(uid, []) if c.label == 0]
        for i in rng.permutation(len(cands)):
            if got >= n_cand:
                break
            c = cands[int(i)]
            if not inside_volume(image, c.xyz):
                continue
            origin = patch_origin(c.xyz, geometry, draw_offset(rng, full))
            if is_far_from(origin, geometry, keep_out, o.margin_mm):
                patches.append({"id": f"{uid}:cand:{c.row}", "hu16": to_hu16(resample_hu(image, origin, geometry)),
                                "label": 0, "group": uid})
                got += 1
        need = n_neg - got
        if need > 0:
            lung = None
            if uid in idx.lung_masks:
                try:
                    lung = read_volume(idx.lung_masks[uid])
                except DataError as e:
                    skipped.append(f"{e}; HU-based lung positions used")
            pos = lung_positions(image, lung)
            k = 0
            for _ in range(30 * need):
                if k >= need or not len(pos):
                    break
                zyx = pos[int(rng.integers(len(pos)))] + rng.uniform(-0.5, 0.5, 3)
                origin = patch_origin(voxel_to_world(image, zyx), geometry)
                if is_far_from(origin, geometry, keep_out, o.margin_mm):
                    patches.append({"id": f"{uid}:lung:{k}", "hu16": to_hu16(resample_hu(image, origin, geometry)),
                                    "label": 0, "group": uid})
                    k += 1
            if k < need:
                skipped.append(f"{idx.scans[uid].mhd}: only {got + k} of {n_neg} negative patches fit "
                               f"{o.margin_mm:g} mm away from every nodule")
        return patches

    # ---------------------------------------------------------------- prepared data
    def _ready(self, geometry: Geometry) -> PatchCache:
        if self._cache is None or self._geometry != geometry:
            self.prepare(geometry)
        assert self._cache is not None
        return self._cache

    def split_info(self) -> dict[str, Any]:
        if self._meta is None:
            return {"rule": self.split_rule()}
        return dict(self._meta["split"])

    def cases(self, split: str, geometry: Geometry) -> Iterator[Case]:
        if split not in ("validation", "test"):
            raise WsbenchError(f"dataset '{self.name}' has evaluation cases for 'validation' and 'test' only, "
                               f"not {split!r} (the train split has the image-level training view only)")
        yield from self._ready(geometry).cases(split)

    def training_patches(self, split: str, geometry: Geometry) -> PatchSet:
        if split not in ("train", "validation"):
            raise WsbenchError(f"dataset '{self.name}' has training patches for 'train' and 'validation' only, "
                               f"not {split!r}")
        return self._ready(geometry).patches(split, geometry.size)

    def skipped(self) -> list[str]:
        if self._meta is not None:
            return list(self._meta.get("skipped", []))
        return list(self._index.skipped) if self._index is not None else []


@hookimpl
def register_datasets(register):
    register(Luna16Dataset)
