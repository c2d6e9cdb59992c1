"""Built-in predictors: ``cnn3d`` (small 3-D CNN), ``radimgnet`` (ResNet-50 on axial slices),
``medsam`` (LiteMedSAM's TinyViT encoder on axial slices), and their shared training loop."""

from wsbench.predictors.cnn3d import CNN3DPredictor
from wsbench.predictors.medsam import MedSAMPredictor
from wsbench.predictors.radimgnet import RadImageNetPredictor

__all__ = ["CNN3DPredictor", "RadImageNetPredictor", "MedSAMPredictor"]
