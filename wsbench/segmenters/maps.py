"""Small tensor operations on score maps shared by the segmenters.

All functions are torch-native, batched and keep tensors on their device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def upsample_to(maps: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Trilinearly resample ``(B, d, h, w)`` maps to ``(B, *size)``.

    ``align_corners=False`` treats voxels as cells, so a map at a feature stride of ``s`` is
    centred on the patch grid the way a strided convolution's receptive fields are. A map
    already at ``size`` is returned unchanged.

    Example::

        >>> upsample_to(torch.ones(2, 4, 4, 4), (32, 32, 32)).shape
        torch.Size([2, 32, 32, 32])
    """
    if tuple(maps.shape[-3:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=tuple(size), mode="trilinear", align_corners=False).squeeze(1)


def gaussian_kernel1d(sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian of standard deviation ``sigma`` (voxels), truncated at 3 sigma."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(B, D, H, W)`` maps, ``sigma`` in voxels.

    Borders are padded by replication (so a constant map stays constant). ``sigma <= 0``
    returns the input. Matches ``scipy.ndimage.gaussian_filter(mode="nearest", truncate=3)``
    up to float error.
    """
    if sigma <= 0:
        return maps
    k = gaussian_kernel1d(sigma, maps.device, maps.dtype)
    r = (k.numel() - 1) // 2
    out = maps.unsqueeze(1)
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        # F.pad lists the last axis first
        pad[2 * (2 - axis)] = r
        pad[2 * (2 - axis) + 1] = r
        out = F.conv3d(F.pad(out, pad, mode="replicate"), k.view(shape))
    return out.squeeze(1)


def finite(maps: torch.Tensor) -> torch.Tensor:
    """Replace NaN by 0 and ±inf by the largest finite float, so every map is scoreable."""
    return torch.nan_to_num(maps.float(), nan=0.0)
