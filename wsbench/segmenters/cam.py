"""Class-activation-map family in 3-D: CAM, Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM.

Every method combines the activations ``A`` ``(B, C, d, h, w)`` of the predictor's
:meth:`~wsbench.interfaces.Predictor.target_layer` with the gradient ``G = dy/dA`` of the
nodule logit ``y`` (one forward + one backward pass for the whole batch, see
:mod:`~wsbench.segmenters.layer_capture`), then upsamples the ``(B, d, h, w)`` map
trilinearly to the patch grid. 2-D slice predictors are supported through
:meth:`~wsbench.interfaces.Predictor.features_to_volume` (``(B*D, C, h, w)`` →
``(B, C, D, h, w)``): channel weights are then pooled over the whole volume.

Conventions, as in the original papers (Σ_k sums over the ``d·h·w`` positions):

* ``cam`` — Zhou et al., *Learning Deep Features for Discriminative Localization*, CVPR 2016:
  ``M = Σ_c w_c A_c`` with the GAP→linear head weights (:meth:`Predictor.cam_head`); no ReLU.
* ``gradcam`` — Selvaraju et al., *Grad-CAM*, ICCV 2017: ``α_c = mean_k G_c^k``,
  ``M = ReLU(Σ_c α_c A_c)``.
* ``gradcam++`` — Chattopadhay et al., *Grad-CAM++*, WACV 2018 (eq. 19, the exponential-score
  closed form with powers of the first gradient): ``a_c^k = G² / (2G² + Σ_k A_c^k · G³)``,
  ``w_c = Σ_k a_c^k ReLU(G_c^k)``, ``M = ReLU(Σ_c w_c A_c)``.
* ``xgradcam`` — Fu et al., *Axiom-based Grad-CAM*, BMVC 2020:
  ``w_c = Σ_k (A_c^k / Σ_k A_c^k) G_c^k``, ``M = ReLU(Σ_c w_c A_c)``.
* ``layercam`` — Jiang et al., *LayerCAM*, IEEE TIP 2021: ``M = ReLU(Σ_c ReLU(G_c) ⊙ A_c)``.
* ``hirescam`` — Draelos & Carin, *Use HiResCAM instead of Grad-CAM*, 2020:
  ``M = Σ_c G_c ⊙ A_c`` (no ReLU in the definition; pytorch-grad-cam clamps it, we do not —
  the binarisation is fitted per method anyway).

Why own code rather than captum or MONAI: captum has only ``LayerGradCam`` (no ++/X/Layer/HiRes
variants); MONAI 1.6.1 has ``CAM``, ``GradCAM``, ``GradCAMpp``, but ``GradCAMpp`` crashes on a
batch of 5-D inputs (it multiplies the ``(B,)`` score into the ``(B, C, d, h, w)`` gradient, so
the batch broadcasts against the last spatial axis) and sums ``A·G³`` over positions in the
denominator instead of ``(Σ_k A)·G³`` of eq. 19; pytorch-grad-cam breaks on 5-D input for
++/X/LayerCAM (FACTS.md). Our Grad-CAM equals captum's ``LayerGradCam`` + trilinear
``LayerAttribution.interpolate``, and every variant equals a literal numpy transcription of its
paper's formula (both asserted in tests/test_segmenters.py, for 3-D and 2-D slice predictors).
Speed, ``python benchmarks/segmenters.py --cam-speed`` (CPU, 1 torch thread, batch 8 × 32³,
4-layer 3-D CNN, median of 30; the machine was shared, load ≈ 7):

==========  =================================  ========
method      implementation                     ms/batch
==========  =================================  ========
Grad-CAM    wsbench (torch)                    84.0
Grad-CAM    captum LayerGradCam + interpolate  102.2
Grad-CAM    MONAI GradCAM                      336.3
Grad-CAM++  wsbench (torch)                    84.9
Grad-CAM++  MONAI GradCAMpp                    fails (batch of 5-D inputs)
==========  =================================  ========

Example::

    >>> seg = GradCAMSegmenter()
    >>> maps = seg.segment(x, predictor)          # x: (B, 1, 32, 32, 32) → (B, 32, 32, 32)
"""

from __future__ import annotations

import torch

from wsbench.errors import WsbenchError
from wsbench.interfaces import Segmenter
from wsbench.options import NoOptions, describe_options
from wsbench.segmenters.layer_capture import capture_layer
from wsbench.segmenters.maps import finite, upsample_to

_SPATIAL = (2, 3, 4)


def gap_head_option(predictor_cls) -> bool:
    """True when the predictor class has an option ``head`` with choice ``"gap"`` (which gives
    an exact CAM head, e.g. ``cnn3d``)."""
    return any(d["name"] == "head" and "gap" in (d["choices"] or ())
               for d in describe_options(getattr(predictor_cls, "Options", NoOptions)))


class _CamSegmenter(Segmenter):
    """Shared driver: capture, combine (subclass), upsample to the patch grid."""

    needs_predictor = True
    needs_generator = False
    uses_gradients = True

    def combine(self, acts: torch.Tensor, grads: torch.Tensor, predictor) -> torch.Tensor:
        """``(B, C, d, h, w)`` activations and gradients → ``(B, d, h, w)`` map."""
        raise NotImplementedError

    def check(self, predictor) -> None:
        """Raise :class:`WsbenchError` before any work when ``predictor`` cannot be used."""
        if predictor is None:
            raise WsbenchError(f"segmenter '{self.name}' needs a predictor; pass --predictor NAME")

    def segment(self, x: torch.Tensor, predictor=None, generator=None) -> torch.Tensor:
        self.check(predictor)
        cap = capture_layer(predictor, x, need_gradients=self.uses_gradients)
        m = self.combine(cap.activations, cap.gradients, predictor)
        return finite(upsample_to(m, tuple(x.shape[-3:])))


class CAMSegmenter(_CamSegmenter):
    """CAM (Zhou et al. 2016): head weights × target-layer features; needs a GAP→linear head."""

    name = "cam"
    description = "CAM (Zhou 2016): GAP-head weights x last-layer features, upsampled (needs a predictor with cam_head)"
    uses_gradients = False

    def check(self, predictor) -> None:
        super().check(predictor)
        if predictor.cam_head() is None:
            hint = " or -o predictor.head=gap" if gap_head_option(type(predictor)) else ""
            raise WsbenchError(
                f"segmenter 'cam' needs a predictor with a global-average-pooling linear head, and "
                f"'{predictor.name}' has none (cam_head() is None); use --segmenter gradcam{hint}")

    def combine(self, acts, grads, predictor):
        head = predictor.cam_head()
        w = head.weight.to(acts.device, acts.dtype).reshape(-1)
        if w.numel() != acts.shape[1]:
            raise WsbenchError(
                f"predictor '{predictor.name}': cam_head weight has {w.numel()} entries but target_layer "
                f"has {acts.shape[1]} channels; fix the predictor's cam_head")
        return torch.einsum("c,bcdhw->bdhw", w, acts)


class GradCAMSegmenter(_CamSegmenter):
    """Grad-CAM (Selvaraju et al. 2017)."""

    name = "gradcam"
    description = "Grad-CAM (Selvaraju 2017): ReLU(sum_c mean(dy/dA_c) A_c), 3-D, upsampled trilinearly"

    def combine(self, acts, grads, predictor):
        alpha = grads.mean(dim=_SPATIAL, keepdim=True)
        return torch.relu((alpha * acts).sum(1))


class GradCAMPlusPlusSegmenter(_CamSegmenter):
    """Grad-CAM++ (Chattopadhay et al. 2018)."""

    name = "gradcam++"
    description = "Grad-CAM++ (Chattopadhay 2018): positive-gradient weights with higher-order alphas, 3-D"

    def combine(self, acts, grads, predictor):
        g2 = grads * grads
        g3 = g2 * grads
        sum_a = acts.sum(dim=_SPATIAL, keepdim=True)
        denom = 2.0 * g2 + sum_a * g3
        # alpha is 0/0 where the gradient vanishes: define it as 0 there (no contribution)
        alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                            torch.zeros_like(denom))
        w = (alpha * torch.relu(grads)).sum(dim=_SPATIAL, keepdim=True)
        return torch.relu((w * acts).sum(1))


class XGradCAMSegmenter(_CamSegmenter):
    """XGrad-CAM (Fu et al. 2020)."""

    name = "xgradcam"
    description = "XGrad-CAM (Fu 2020): activation-normalised gradient weights, 3-D"

    def combine(self, acts, grads, predictor):
        sum_a = acts.sum(dim=_SPATIAL, keepdim=True)
        w = (acts / (sum_a + 1e-7) * grads).sum(dim=_SPATIAL, keepdim=True)
        return torch.relu((w * acts).sum(1))


class LayerCAMSegmenter(_CamSegmenter):
    """LayerCAM (Jiang et al. 2021)."""

    name = "layercam"
    description = "LayerCAM (Jiang 2021): ReLU(sum_c ReLU(dy/dA_c) * A_c), voxel-wise weights, 3-D"

    def combine(self, acts, grads, predictor):
        return torch.relu((torch.relu(grads) * acts).sum(1))


class HiResCAMSegmenter(_CamSegmenter):
    """HiResCAM (Draelos & Carin 2020)."""

    name = "hirescam"
    description = "HiResCAM (Draelos 2020): sum_c dy/dA_c * A_c element-wise (faithful to the logit), 3-D"

    def combine(self, acts, grads, predictor):
        return (grads * acts).sum(1)
