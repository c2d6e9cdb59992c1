"""Segmenter: turns patches into voxel score maps."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch

from wsbench.interfaces.plugin import Plugin


class Segmenter(Plugin, abc.ABC):
    """A weakly-supervised segmentation method.

    :meth:`segment` receives ``x`` of shape ``(B, 1, D, H, W)`` (normalised intensity, on
    ``self.device``) and returns float score maps ``(B, D, H, W)`` on the patch grid — higher
    means "more nodule". It must not binarise: the harness turns every method's maps into masks
    by one rule fitted on the validation split (:mod:`wsbench.binarize`). Maps must be finite.

    ``predictor``/``generator`` are given when ``needs_predictor``/``needs_generator`` say so
    (otherwise ``None``). The runner seeds torch per case before calling, so a stochastic
    method is reproducible; do not reseed globally inside.
    """

    role: ClassVar[str] = "segmenter"
    needs_predictor: ClassVar[bool] = True
    needs_generator: ClassVar[bool] = False

    @abc.abstractmethod
    def segment(self, x: torch.Tensor, predictor=None, generator=None) -> torch.Tensor:
        """``(B, 1, D, H, W)`` → ``(B, D, H, W)`` float score maps."""

    def to(self, device) -> "Segmenter":
        self.device = torch.device(device)
        return self
