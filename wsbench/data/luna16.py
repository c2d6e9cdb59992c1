"""The LUNA16 file layout: scan index, CSVs, volume reading and world ↔ voxel transforms.

A LUNA16 tree (the real one, or one written by ``wsbench data synth``)::

    ROOT/subset0/<seriesuid>.mhd + .raw   …  ROOT/subset9/…   (or the .mhd files directly in ROOT)
    ROOT/annotations.csv        seriesuid,coordX,coordY,coordZ,diameter_mm   (world mm)
    ROOT/candidates_V2.csv      seriesuid,coordX,coordY,coordZ,class          (or candidates.csv)
    ROOT/seg-lungs-LUNA16/<seriesuid>.mhd                                     (optional lung masks)

World coordinates are ``(x, y, z)`` mm (the CSVs' order); voxel indices are ``(z, y, x)`` (numpy
order). Every conversion goes through SimpleITK's physical-point transforms, so the origin, the
direction matrix (flipped axes) and anisotropic spacing are honoured.

Bad input never aborts the whole dataset: a bad scan or CSV row is skipped with one line naming
the file/row, collected in :attr:`Luna16Index.skipped` (shown in the run report). Only a missing
root, a missing ``annotations.csv`` or one with the wrong columns is fatal
(:class:`~wsbench.errors.DataError`), because without it there are no cases.

Example::

    index = Luna16Index.scan("/data/luna16")
    uid = index.series_uids()[0]
    image = read_scan(index.scans[uid])            # SimpleITK image, HU
    zyx = world_to_voxel(image, index.annotations[uid][0].xyz)
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from wsbench.errors import DataError

ANNOTATION_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
CANDIDATE_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "class")
#: read when present (not in real LUNA16): recorded per case
OPTIONAL_ANNOTATION_COLUMNS = ("texture", "nodule_type")
LUNG_MASK_DIR = "seg-lungs-LUNA16"
_SUBSET_RE = re.compile(r"^subset(\d+)$")


@dataclass(frozen=True)
class ScanFile:
    """One scan of the index: ``subset`` is the subset number, or None in a flat folder."""

    seriesuid: str
    mhd: Path
    subset: int | None


@dataclass(frozen=True, slots=True)
class Annotation:
    """One ``annotations.csv`` row: world centre ``xyz`` (mm), ``row`` = 1-based line number."""

    seriesuid: str
    xyz: tuple[float, float, float]
    diameter_mm: float
    row: int
    #: optional extra columns of the row (``texture`` 1-5, ``nodule_type``), e.g. from a synthetic set
    extra: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True, slots=True)
class Candidate:
    """One ``candidates*.csv`` row (``label`` 1 = near a nodule, 0 = a mimic)."""

    seriesuid: str
    xyz: tuple[float, float, float]
    label: int
    row: int


@dataclass
class Luna16Index:
    """Everything known about a LUNA16 tree without reading a volume."""

    root: Path
    scans: dict[str, ScanFile]
    annotations: dict[str, list[Annotation]]
    lung_masks: dict[str, Path]
    candidates_file: Path | None
    flat: bool
    skipped: list[str] = field(default_factory=list)
    _candidates: dict[str, list[Candidate]] | None = field(default=None, repr=False)

    def series_uids(self) -> list[str]:
        return sorted(self.scans)

    @classmethod
    def scan(cls, root: str | Path) -> "Luna16Index":
        """Index ``root``: subset folders (or a flat folder), CSVs and optional lung masks."""
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"LUNA16 folder {root} does not exist; pass --data-dir pointing at the folder "
                            "holding subset0..subset9 and annotations.csv")
        skipped: list[str] = []
        scans: dict[str, ScanFile] = {}
        subsets = sorted((p for p in root.iterdir() if p.is_dir() and _SUBSET_RE.match(p.name)),
                         key=lambda p: int(_SUBSET_RE.match(p.name).group(1)))
        flat = not subsets
        folders = [(p, int(_SUBSET_RE.match(p.name).group(1))) for p in subsets] if subsets else [(root, None)]
        for folder, subset in folders:
            for mhd in sorted(folder.glob("*.mhd")):
                uid = mhd.stem
                if uid in scans:
                    skipped.append(f"{mhd}: seriesuid already read from {scans[uid].mhd}; duplicate skipped")
                    continue
                scans[uid] = ScanFile(uid, mhd, subset)
        if not scans:
            raise DataError(f"no .mhd scans found in {root} (looked in subset*/ and in the folder itself)")

        ann_path = root / "annotations.csv"
        if not ann_path.is_file():
            raise DataError(f"{ann_path} is missing; a LUNA16 tree needs annotations.csv "
                            f"({','.join(ANNOTATION_COLUMNS)})")
        annotations = {u: [] for u in scans}
        for row, rec in _read_csv(ann_path, ANNOTATION_COLUMNS, fatal=True, skipped=skipped,
                                  optional=OPTIONAL_ANNOTATION_COLUMNS):
            try:
                xyz = _xyz(rec)
                d = float(rec["diameter_mm"])
                if not (math.isfinite(d) and d > 0):
                    raise ValueError(f"diameter_mm={rec['diameter_mm']!r} is not a positive number")
            except ValueError as e:
                skipped.append(f"{ann_path}:{row}: {e}; row skipped")
                continue
            uid = rec["seriesuid"].strip()
            if uid not in scans:
                skipped.append(f"{ann_path}:{row}: seriesuid {uid} has no .mhd in {root}; row skipped")
                continue
            extra = []
            if rec.get("texture", "").strip():
                try:
                    extra.append(("texture", int(float(rec["texture"]))))
                except ValueError:
                    skipped.append(f"{ann_path}:{row}: texture={rec['texture']!r} is not a number; ignored")
            if rec.get("nodule_type", "").strip():
                extra.append(("nodule_type", rec["nodule_type"].strip()))
            annotations[uid].append(Annotation(uid, xyz, d, row, tuple(extra)))

        cand_path = next((root / n for n in ("candidates_V2.csv", "candidates.csv") if (root / n).is_file()), None)
        if cand_path is None:
            skipped.append(f"{root}: no candidates_V2.csv or candidates.csv; negatives come from random "
                           "lung positions only")
        lung_dir = root / LUNG_MASK_DIR
        lung_masks = {p.stem: p for p in lung_dir.glob("*.mhd")} if lung_dir.is_dir() else {}
        return cls(root, scans, annotations, lung_masks, cand_path, flat, skipped)

    @property
    def candidates(self) -> dict[str, list[Candidate]]:
        """seriesuid → its candidate rows; parsed on first use (LUNA16's 754k rows take seconds,
        and a cached prepare never needs them). Bad rows are added to :attr:`skipped`."""
        if self._candidates is None:
            self._candidates = self._read_candidates()
        return self._candidates

    def _read_candidates(self) -> dict[str, list[Candidate]]:
        candidates: dict[str, list[Candidate]] = {u: [] for u in self.scans}
        if self.candidates_file is None:
            return candidates
        path, skipped, unknown = self.candidates_file, self.skipped, 0
        for row, rec in _read_csv(path, CANDIDATE_COLUMNS, fatal=False, skipped=skipped):
            uid = rec["seriesuid"].strip()
            if uid not in candidates:
                unknown += 1  # normal for a partial download: summarised, not listed row by row
                continue
            try:
                xyz = _xyz(rec)
                label = int(float(rec["class"]))
                if label not in (0, 1):
                    raise ValueError(f"class={rec['class']!r} is not 0 or 1")
            except ValueError as e:
                skipped.append(f"{path}:{row}: {e}; row skipped")
                continue
            candidates[uid].append(Candidate(uid, xyz, label, row))
        if unknown:
            skipped.append(f"{path}: {unknown} rows name a seriesuid without a scan here; skipped")
        return candidates


def _read_csv(path: Path, columns: Sequence[str], *, fatal: bool, skipped: list[str],
              optional: Sequence[str] = ()):
    """Yield ``(line_number, row_dict)``; wrong columns → DataError (``fatal``) or a skip note."""
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        if fatal:
            raise DataError(f"cannot read {path}: {e}") from None
        skipped.append(f"{path}: unreadable ({e}); ignored")
        return
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        header = [h.strip() for h in header] if header else []
        missing = [c for c in columns if c not in header]
        if missing:
            msg = (f"{path}: missing column(s) {', '.join(missing)}; the header must contain "
                   f"{','.join(columns)} (found {','.join(header) or 'nothing'})")
            if fatal:
                raise DataError(msg)
            skipped.append(msg + "; file ignored")
            return
        pos = {c: header.index(c) for c in (*columns, *optional) if c in header}
        for line, values in enumerate(reader, start=2):
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) < len(header):
                skipped.append(f"{path}:{line}: {len(values)} fields, expected {len(header)}; row skipped")
                continue
            yield line, {c: values[i] if i < len(values) else "" for c, i in pos.items()}


def _xyz(rec: dict[str, str]) -> tuple[float, float, float]:
    try:
        xyz = tuple(float(rec[c]) for c in ("coordX", "coordY", "coordZ"))
    except ValueError:
        raise ValueError(f"coordinates ({rec['coordX']!r}, {rec['coordY']!r}, {rec['coordZ']!r}) "
                         "are not numbers") from None
    if not all(math.isfinite(v) for v in xyz):
        raise ValueError(f"coordinates {xyz} are not finite")
    return xyz  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# volumes


def _check_mhd(path: Path) -> None:
    """Fail with one line if the MetaImage header is unreadable or its data file is missing/short."""
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise DataError(f"{path}: cannot read header ({e})") from None
    fields = {}
    for ln in text.splitlines():
        if "=" in ln:
            k, v = ln.split("=", 1)
            fields[k.strip()] = v.strip()
    if "DimSize" not in fields or "ElementType" not in fields or "ElementDataFile" not in fields:
        raise DataError(f"{path}: corrupt MetaImage header (needs DimSize, ElementType, ElementDataFile)")
    data = fields["ElementDataFile"]
    if data.upper() == "LOCAL" or data.upper().startswith("LIST"):
        return
    raw = path.parent / data
    if not raw.is_file():
        raise DataError(f"{path}: data file {raw.name} is missing; restore it or remove the .mhd")
    if fields.get("CompressedData", "False").lower() != "true":
        try:
            dims = [int(v) for v in fields["DimSize"].split()]
        except ValueError:
            raise DataError(f"{path}: corrupt MetaImage header (DimSize = {fields['DimSize']!r})") from None
        nbytes = {"MET_UCHAR": 1, "MET_CHAR": 1, "MET_USHORT": 2, "MET_SHORT": 2, "MET_UINT": 4, "MET_INT": 4,
                  "MET_FLOAT": 4, "MET_DOUBLE": 8, "MET_LONG": 8, "MET_ULONG": 8}.get(fields["ElementType"])
        channels = int(fields.get("ElementNumberOfChannels", "1") or 1)
        if nbytes is not None and raw.stat().st_size < nbytes * channels * int(np.prod(dims)):
            raise DataError(f"{path}: {raw.name} holds {raw.stat().st_size} bytes, the header needs "
                            f"{nbytes * channels * int(np.prod(dims))}; the file is truncated")


def read_volume(path: str | Path) -> sitk.Image:
    """Read a 3-D volume (``.mhd`` with validation, or anything SimpleITK reads, e.g. ``.nii.gz``)."""
    path = Path(path)
    if path.suffix.lower() == ".mhd":
        _check_mhd(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip().startswith("Description")), "")
        raise DataError(f"{path}: SimpleITK cannot read it ({first or 'unreadable'}); fix or remove the file") from None
    if image.GetDimension() != 3:
        raise DataError(f"{path}: expected a 3-D volume, got {image.GetDimension()}-D")
    return image


def read_scan(scan: ScanFile, *, nan_hu: float = -1000.0) -> tuple[sitk.Image, str | None]:
    """Read a CT scan (HU) and return ``(image, warning)``.

    NaN or infinite voxels (float volumes only) are replaced by ``nan_hu`` (air) and reported
    in ``warning`` (one line naming the file); other volumes are returned as stored.
    """
    image = read_volume(scan.mhd)
    arr = sitk.GetArrayViewFromImage(image)
    warning = None
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            fixed = np.where(bad, np.float32(nan_hu), arr).astype(np.float32)
            out = sitk.GetImageFromArray(fixed)
            out.CopyInformation(image)
            warning = f"{scan.mhd}: {int(bad.sum())} NaN/inf voxels replaced by {nan_hu:g} HU"
            return out, warning
    return image, warning  # int16 stays int16 (half the memory); resampling outputs float32


def world_to_voxel(image: sitk.Image, xyz: Sequence[float]) -> np.ndarray:
    """World ``(x, y, z)`` mm → continuous voxel index ``(z, y, x)`` (numpy order)."""
    idx = image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in xyz))
    return np.array(idx[::-1], dtype=float)


def voxel_to_world(image: sitk.Image, zyx: Sequence[float]) -> np.ndarray:
    """Continuous voxel index ``(z, y, x)`` → world ``(x, y, z)`` mm."""
    p = image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in zyx[::-1]))
    return np.array(p, dtype=float)


def inside_volume(image: sitk.Image, xyz: Sequence[float], margin_vox: float = 0.0) -> bool:
    """Whether a world point lies within the volume's voxel extent (index in ``[-0.5, n - 0.5]``)."""
    zyx = world_to_voxel(image, xyz)
    size = np.array(image.GetSize()[::-1], dtype=float)
    return bool(np.all(zyx >= -0.5 + margin_vox) and np.all(zyx <= size - 0.5 - margin_vox))


def subset_numbers(spec: str) -> list[int]:
    """Parse a subset list such as ``"0-6"``, ``"7"`` or ``"0,2,4-5"``."""
    out: list[int] = []
    for part in str(spec).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise ValueError(f"bad subset range {part!r}")
            out.extend(range(a, b + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ValueError(f"bad subset list {spec!r} (use e.g. 0-6 or 0,2,4-5)")
    return sorted(set(out))
