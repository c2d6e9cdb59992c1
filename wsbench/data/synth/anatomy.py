"""An analytic thorax: body wall, ribs, spine, mediastinum and two lungs, in world millimetres.

Every structure is an implicit function of world coordinates, so the same model answers
point queries (is this point in the right lung?) during vessel-tree growth and fills a
whole scan volume by broadcasting ``Z (nz,1,1)``, ``Y (1,ny,1)``, ``X (1,1,nx)``.

The thorax is a slab of the mid chest of a *small adult* (body width 190–240 mm, about
0.75 of a typical adult): with a 288-pixel reconstruction matrix over a body-tight field of
view this keeps LUNA16-like in-plane spacing (0.74–0.94 mm) at a size that builds in
about a second per scan (see :mod:`wsbench.data.synth.scan`).

Tissue labels (:data:`LABELS`) and their mean HU are listed below; lung parenchyma gets a
gravity gradient (posterior denser) and a correlated texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: label value → tissue name (the lung labels 3 and 4 are LUNA16's seg-lungs labels).
LABELS = {0: "air", 1: "fat", 2: "muscle", 3: "right lung", 4: "left lung", 5: "mediastinal fat",
          6: "heart", 7: "aorta", 8: "bone", 9: "cartilage", 10: "spinal canal"}
RIGHT_LUNG, LEFT_LUNG = 3, 4

#: Mean HU per label (lungs: see :meth:`Thorax.hu`).
BASE_HU = {0: -1000.0, 1: -100.0, 2: 45.0, 5: -85.0, 6: 40.0, 7: 45.0, 8: 380.0, 9: 120.0, 10: 15.0}


def _squircle(u, v, beta: float):
    """A radius-like measure (homogeneous of degree 1; 1 on the outline) of a rounded
    rectangle: ``beta`` 0 is an ellipse, larger values are squarer (0.34 ≈ a superellipse of
    exponent 2.3). Cheaper than a fractional power over millions of voxels."""
    uu = u * u
    vv = v * v
    s = uu + vv + np.float32(1e-12)
    return np.sqrt(s - np.float32(beta) * uu * vv / s)


@dataclass
class Thorax:
    """Parameters of one patient's thorax (all mm, world LPS coordinates).

    Build with :meth:`sample`; query with :meth:`labels` (tissue label per point) and
    :meth:`hu` (HU per point given labels and a texture field).
    """

    cx: float
    cy: float
    z_lo: float
    z_hi: float
    a: float            # body half-width (x)
    b_ant: float        # body half-depth, anterior (y < cy)
    b_post: float       # body half-depth, posterior
    t_fat: float
    t_mus: float
    z_heart: float
    heart_u: float
    rv: float           # vertebral body radius
    ra: float           # descending aorta radius
    rib_pitch: float
    rib_phase: float
    rib_slope: float
    lung_hu: float
    lung_gradient: float
    wobble: tuple       # (k, amplitude, phase) triples of the cavity outline
    z_hilum: float
    fissure: tuple      # per lung: (z at cy, slope dz/dy)

    @classmethod
    def sample(cls, rng: np.random.Generator, cx: float, cy: float, z_lo: float, z_hi: float,
               width_mm: float, depth_ratio: float) -> "Thorax":
        a = width_mm / 2
        b = width_mm * depth_ratio / 2
        wobble = tuple((k, float(rng.uniform(0.005, 0.02)), float(rng.uniform(0, 2 * np.pi))) for k in (2, 3, 5))
        fiss = tuple((float(rng.uniform(z_lo + 0.3 * (z_hi - z_lo), z_hi - 0.2 * (z_hi - z_lo))),
                      float(rng.uniform(0.6, 1.0))) for _ in range(2))
        return cls(cx=cx, cy=cy, z_lo=z_lo, z_hi=z_hi, a=a, b_ant=b, b_post=b * float(rng.uniform(0.9, 0.97)),
                   t_fat=float(rng.uniform(3, 12)), t_mus=float(rng.uniform(6, 10)),
                   z_heart=float(z_lo + rng.uniform(-20, 25)), heart_u=float(rng.uniform(0.08, 0.18)),
                   rv=float(rng.uniform(12, 15)), ra=float(rng.uniform(8, 11)),
                   rib_pitch=float(rng.uniform(20, 25)), rib_phase=float(rng.uniform(0, 25)),
                   rib_slope=float(rng.uniform(0.25, 0.4)),
                   lung_hu=float(rng.uniform(-880, -845)), lung_gradient=float(rng.uniform(15, 35)),
                   wobble=wobble, z_hilum=float(z_hi - rng.uniform(5, 30)), fissure=fiss)

    # -- geometry helpers -------------------------------------------------------------
    def _zscale(self, Z, per_mm: float):
        """Shapes widen towards the diaphragm (z decreasing)."""
        zm = 0.5 * (self.z_lo + self.z_hi)
        return 1.0 + per_mm * (zm - Z)

    def cavity_axes(self, Z):
        """Half-axes (a, b_ant, b_post) of the thoracic cavity (inner muscle boundary) at Z."""
        s = self._zscale(Z, 0.0015)
        t = self.t_fat + self.t_mus
        return (self.a * s - t, self.b_ant * s - t, self.b_post * s - t)

    def spine_centre(self):
        b_post = self.b_post - self.t_fat - self.t_mus
        return self.cx, self.cy + b_post - 0.8 * self.rv

    def _uv(self, X, Y, Z, inset: float = 0.0):
        """Normalised coordinates of the cavity (|(u, v)| = 1 on its outline), inset by mm."""
        ac, bac, bpc = self.cavity_axes(Z)
        u = (X - self.cx) / (ac - inset)
        bb = np.where(Y < self.cy, bac - inset, bpc - inset)
        v = (Y - self.cy) / bb
        return u, v

    def cavity(self, X, Y, Z):
        u, v = self._uv(X, Y, Z)
        theta = np.arctan2(v, u)
        r = _squircle(u, v, 0.34)
        wob = 1.0
        for k, amp, ph in self.wobble:
            wob = wob + amp * np.cos(k * theta + ph + 0.01 * Z)
        return r < wob

    def mediastinum(self, X, Y, Z, margin: float = 0.0):
        """Central soft tissue (band + heart + spine + aorta), dilated by ``margin`` mm."""
        ac, bac, bpc = self.cavity_axes(Z)
        dx = X - self.cx
        dy = Y - self.cy
        # the band narrows posteriorly, widens anteriorly (great vessels, thymus)
        half = 0.075 * ac + 0.06 * ac * np.clip(-dy / bac, 0, 1) + margin
        # flare where the band meets the chest wall, so the lungs' medial corners are rounded
        vv = np.where(dy < 0, -dy / bac, dy / bpc)
        half = half + 0.12 * ac * np.clip((vv - 0.75) / 0.25, 0, 1) ** 2
        band = np.abs(dx - 0.04 * ac) < half
        hz = np.clip(1.0 - ((Z - self.z_heart) / 70.0) ** 2, 0, 1)
        hs = np.sqrt(hz)
        hx = self.cx + self.heart_u * ac
        hy = self.cy - 0.3 * bac
        heart = ((X - hx) / (0.34 * ac * hs + 1e-3 + margin)) ** 2 + ((Y - hy) / (0.42 * bac * hs + 1e-3 + margin)) ** 2 < 1
        sx, sy = self.spine_centre()
        spine = (X - sx) ** 2 + (Y - sy) ** 2 < (self.rv + 4 + margin) ** 2
        ax, ay = sx + self.rv + 0.8 * self.ra, sy - 0.4 * self.rv
        aorta = (X - ax) ** 2 + (Y - ay) ** 2 < (self.ra + 1.5 + margin) ** 2
        return band | heart | spine | aorta

    def lung_label(self, X, Y, Z):
        """3 (right lung, x < centre), 4 (left lung) or 0, broadcasting over X, Y, Z."""
        inside = self.cavity(X, Y, Z) & ~self.mediastinum(X, Y, Z, margin=3.0)
        return np.where(inside, np.where(X < self.cx, RIGHT_LUNG, LEFT_LUNG), 0).astype(np.uint8)

    def labels(self, X, Y, Z) -> np.ndarray:
        """Tissue label (:data:`LABELS`) per point (uint8, broadcast shape)."""
        shape = np.broadcast_shapes(np.shape(X), np.shape(Y), np.shape(Z))

        def full(m):
            return np.broadcast_to(m, shape)

        s = self._zscale(Z, 0.0015)
        bb = np.where(Y < self.cy, self.b_ant, self.b_post) * s
        u = (X - self.cx) / (self.a * s)
        v = (Y - self.cy) / bb
        rb = _squircle(u, v, 0.44)
        lab = np.zeros(shape, np.uint8)
        lab[rb < 1.0] = 1
        # muscle: inset the body outline by the fat thickness
        u2 = (X - self.cx) / (self.a * s - self.t_fat)
        v2 = (Y - self.cy) / (bb - self.t_fat)
        rm = _squircle(u2, v2, 0.39)
        lab[rm < 1.0] = 2
        # ribs: bands in the shell just outside the cavity, descending anteriorly
        uc, vc = self._uv(X, Y, Z)
        rc = _squircle(uc, vc, 0.34)
        rad = np.sqrt((X - self.cx) ** 2 + (Y - self.cy) ** 2)
        depth = rad * (1.0 - 1.0 / np.maximum(rc, 1e-3))  # mm outside the cavity outline
        ang = np.arctan2(np.abs(X - self.cx), Y - self.cy)  # 0 posterior midline … pi anterior
        arc = ang * self.a
        phase = np.mod(Z - self.rib_phase + self.rib_slope * arc, self.rib_pitch) - 0.5 * self.rib_pitch
        rib = (((depth - 4.5) / 4.0) ** 2 + (phase / 5.0) ** 2 < 1.0) & (ang > 0.35)
        lab[rib & full(ang < 2.5)] = 8
        lab[rib & full(ang >= 2.5)] = 9  # costal cartilage
        # sternum
        st_y = self.cy - (self.b_ant * s - self.t_fat - 0.5 * self.t_mus)
        lab[full(((X - self.cx) / 11.0) ** 2 + ((Y - st_y) / 5.0) ** 2 < 1)] = 8
        cav = self.cavity(X, Y, Z)
        med = self.mediastinum(X, Y, Z)
        lungs = cav & ~self.mediastinum(X, Y, Z, margin=3.0)
        lab[full(cav & ~lungs)] = 2  # pleura / pericardial soft tissue
        lab[full(med & cav)] = 5
        # heart and aorta inside the mediastinum
        ac, bac, bpc = self.cavity_axes(Z)
        hz = np.sqrt(np.clip(1.0 - ((Z - self.z_heart) / 70.0) ** 2, 0, 1))
        hx = self.cx + self.heart_u * ac
        hy = self.cy - 0.3 * bac
        heart = ((X - hx) / (0.32 * ac * hz + 1e-3)) ** 2 + ((Y - hy) / (0.40 * bac * hz + 1e-3)) ** 2 < 1
        lab[full(heart)] = 6
        sx, sy = self.spine_centre()
        ax, ay = sx + self.rv + 0.8 * self.ra, sy - 0.4 * self.rv
        lab[full((X - ax) ** 2 + (Y - ay) ** 2 < self.ra ** 2)] = 7
        # spine: vertebral body, canal and the posterior arch
        d2 = (X - sx) ** 2 + (Y - sy) ** 2
        lab[full(d2 < self.rv ** 2)] = 8
        cy2 = sy + self.rv + 7.0
        dc2 = (X - sx) ** 2 + (Y - cy2) ** 2
        lab[full((dc2 < 10.0 ** 2) & (dc2 >= 6.5 ** 2) & (Y > sy))] = 8
        lab[full(dc2 < 6.5 ** 2)] = 10
        lab[lungs] = full(np.where(X < self.cx, RIGHT_LUNG, LEFT_LUNG))[lungs]
        return lab

    def hu(self, lab: np.ndarray, X, Y, Z, texture: np.ndarray) -> np.ndarray:
        """HU (float32) per point from labels, with ``texture`` (unit-variance smooth noise)."""
        lut = np.full(256, -1000.0, np.float32)
        for k, v in BASE_HU.items():
            lut[k] = v
        out = lut[lab]
        ac, bac, bpc = self.cavity_axes(Z)
        # lungs: gravity-dependent density (supine: posterior denser) plus parenchymal texture
        grad = np.clip((Y - self.cy) / bpc, -1, 1) * self.lung_gradient
        lung = (lab == RIGHT_LUNG) | (lab == LEFT_LUNG)
        lung_hu = self.lung_hu + grad + 22.0 * texture
        out = np.where(lung, lung_hu, out)
        soft = (lab == 1) | (lab == 2) | (lab == 5) | (lab == 6)
        out = np.where(soft, out + 12.0 * texture, out)
        bone = lab == 8
        out = np.where(bone, out + 90.0 * texture, out)
        return out.astype(np.float32)

    def fissure_occupancy(self, X, Y, Z, lab: np.ndarray, slice_mm: float) -> np.ndarray:
        """Soft occupancy (0..1) of one oblique fissure per lung, widened for thick slices."""
        occ = np.zeros(lab.shape, np.float32)
        for lung_label, (z0, slope) in zip((RIGHT_LUNG, LEFT_LUNG), self.fissure):
            # a curved oblique surface z = z0 + slope (y - cy) + …: posterior-superior to
            # anterior-inferior, and lower laterally
            nrm = np.sqrt(1.0 + slope ** 2)
            d = (Z - z0 - slope * (Y - self.cy) - 0.35 * slope * np.abs(X - self.cx)
                 - 0.004 * (Y - self.cy) ** 2) / nrm
            sig = float(np.sqrt(0.35 ** 2 + (slice_mm / nrm) ** 2 / 12.0))
            m = np.broadcast_to(np.abs(d) < 3 * sig, lab.shape) & (lab == lung_label)
            f = (0.35 / sig) * np.exp(-0.5 * (np.broadcast_to(d, lab.shape)[m] / sig) ** 2)
            occ[m] = np.maximum(occ[m], f)
        return occ

    def hilum(self, side: int):
        """Where the ``side`` lung's bronchovascular tree enters it (x, y, z) and its inward axis."""
        ac, bac, bpc = self.cavity_axes(self.z_hilum)
        sgn = -1.0 if side == RIGHT_LUNG else 1.0
        x = self.cx + 0.04 * ac + sgn * (0.075 * ac + 6.0)
        return np.array([x, self.cy + 0.05 * bpc, self.z_hilum]), np.array([sgn, 0.0, 0.0])
