"""A lean 3-D U-Net that predicts a rectified-flow velocity ``v(z_t, t)``.

Residual blocks with GroupNorm and SiLU, a sinusoidal time embedding added to every block,
strided-convolution downsampling, transposed-convolution upsampling and one skip
concatenation per level — no
attention anywhere. At the benchmark's 32³ patches, attention buys little (the receptive field
of three levels already spans the patch) and costs most of the time on a CPU: MONAI's
``DiffusionModelUNet`` of similar width was ~7× slower per training step here (FACTS.md).

Shapes: input ``(B, C_in, D, H, W)`` with ``D, H, W`` divisible by ``2 ** (len(channels) - 1)``,
times ``(B,)`` in ``[0, 1]``; output ``(B, C_out, D, H, W)``.

Example::

    >>> net = VelocityUNet(channels=(8, 16))
    >>> net(torch.zeros(2, 1, 16, 16, 16), torch.tensor([0.1, 0.9])).shape
    torch.Size([2, 1, 16, 16, 16])
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding of times ``t`` (``(B,)``, in ``[0, 1]``) → ``(B, dim)``.

    ``t`` is multiplied by ``scale`` first so that the frequencies (``1 .. 1/10000``) resolve
    differences of 1e-3 in time, as for diffusion models trained on 1000 discrete steps."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * scale)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _groups(channels: int) -> int:
    # 8 groups where possible (GroupNorm is batch-size independent: batches of 8 patches are small)
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class ResBlock3d(nn.Module):
    """``GN → SiLU → conv3 → (+ time) → GN → SiLU → conv3`` plus a (1×1×1 if needed) skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv3d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class VelocityUNet(nn.Module):
    """Time-conditioned 3-D U-Net.

    Args:
        in_channels / out_channels: channels of the state ``z`` (1 for pixel-space patches).
        channels: feature channels per level; level ``i`` works at ``1 / 2**i`` resolution.
        blocks: residual blocks per level on each of the down and up paths (2 in the bottleneck).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, channels: Sequence[int] = (16, 32, 64),
                 blocks: int = 1) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be positive integers, got {channels}")
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        self.channels = channels
        self.emb_dim = emb_dim = 4 * channels[0]
        self.time_mlp = nn.Sequential(nn.Linear(channels[0], emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv3d(in_channels, channels[0], 3, padding=1)

        # Down path: ``blocks`` residual blocks per level, then a strided conv; the output of each
        # level's blocks is kept for the skip connection (one skip per level keeps the
        # full-resolution work small: it dominates the cost at 32³).
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = []
        c = channels[0]
        for i, ch in enumerate(channels):
            self.down.append(nn.ModuleList([ResBlock3d(c if b == 0 else ch, ch, emb_dim) for b in range(blocks)]))
            c = ch
            skips.append(c)
            if i < len(channels) - 1:
                self.downsample.append(nn.Conv3d(c, channels[i + 1], 3, stride=2, padding=1))
                c = channels[i + 1]
        self.mid = nn.ModuleList([ResBlock3d(c, c, emb_dim), ResBlock3d(c, c, emb_dim)])

        # Up path: concatenate the level's skip, ``blocks`` residual blocks, then a stride-2
        # transposed conv to the next finer level (cheap: it runs at the coarse resolution).
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, ch in reversed(list(enumerate(channels))):
            self.up.append(nn.ModuleList([ResBlock3d((c + skips.pop()) if b == 0 else ch, ch, emb_dim)
                                          for b in range(blocks)]))
            c = ch
            if i > 0:
                self.upsample.append(nn.ConvTranspose3d(c, channels[i - 1], 2, stride=2))
                c = channels[i - 1]
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv3d(c, out_channels, 3, padding=1)

    @property
    def multiple(self) -> int:
        """Spatial sizes must be divisible by this."""
        return 2 ** (len(self.channels) - 1)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if z.ndim != 5:
            raise ValueError(f"VelocityUNet expects (B, C, D, H, W), got shape {tuple(z.shape)}")
        if any(s % self.multiple for s in z.shape[2:]):
            raise ValueError(f"VelocityUNet with {len(self.channels)} levels needs spatial sizes divisible by "
                             f"{self.multiple}, got {tuple(z.shape[2:])}")
        if t.ndim == 0:
            t = t.expand(z.shape[0])
        emb = self.time_mlp(timestep_embedding(t, self.channels[0]).to(z.dtype))
        h = self.conv_in(z)
        hs = []
        for i, level in enumerate(self.down):
            for block in level:
                h = block(h, emb)
            hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        for block in self.mid:
            h = block(h, emb)
        for j, level in enumerate(self.up):
            h = torch.cat([h, hs.pop()], dim=1)
            for block in level:
                h = block(h, emb)
            if j < len(self.upsample):
                h = self.upsample[j](h)
        return self.conv_out(F.silu(self.norm_out(h)))
