"""Predictor: a differentiable classifier p(nodule | patch), trained with image-level labels."""

from __future__ import annotations

import abc
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from wsbench.interfaces.plugin import Plugin, Trainable


class CamHead(NamedTuple):
    """What CAM proper needs: ``logit = weight · GAP(features) + bias`` (exactly, or for the
    GAP part of the head). ``weight`` has shape ``(C,)`` where C is the channel count of
    :meth:`Predictor.target_layer`'s output."""

    weight: torch.Tensor
    bias: float


class Predictor(Plugin, Trainable, abc.ABC):
    """Classifier of patches. Subclasses hold an :class:`torch.nn.Module` in ``self.model``.

    Shapes: input ``x`` is ``(B, 1, D, H, W)`` float in the benchmark's normalised intensity
    (see :mod:`wsbench.data.intensity`); :meth:`logits` returns ``(B,)`` — the logit of
    "nodule present". It must be differentiable w.r.t. ``x`` (guidance and attributions use
    ``torch.autograd.grad`` through it), so never detach or leave autograd inside.
    """

    role: ClassVar[str] = "predictor"
    #: "3d" for volumetric models, "2d-slices" for 2-D backbones applied to axial slices.
    geometry: ClassVar[str] = "3d"
    model: nn.Module

    @abc.abstractmethod
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, D, H, W)`` → ``(B,)`` nodule logits (differentiable)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)

    @abc.abstractmethod
    def target_layer(self) -> nn.Module:
        """The layer whose activations CAM-type methods use (normally the last conv block).

        For 3-D models its output is ``(B, C, d, h, w)``; for 2-D slice models it is
        ``(B*D, C, h, w)`` and :meth:`features_to_volume` rearranges it."""

    def features_to_volume(self, feats: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Rearrange ``target_layer`` activations (or their gradients) to ``(B, C, d, h, w)``.

        3-D models: identity. 2-D slice models: ``(B*D, C, h, w)`` → ``(B, C, D, h, w)``."""
        if feats.dim() == 5:
            return feats
        bd, c, h, w = feats.shape
        return feats.reshape(batch_size, bd // batch_size, c, h, w).permute(0, 2, 1, 3, 4)

    def cam_head(self) -> CamHead | None:
        """Linear weights on globally average-pooled ``target_layer`` features, for CAM proper;
        ``None`` when the model has no such head (CAM then is not applicable)."""
        return None

    def to(self, device: torch.device | str) -> "Predictor":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def eval(self) -> "Predictor":
        self.model.eval()
        return self
