"""``cnn3d``: a small, fast 3-D CNN — the CPU-friendly default predictor.

Architecture (``width`` = w, default 16), on ``(B, 1, D, H, W)`` patches:

* stage 1 at full resolution: Conv3d(1→w, 3) · BN · ReLU, then max-pool 2;
* stage 2 at 1/2: [Conv3d(→2w, 3) · BN · ReLU] × 2, max-pool 2;
* stage 3 at 1/4: [Conv3d(→4w, 3) · BN · ReLU] × 2 — the CAM target layer, ``(B, 4w, D/4, H/4, W/4)``
  (8³ for 32³ patches);
* :class:`~wsbench.predictors.base.PooledHead` — ``gap+gmp`` (default) or ``gap`` (exact CAM head).

About 0.2 M parameters at w = 16. Why max pooling in the head: with global average pooling
alone the same kind of network stalled near chance on small nodules (a 4 mm nodule is a few
of the 512 feature voxels); concatenating global max pooling fixed it (FACTS.md; measured again
by ``benchmarks/predictors.py --heads``: on luna16-synth, seed 0, 3 epochs, validation AUC per
epoch 0.69 / 0.74 / 0.84 with ``gap+gmp`` against 0.67 / 0.49 / 0.58 with ``gap``; test AUC
0.78 vs 0.66). ``head=gap`` keeps an exact GAP→linear head so that CAM proper
(:meth:`cam_head`) is available — at the price of a weaker classifier.

Example::

    >>> p = CNN3DPredictor({"epochs": 5})
    >>> p.fit(train_patchset, validation_patchset)["val_auc"]
    >>> p.logits(torch.zeros(2, 1, 32, 32, 32)).shape
    torch.Size([2])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wsbench.interfaces.predictor import CamHead
from wsbench.options import option
from wsbench.predictors.base import HEAD_CHOICES, PooledHead, TorchPredictor, TrainOptions


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]


class CNN3D(nn.Module):
    """The network: ``(B, 1, D, H, W)`` → ``(B,)`` logits; ``features`` is the CAM layer."""

    def __init__(self, width: int = 16, head: str = "gap+gmp") -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(*_block(1, w), nn.MaxPool3d(2))
        self.stage2 = nn.Sequential(*_block(w, 2 * w), *_block(2 * w, 2 * w), nn.MaxPool3d(2))
        self.features = nn.Sequential(*_block(2 * w, 4 * w), *_block(4 * w, 4 * w))
        self.head = PooledHead(4 * w, head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stage2(self.stem(x))))


class CNN3DPredictor(TorchPredictor):
    """Small 3-D CNN with a pooled linear head; trains in minutes on a CPU."""

    name = "cnn3d"
    description = "small fast 3-D CNN (3 stages, GAP+GMP or exact GAP head), trained from scratch; CPU default"
    geometry = "3d"

    @dataclass
    class Options(TrainOptions):
        width: int = option(16, "channels of the first stage (stages use w, 2w, 4w)")
        head: str = option("gap+gmp", "pooling before the linear head; 'gap' gives an exact CAM head",
                           choices=HEAD_CHOICES)

        def validate(self) -> None:
            super().validate()
            if self.width < 1:
                raise ValueError("width must be >= 1")

    def build_model(self) -> nn.Module:
        return CNN3D(self.options.width, self.options.head)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 1:
            raise ValueError(f"predictor 'cnn3d' expects (B, 1, D, H, W) patches, got {tuple(x.shape)}")
        return self.model(x)

    def target_layer(self) -> nn.Module:
        return self.model.features

    def cam_head(self) -> CamHead | None:
        return self.model.head.cam_head()

    def provenance(self) -> dict:
        return {"init": "scratch", "architecture": f"cnn3d width={self.options.width} head={self.options.head}"}
