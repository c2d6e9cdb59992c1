"""Built-in segmenters: the paper's guided rectified flow and every baseline it is compared with.

One module per family:

* :mod:`~wsbench.segmenters.flow_guide` — ``flow-guide`` (guided rectified-flow
  counterfactual, arXiv 2604.08313) and ``recon`` (the same with zero guidance);
* :mod:`~wsbench.segmenters.cam` — ``cam``, ``gradcam``, ``gradcam++``, ``xgradcam``,
  ``layercam``, ``hirescam`` (torch-native, batched, 3-D);
* :mod:`~wsbench.segmenters.attributions` — ``saliency``, ``ig``, ``occlusion`` (captum);
* :mod:`~wsbench.segmenters.hu_threshold` — ``hu-threshold``, a non-learned reference.

Shared helpers: :mod:`~wsbench.segmenters.maps` (upsampling, smoothing, finiteness) and
:mod:`~wsbench.segmenters.layer_capture` (activations and gradients of a predictor's target layer).
"""

from wsbench.segmenters.attributions import IntegratedGradientsSegmenter, OcclusionSegmenter, SaliencySegmenter
from wsbench.segmenters.cam import (CAMSegmenter, GradCAMPlusPlusSegmenter, GradCAMSegmenter, HiResCAMSegmenter,
                                    LayerCAMSegmenter, XGradCAMSegmenter)
from wsbench.segmenters.flow_guide import FlowGuideSegmenter, ReconstructionSegmenter
from wsbench.segmenters.hu_threshold import HUThresholdSegmenter

ALL = (
    FlowGuideSegmenter, ReconstructionSegmenter,
    CAMSegmenter, GradCAMSegmenter, GradCAMPlusPlusSegmenter, XGradCAMSegmenter, LayerCAMSegmenter,
    HiResCAMSegmenter,
    SaliencySegmenter, IntegratedGradientsSegmenter, OcclusionSegmenter,
    HUThresholdSegmenter,
)

__all__ = [c.__name__ for c in ALL] + ["ALL"]
