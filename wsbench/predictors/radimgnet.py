"""``radimgnet``: a ResNet-50 (RadImageNet weights if supplied) on axial slices, pooled to one
patch logit.

Pipeline for a patch batch ``(B, 1, D, H, W)`` in normalised intensity ``[-1, 1]``:

1. take ``slices`` axial slices ``slice_stride`` apart around the centre slice
   (:class:`~wsbench.predictors.base.SliceSelector`) → ``(B·S, 1, H, W)``;
2. resize bilinearly to ``input_size``² (default 64: 2× the 32-voxel patch — see below);
3. grey → 3 channels (the same slice replicated, as RadImageNet's RGB-input models expect),
   ``[-1, 1] → [0, 1]`` (the benchmark's HU window ``[-1000, 400]`` becomes 0…1), then, with
   ``normalize=imagenet`` (default), per-channel ImageNet mean/std standardisation — the
   convention of torchvision-style ResNet ports; use ``normalize=unit`` if your weights expect
   plain ``[0, 1]`` input;
4. ResNet-50 trunk → ``layer4`` features ``(B·S, 2048, s, s)`` (``s = input_size / 32``), the
   CAM target layer;
5. features of the S slices stacked to ``(B, 2048, S, s, s)`` → pooled head (``gap+gmp`` or an
   exact ``gap`` CAM head, :class:`~wsbench.predictors.base.PooledHead`).

Why 2-D slices with the grey value replicated, not 2.5-D (three adjacent slices as R, G, B):
2.5-D would need a third of the backbone passes, but pretrained RadImageNet filters saw
three equal channels; feeding them different slices is an input they were never trained on.

Weights: ``-o predictor.weights=PATH`` or the environment variable
``WSBENCH_RADIMAGENET_WEIGHTS`` — a torchvision-style ResNet-50 state dict read with
``torch.load(weights_only=True)``; ``fc.*`` entries (an ImageNet-style classifier) are dropped
(the head replaces it); any other missing or unexpected key is a one-line error listing them.
Without a file the trunk is trained from scratch: a run-time warning is issued and
``provenance()["init"] == "scratch"`` (with a file: ``"pretrained"``, the path and its sha256),
so results and leaderboard rows show it.

CPU cost (why ``input_size=64`` and 5 slices): ResNet-50 costs ~4.1 GFLOPs per 224² image;
at 64² it is ~0.34 GFLOPs, and a 32-patch batch with 5 slices is 160 images per step.
``benchmarks/predictors.py`` measures the training time and inference ms per patch (from
scratch, 64², 3 slices, 2 epochs on luna16-synth: validation AUC 0.66, 23 min on one heavily
shared CPU thread — a 2-D ResNet-50 from scratch is the weakest and slowest CPU option; it is
meant for user-supplied RadImageNet weights and a GPU). On a GPU
use ``-o predictor.input_size=224 -o predictor.slices=0`` (all slices, RadImageNet's resolution).

Example::

    >>> p = RadImageNetPredictor({"weights": "RadImageNet-ResNet50.pt"})
    >>> p.provenance()["init"]
    'pretrained'
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wsbench.checkpoints import file_sha256
from wsbench.interfaces.predictor import CamHead
from wsbench.options import option
from wsbench.predictors.base import (HEAD_CHOICES, PooledHead, SliceOptions, SlicePredictor, TrainOptions,
                                     check_and_load, load_state_dict_file)
from wsbench.predictors.resnet import ResNet50

WEIGHTS_ENV = "WSBENCH_RADIMAGENET_WEIGHTS"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ScratchInitWarning(UserWarning):
    """A pretrained-model predictor is being trained from random initialisation."""


class SliceResNet(nn.Module):
    """Trunk + pooled head; :meth:`slice_features` and :meth:`head_logits` split the forward."""

    def __init__(self, head: str, input_size: int, normalize: str) -> None:
        super().__init__()
        self.backbone = ResNet50(num_classes=None)
        self.head = PooledHead(2048, head)
        self.input_size = input_size
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def prepare(self, s: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` in [-1, 1] → ``(N, 3, S, S)`` network input."""
        if s.shape[-1] != self.input_size or s.shape[-2] != self.input_size:
            s = F.interpolate(s, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        s = ((s + 1.0) * 0.5).expand(-1, 3, -1, -1)
        if self.normalize == "imagenet":
            s = (s - self.mean) / self.std
        return s

    def slice_features(self, s: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(self.prepare(s))

    def head_logits(self, feats: torch.Tensor, batch_size: int) -> torch.Tensor:
        n, c, h, w = feats.shape
        vol = feats.reshape(batch_size, n // batch_size, c, h, w).transpose(1, 2)
        return self.head(vol)


class RadImageNetPredictor(SlicePredictor):
    """ResNet-50 on axial slices (RadImageNet weights from a user file, else from scratch)."""

    name = "radimgnet"
    description = ("ResNet-50 on axial slices pooled to a patch logit; RadImageNet weights from "
                   "-o predictor.weights / $WSBENCH_RADIMAGENET_WEIGHTS, else trained from scratch (labelled)")

    @dataclass
    class Options(TrainOptions, SliceOptions):
        weights: Path | None = option(None, f"torchvision-style ResNet-50 state dict (RadImageNet); default ${WEIGHTS_ENV}")
        input_size: int = option(64, "slice side in pixels after bilinear resizing (RadImageNet was trained at 224)")
        normalize: str = option("imagenet", "input standardisation after mapping [-1,1] to [0,1]",
                                choices=("imagenet", "unit"))
        head: str = option("gap+gmp", "pooling before the linear head; 'gap' gives an exact CAM head",
                           choices=HEAD_CHOICES)
        freeze_backbone: bool = option(False, "train the head only (sensible with pretrained weights)")
        lr: float = option(3e-4, "AdamW learning rate")
        # A ResNet-50 step costs ~3-5 s per batch of 32 on 2 CPU cores (~2 min an epoch on the
        # default set), so the CPU default stops sooner than the small models; raise it on a GPU.
        epochs: int = option(8, "maximum training epochs (an epoch = N/batch_size class-balanced batches)")
        patience: int = option(3, "stop after this many epochs without a better validation AUC")

        def validate(self) -> None:
            TrainOptions.validate(self)
            if self.input_size < 32:
                raise ValueError("input_size must be >= 32 (ResNet-50 downsamples 32x)")
            if self.slices < 0 or self.slice_stride < 1:
                raise ValueError("slices must be >= 0 and slice_stride >= 1")

    def __init__(self, options=None, *, device="cpu", seed=0) -> None:
        self._provenance: dict = {"init": "scratch"}
        super().__init__(options, device=device, seed=seed)

    def _resolve_weights(self) -> Path | None:
        if self.options.weights is None and os.environ.get(WEIGHTS_ENV):
            # recorded in the options so that the checkpoint cache key tells the two apart
            self.options.weights = Path(os.environ[WEIGHTS_ENV]).expanduser()
        return self.options.weights

    def build_model(self) -> nn.Module:
        o = self.options
        model = SliceResNet(o.head, o.input_size, o.normalize)
        path = self._resolve_weights()
        if path is not None:
            what = "predictor 'radimgnet'"
            state = load_state_dict_file(path, what)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            check_and_load(model.backbone, state, path, what)
            self._provenance = {"init": "pretrained", "weights": str(Path(path).expanduser().resolve()),
                                "sha256": file_sha256(Path(path).expanduser())}
        else:
            warnings.warn(
                f"predictor 'radimgnet': no RadImageNet weights (set -o predictor.weights=PATH or ${WEIGHTS_ENV}); "
                "training ResNet-50 from scratch, recorded as init=scratch", ScratchInitWarning, stacklevel=2)
            self._provenance = {"init": "scratch"}
        if o.freeze_backbone:
            for p in model.backbone.parameters():
                p.requires_grad_(False)
        return model

    def trainable_module(self) -> nn.Module:
        return self.model

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        s = self.slice_batch(x)
        if self.options.freeze_backbone and self.model.training:
            self.model.backbone.eval()  # frozen trunk: keep its BN statistics
        return self.model.head_logits(self.model.slice_features(s), x.shape[0])

    def target_layer(self) -> nn.Module:
        return self.model.backbone.layer4

    def cam_head(self) -> CamHead | None:
        return self.model.head.cam_head()

    def provenance(self) -> dict:
        return dict(self._provenance, architecture="resnet50-2d-slices", input_size=self.options.input_size,
                    slices=self.options.slices, slice_stride=self.options.slice_stride)

    def restore_meta(self, meta: dict) -> None:
        prov = meta.get("provenance") or {}
        if "init" in prov:
            self._provenance = {k: v for k, v in prov.items()
                                if k in ("init", "weights", "sha256")}
