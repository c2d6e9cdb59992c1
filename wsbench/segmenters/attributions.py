"""Input-attribution baselines: gradient saliency, integrated gradients, occlusion (captum).

All three take the predictor's nodule logit ``(B,)`` as the explained output and return a
``(B, D, H, W)`` map on the patch grid directly (the input has one channel, so "aggregate over
the channel" is a sum over a size-1 axis).

* ``saliency`` — Simonyan et al., *Deep Inside Convolutional Networks*, 2014:
  ``|dy/dx|`` (captum ``Saliency(abs=True)``).
* ``ig`` — Sundararajan et al., *Axiomatic Attribution for Deep Networks*, ICML 2017:
  ``(x - x') ⊙ ∫ dy/dx(x' + a(x - x')) da`` on a Gauss-Legendre grid of ``n_steps``
  (captum ``IntegratedGradients``, ``internal_batch_size`` bounds memory). Baseline ``x'``:
  air (``-1``, the normalised value of ≤ -1000 HU — "nothing there") by default. The map is
  ``|attribution|``.
* ``occlusion`` — Zeiler & Fergus, *Visualizing and Understanding Convolutional Networks*,
  ECCV 2014: slide a cube of ``window`` voxels filled with the baseline (air) at ``stride``;
  each voxel gets the mean drop of the logit over the windows covering it (captum
  ``Occlusion``, ``perturbations_per_eval`` windows per forward). The map keeps the positive
  part (a drop means "this region made it a nodule"), option ``sign``.

captum is used because it implements exactly these definitions for any input rank and batches
internally; our own code would be the same few autograd calls. Everything stays on ``x.device``.

Memory: ``ig`` back-propagates ``internal_batch_size`` patches at once and ``occlusion``
forwards ``perturbations_per_eval``. With ``cnn3d`` the defaults (64 / 16) take well under 1 GB;
2-D slice predictors multiply by their slices and input size — measured with ``medsam`` at
``input_size=64`` (5 slices), ``ig`` at the default 64 exceeded 23 GB of RAM and was killed,
``-o segmenter.internal_batch_size=4`` ran in 3.5 GB. The value changes memory and speed,
never the attribution (up to float summation order).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wsbench.errors import WsbenchError
from wsbench.interfaces import Segmenter
from wsbench.options import option
from wsbench.segmenters.maps import finite

_BASELINES = {"air": -1.0, "zero": 0.0}


def _reduce(attr: torch.Tensor, sign: str) -> torch.Tensor:
    """``(B, 1, D, H, W)`` attribution → ``(B, D, H, W)`` map."""
    if sign == "abs":
        attr = attr.abs()
    elif sign == "positive":
        attr = attr.clamp_min(0)
    return finite(attr.sum(1))


def _require(predictor, name):
    if predictor is None:
        raise WsbenchError(f"segmenter '{name}' needs a predictor; pass --predictor NAME")


class SaliencySegmenter(Segmenter):
    """Vanilla gradient saliency |dy/dx| (Simonyan et al. 2014)."""

    name = "saliency"
    description = "gradient saliency |d logit / d x| (Simonyan 2014, captum Saliency)"

    def segment(self, x, predictor=None, generator=None):
        from captum.attr import Saliency

        _require(predictor, self.name)
        with torch.enable_grad():
            # an input that already requires grad keeps captum from warning on every call
            attr = Saliency(predictor.logits).attribute(x.detach().clone().requires_grad_(True), abs=True)
        return _reduce(attr.detach(), "abs")


class IntegratedGradientsSegmenter(Segmenter):
    """Integrated gradients from an air baseline (Sundararajan et al. 2017)."""

    name = "ig"
    description = "integrated gradients from an air baseline (Sundararajan 2017, captum), |attribution|"

    @dataclass
    class Options:
        n_steps: int = option(32, "integration steps (Gauss-Legendre points)")
        baseline: str = option("air", "reference input: air (-1, i.e. -1000 HU) or zero (-300 HU)",
                               choices=tuple(_BASELINES))
        internal_batch_size: int = option(64, "interpolated inputs per forward pass (memory bound)")
        sign: str = option("abs", "how attributions become scores", choices=("abs", "positive", "signed"))

        def validate(self):
            if self.n_steps < 1:
                raise ValueError("n_steps must be >= 1")
            if self.internal_batch_size < 1:
                raise ValueError("internal_batch_size must be >= 1")

    def segment(self, x, predictor=None, generator=None):
        from captum.attr import IntegratedGradients

        _require(predictor, self.name)
        o = self.options
        with torch.enable_grad():
            attr = IntegratedGradients(predictor.logits).attribute(
                x.detach().clone(), baselines=_BASELINES[o.baseline], n_steps=o.n_steps,
                method="gausslegendre", internal_batch_size=max(o.internal_batch_size, x.shape[0]))
        return _reduce(attr.detach(), o.sign)


class OcclusionSegmenter(Segmenter):
    """Occlusion sensitivity with an air-filled sliding cube (Zeiler & Fergus 2014)."""

    name = "occlusion"
    description = "occlusion sensitivity: logit drop when a sliding cube is set to air (Zeiler 2014, captum)"

    @dataclass
    class Options:
        window: int = option(8, "edge of the occluding cube, voxels")
        stride: int = option(4, "step between cube positions, voxels")
        baseline: str = option("air", "fill value: air (-1) or zero", choices=tuple(_BASELINES))
        perturbations_per_eval: int = option(16, "occluded copies per forward pass (memory bound)")
        sign: str = option("positive", "how attributions become scores", choices=("abs", "positive", "signed"))

        def validate(self):
            if self.window < 1 or self.stride < 1:
                raise ValueError("window and stride must be >= 1")
            if self.perturbations_per_eval < 1:
                raise ValueError("perturbations_per_eval must be >= 1")

    def segment(self, x, predictor=None, generator=None):
        from captum.attr import Occlusion

        _require(predictor, self.name)
        o = self.options
        w = min(o.window, *x.shape[-3:])
        with torch.no_grad():
            attr = Occlusion(predictor.logits).attribute(
                x.detach(), sliding_window_shapes=(1, w, w, w), strides=(1, o.stride, o.stride, o.stride),
                baselines=_BASELINES[o.baseline], perturbations_per_eval=o.perturbations_per_eval)
        return _reduce(attr, o.sign)
