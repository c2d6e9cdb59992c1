"""The scan grid of a synthetic CT: shape, spacing, origin and an axis-aligned direction.

Arrays are ``(z, y, x)``; world coordinates are LUNA16/ITK's LPS millimetres
(x towards the patient's left, y posterior, z superior). The direction matrix is
diagonal with entries ±1 (LUNA16's scans all have the identity; a flipped z axis is
used on some synthetic scans so readers must honour the header), which keeps every
world axis separable: voxel ``(k, j, i)`` of the array lies at
``x = ox + dx * i * sx``, ``y = oy + dy * j * sy``, ``z = oz + dz * k * sz``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScanGrid:
    """``shape`` ``(nz, ny, nx)``; ``spacing`` ``(sz, sy, sx)`` mm; ``origin`` ``(x, y, z)`` mm
    (ITK order, as in the ``.mhd`` ``Offset``); ``flip`` ``(fx, fy, fz)`` in {+1, -1} — the
    diagonal of the direction matrix.

    Example::

        g = ScanGrid((40, 64, 64), (2.5, 0.8, 0.8), (-25.6, -25.6, -300.0), (1, 1, -1))
        z, y, x = g.axes()          # world mm along each array axis
        g.to_index((0.0, 0.0, -320.0))  # -> (k, j, i) float voxel index
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    flip: tuple[int, int, int] = (1, 1, 1)

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates (mm, float32) of the voxel centres along z, y and x."""
        nz, ny, nx = self.shape
        sz, sy, sx = self.spacing
        ox, oy, oz = self.origin
        fx, fy, fz = self.flip
        return (np.float32(oz) + np.float32(fz * sz) * np.arange(nz, dtype=np.float32),
                np.float32(oy) + np.float32(fy * sy) * np.arange(ny, dtype=np.float32),
                np.float32(ox) + np.float32(fx * sx) * np.arange(nx, dtype=np.float32))

    def broadcast_axes(self, sl: tuple[slice, slice, slice] | None = None):
        """``Z (nz,1,1)``, ``Y (1,ny,1)``, ``X (1,1,nx)`` world mm, optionally of a sub-box."""
        z, y, x = self.axes()
        if sl is not None:
            z, y, x = z[sl[0]], y[sl[1]], x[sl[2]]
        return z[:, None, None], y[None, :, None], x[None, None, :]

    def to_index(self, xyz) -> np.ndarray:
        """World ``(..., 3)`` points ``(x, y, z)`` → float voxel indices ``(..., 3)`` as ``(k, j, i)``."""
        p = np.asarray(xyz, dtype=np.float64)
        ox, oy, oz = self.origin
        fx, fy, fz = self.flip
        sz, sy, sx = self.spacing
        return np.stack([(p[..., 2] - oz) / (fz * sz), (p[..., 1] - oy) / (fy * sy),
                         (p[..., 0] - ox) / (fx * sx)], axis=-1)

    def to_world(self, kji) -> np.ndarray:
        """Float voxel indices ``(..., 3)`` ``(k, j, i)`` → world ``(..., 3)`` ``(x, y, z)`` mm."""
        q = np.asarray(kji, dtype=np.float64)
        ox, oy, oz = self.origin
        fx, fy, fz = self.flip
        sz, sy, sx = self.spacing
        return np.stack([ox + fx * sx * q[..., 2], oy + fy * sy * q[..., 1], oz + fz * sz * q[..., 0]], axis=-1)

    def box(self, lo_xyz, hi_xyz, margin_vox: int = 1) -> tuple[slice, slice, slice] | None:
        """Array slices covering the world box ``[lo, hi]`` (+ margin), clipped; None if outside."""
        a = self.to_index(np.asarray(lo_xyz, dtype=np.float64))
        b = self.to_index(np.asarray(hi_xyz, dtype=np.float64))
        lo = np.floor(np.minimum(a, b)).astype(int) - margin_vox
        hi = np.ceil(np.maximum(a, b)).astype(int) + margin_vox + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, self.shape)
        if np.any(hi <= lo):
            return None
        return tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))

    @property
    def direction(self) -> tuple[float, ...]:
        """ITK direction matrix, row-major 3×3."""
        fx, fy, fz = self.flip
        return (float(fx), 0.0, 0.0, 0.0, float(fy), 0.0, 0.0, 0.0, float(fz))
