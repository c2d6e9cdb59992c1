"""Multi-scale Hessian "dot" blob filter (Li, Sone & Doi, Med. Phys. 2003).

At each scale sigma the scale-normalised Hessian ``sigma^2 * H(G_sigma * I)`` has eigenvalues
``|l1| >= |l2| >= |l3|``. A bright blob has all three negative; a tube (vessel) has one near zero,
a plane (wall) two. The dot response ``|l3|^2 / |l1|`` where all are negative (else 0) is high
on blobs and low on tubes and planes; the maximum over scales covers several nodule sizes
(blob radius ≈ sigma·√3). It is the classic non-learned nodule enhancement filter, and an
honest trivial-but-sensible bar for learned methods.

Shapes: ``segment(x)`` takes ``(B, 1, D, H, W)`` normalised intensity and returns
``(B, D, H, W)``. Derivatives are separable 1-D Gaussian-derivative convolutions in torch on
``x.device``; eigenvalues come from ``torch.linalg.eigvalsh`` on the per-voxel 3×3 matrices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wsbench.interfaces import Segmenter
from wsbench.options import option


def _gauss_kernels(sigma_vox: float, device, dtype):
    """1-D Gaussian and its first and second derivatives, sampled on ±4 sigma."""
    radius = max(1, int(math.ceil(4 * sigma_vox)))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    g = torch.exp(-0.5 * (t / sigma_vox) ** 2)
    g = g / g.sum()
    g1 = -t / sigma_vox**2 * g
    g2 = g * (t**2 - sigma_vox**2) / sigma_vox**4
    g2 = g2 - g2.mean()  # zero DC so a flat region gives no response
    return g, g1, g2


def _sep_conv(x: torch.Tensor, kernels) -> torch.Tensor:
    """Apply one 1-D kernel per spatial axis (z, y, x) to ``(B, 1, D, H, W)``; replicate padding."""
    for axis, k in enumerate(kernels):
        r = (k.numel() - 1) // 2
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        x = F.conv3d(F.pad(x, pad, mode="replicate"), k.view(shape))
    return x


def hessian_eigenvalues(x: torch.Tensor, sigma_vox: float) -> torch.Tensor:
    """Scale-normalised Hessian eigenvalues, ``(B, 1, D, H, W)`` → ``(B, D, H, W, 3)``, sorted
    by decreasing magnitude."""
    g, g1, g2 = _gauss_kernels(sigma_vox, x.device, x.dtype)
    d = {}
    for i in range(3):
        for j in range(i, 3):
            ks = [g, g, g]
            if i == j:
                ks[i] = g2
            else:
                ks[i], ks[j] = g1, g1
            d[i, j] = _sep_conv(x, ks)[:, 0] * sigma_vox**2
    h = torch.stack([torch.stack([d[min(i, j), max(i, j)] for j in range(3)], -1) for i in range(3)], -2)
    ev = torch.linalg.eigvalsh(h)
    order = ev.abs().argsort(dim=-1, descending=True)
    return torch.gather(ev, -1, order)


def dot_response(x: torch.Tensor, sigmas_vox: list[float]) -> torch.Tensor:
    """Max over scales of the dot filter ``|l3|^2/|l1|`` (all eigenvalues negative, else 0).
    ``(B, 1, D, H, W)`` → ``(B, D, H, W)``."""
    best = None
    for s in sigmas_vox:
        ev = hessian_eigenvalues(x, s)
        l1, l3 = ev[..., 0], ev[..., 2]
        blob = (ev < 0).all(dim=-1)
        r = torch.where(blob, l3.abs() ** 2 / l1.abs().clamp_min(1e-12), torch.zeros_like(l1))
        best = r if best is None else torch.maximum(best, r)
    return best


class BlobDotSegmenter(Segmenter):
    """Multi-scale Hessian dot filter — a non-learned nodule-enhancement reference."""

    name = "blob-dot"
    description = "multi-scale Hessian dot (blob) filter, Li et al. 2003 (non-learned reference; template plugin)"
    needs_predictor = False
    needs_generator = False

    @dataclass
    class Options:
        sigmas_mm: tuple[float, ...] = option((1.0, 2.0, 3.5), "Gaussian scales in mm (blob radius ≈ sigma·√3)")
        spacing_mm: float = option(1.0, "patch voxel spacing in mm (the benchmark's geometry)")
        min_intensity: float = option(-0.6, "normalised intensity below which the response is zeroed "
                                             "(-0.6 ≈ -720 HU keeps ground glass)")

        def validate(self):
            if not self.sigmas_mm or min(self.sigmas_mm) <= 0:
                raise ValueError("sigmas_mm must be positive")

    def segment(self, x, predictor=None, generator=None):
        o = self.options
        resp = dot_response(x.float(), [s / o.spacing_mm for s in o.sigmas_mm])
        return resp * (x[:, 0] >= o.min_intensity)
