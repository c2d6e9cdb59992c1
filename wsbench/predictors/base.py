"""Shared machinery of the built-in predictors: training options, the pooled head, axial-slice
handling for 2-D backbones, and one-file save/load.

Pooled head (:class:`PooledHead`), on features ``(B, C, d, h, w)``:

* ``"gap+gmp"`` — ``logit = w · [mean(f); max(f)] + b`` over all positions. Max pooling lets a
  small nodule (a few feature voxels) dominate the score; with average pooling alone a 3-D CNN
  stalled near chance on small nodules (FACTS.md, and ``benchmarks/predictors.py --heads``).
  No exact CAM head (``cam_head()`` is None: CAM proper needs a purely linear GAP head).
* ``"gap"`` — ``logit = w · mean(f) + b``: exactly what CAM (Zhou et al. 2016) assumes, so
  ``cam_head()`` returns ``(w, b)``.

Axial slices (:class:`SliceSelector`): 2-D backbones see ``slices`` axial slices of the patch,
``slice_stride`` apart, centred on the patch's centre slice (nodule centres lie within the
benchmark's ``max_offset_vox`` of it); ``slices=0`` takes every slice.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wsbench.data.types import PatchSet
from wsbench.errors import DataError, WsbenchError
from wsbench.interfaces.predictor import CamHead, Predictor
from wsbench.options import option
from wsbench.predictors.training import TrainConfig, train_classifier
from wsbench.seeding import derive_seed

CHECKPOINT_FORMAT = 1

#: Options that only change inference, never the fitted weights.
_INFERENCE_ONLY = ("eval_batch_size",)


@dataclass
class TrainOptions:
    """Training options common to every built-in predictor."""

    epochs: int = option(20, "maximum training epochs (an epoch = N/batch_size class-balanced batches)")
    batch_size: int = option(32, "patches per training batch (half positives, half negatives)")
    lr: float = option(1e-3, "AdamW learning rate")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    patience: int = option(4, "stop after this many epochs without a better validation AUC")
    augment: bool = option(True, "random flips (z, y, x) and intensity jitter during training")
    eval_batch_size: int = option(64, "patches per batch when scoring the validation set")

    def validate(self) -> None:
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (one positive and one negative per batch)")
        if self.lr <= 0:
            raise ValueError("lr must be > 0")
        if self.patience < 1:
            raise ValueError("patience must be >= 1")
        if self.eval_batch_size < 1:
            raise ValueError("eval_batch_size must be >= 1")

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           weight_decay=self.weight_decay, patience=self.patience, augment=self.augment,
                           eval_batch_size=self.eval_batch_size)


HEAD_CHOICES = ("gap+gmp", "gap")


class PooledHead(nn.Module):
    """Global pooling + linear: ``(B, C, *spatial)`` → ``(B,)`` logits (see module doc)."""

    def __init__(self, channels: int, mode: str = "gap+gmp") -> None:
        super().__init__()
        if mode not in HEAD_CHOICES:
            raise ValueError(f"head must be one of {HEAD_CHOICES}, got {mode!r}")
        self.mode = mode
        self.fc = nn.Linear(channels * (2 if mode == "gap+gmp" else 1), 1)

    def pool(self, f: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` → ``(B, C)`` or ``(B, 2C)`` pooled features."""
        flat = f.flatten(2)
        if self.mode == "gap":
            return flat.mean(2)
        return torch.cat([flat.mean(2), flat.amax(2)], 1)

    def forward_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled).squeeze(1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.forward_pooled(self.pool(f))

    def cam_head(self) -> CamHead | None:
        if self.mode != "gap":
            return None
        return CamHead(self.fc.weight.detach().reshape(-1).clone(), float(self.fc.bias.detach()))


def patchset_tensors(ps: PatchSet | None) -> tuple[torch.Tensor | None, np.ndarray | None]:
    """``PatchSet`` → ``(N, 1, D, H, W)`` float32 CPU tensor and ``(N,)`` int64 labels."""
    if ps is None or len(ps) == 0:
        return None, None
    x = torch.from_numpy(np.ascontiguousarray(ps.images, dtype=np.float32)).unsqueeze(1)
    y = np.asarray(ps.labels).astype(np.int64)
    bad = set(np.unique(y).tolist()) - {0, 1}
    if bad:
        raise DataError(f"training labels must be 0/1, found {sorted(bad)}; fix the dataset's training_patches")
    return x, y


class TorchPredictor(Predictor):
    """A predictor holding one :class:`torch.nn.Module` in ``self.model``.

    Subclasses implement :meth:`build_model` (called once, with the RNG seeded from the run's
    seed and the plugin name, so the initial weights depend on the seed only), :meth:`logits`
    and :meth:`target_layer`. :meth:`fit` runs :func:`train_classifier` on the patches;
    :meth:`save` writes ``{"state_dict", "meta"}`` (meta: JSON-able) to one file.
    """

    def __init__(self, options=None, *, device="cpu", seed=0) -> None:
        super().__init__(options, device=device, seed=seed)
        self.training_summary: dict[str, Any] | None = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "init", self.name))
            self.model = self.build_model()
        self.model.to(self.device)
        self.model.eval()

    # -- to implement ---------------------------------------------------------------------
    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """The network, freshly initialised (and loaded with pretrained weights, if any)."""

    # -- training -------------------------------------------------------------------------
    @classmethod
    def _training_option_names(cls) -> tuple[str, ...]:
        from dataclasses import fields
        return tuple(f.name for f in fields(cls.Options) if f.name not in _INFERENCE_ONLY)

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        if "Options" in cls.__dict__ and "training_options" not in cls.__dict__:
            cls.training_options = cls._training_option_names()

    def trainable_module(self) -> nn.Module:
        return self.model

    def fit(self, train, validation, progress=None) -> dict[str, Any]:
        x_tr, y_tr = patchset_tensors(train)
        if x_tr is None:
            raise DataError(f"predictor '{self.name}': the training set is empty; check the dataset's split")
        x_va, y_va = patchset_tensors(validation)
        summary = train_classifier(self.trainable_module(), self.logits, x_tr, y_tr, x_va, y_va,
                                   self.options.train_config(), derive_seed(self.seed, "train", self.name),
                                   device=self.device, progress=progress, desc=f"training {self.name}")
        self.training_summary = summary
        return summary

    # -- persistence ----------------------------------------------------------------------
    def checkpoint_meta(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "predictor": self.name, "options": self.options_dict(),
                "seed": self.seed, "provenance": self.provenance(), "training": self.training_summary}

    def save(self, path: Path) -> None:
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        torch.save({"state_dict": state, "meta": self.checkpoint_meta()}, Path(path))

    def load(self, path: Path) -> None:
        path = Path(path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WsbenchError(f"cannot read predictor checkpoint {path}: {type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}; delete it to retrain") from None
        if not isinstance(obj, dict) or "state_dict" not in obj or "meta" not in obj:
            raise WsbenchError(f"{path} is not a wsbench predictor checkpoint (no state_dict/meta); delete it to retrain")
        meta = obj["meta"]
        if meta.get("predictor") != self.name:
            raise WsbenchError(f"{path} holds predictor '{meta.get('predictor')}', not '{self.name}'; "
                               "pass the matching --predictor or delete the file")
        missing, unexpected = _key_diff(self.model.state_dict(), obj["state_dict"])
        if missing or unexpected:
            raise WsbenchError(f"{path} does not fit predictor '{self.name}' with these options: "
                               f"{_keys_msg(missing, unexpected)}; delete it to retrain")
        own = self.model.state_dict()
        bad = [k for k, v in obj["state_dict"].items() if tuple(v.shape) != tuple(own[k].shape)]
        if bad:
            raise WsbenchError(f"{path} does not fit predictor '{self.name}' with these options: {len(bad)} tensor(s) "
                               f"of another shape [{', '.join(bad[:4])}]; use the options it was trained with or delete it")
        self.model.load_state_dict(obj["state_dict"])
        self.model.to(self.device).eval()
        self.training_summary = meta.get("training")
        self.restore_meta(meta)

    def restore_meta(self, meta: dict[str, Any]) -> None:
        """Hook for subclasses that keep extra state in the checkpoint meta."""


def _key_diff(expected: dict, got: dict) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(got)), sorted(set(got) - set(expected))


def _keys_msg(missing: list[str], unexpected: list[str], show: int = 6) -> str:
    def part(label, keys):
        more = f" … (+{len(keys) - show} more)" if len(keys) > show else ""
        return f"{len(keys)} {label} key(s) [{', '.join(keys[:show])}{more}]"
    return "; ".join(p for p in (part("missing", missing) if missing else "",
                                 part("unexpected", unexpected) if unexpected else "") if p)


def load_state_dict_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Read a weights file with ``torch.load(weights_only=True)``; unwrap ``state_dict`` /
    ``model`` containers and a ``module.`` (DataParallel) prefix. One-line errors."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WsbenchError(f"{what}: weights file {path} does not exist; check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else ""
        raise WsbenchError(f"{what}: cannot load {path} with torch.load(weights_only=True) "
                           f"({type(e).__name__}: {msg[:200]}); supply a plain PyTorch state dict") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WsbenchError(f"{what}: {path} is not a state dict of tensors; supply a plain PyTorch state dict")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def check_and_load(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Load ``state`` strictly into ``module``; wrong keys or shapes → one-line WsbenchError."""
    missing, unexpected = _key_diff(module.state_dict(), state)
    if missing or unexpected:
        raise WsbenchError(f"{what}: {path} does not match the expected layout: {_keys_msg(missing, unexpected)}; "
                           "supply a torchvision-style checkpoint for this model")
    own = module.state_dict()
    bad = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise WsbenchError(f"{what}: {path} has {len(bad)} tensor(s) of the wrong shape [{'; '.join(bad[:4])}]; "
                           "supply weights of the same architecture")
    module.load_state_dict(state, strict=True)


@dataclass
class SliceOptions:
    slices: int = option(5, "axial slices per patch fed to the 2-D backbone (0 = every slice)")
    slice_stride: int = option(3, "spacing, in voxels, between the chosen slices (centred on the patch centre)")


class SliceSelector:
    """Chosen axial slice indices of a depth-``D`` patch and the map back to ``D`` slices.

    ``indices(D)`` → sorted ``(S,)`` slice indices, centred on ``D // 2``, clipped to the patch.
    ``to_depth(feats, D)``: ``(B, C, S, h, w)`` → ``(B, C, D, h, w)``: each patch slice gets the
    features of its nearest chosen slice inside the slab they span (± stride/2 beyond the end
    slices), zero outside, so that CAM-type maps land at the right depth.
    """

    def __init__(self, slices: int, stride: int) -> None:
        if slices < 0 or stride < 1:
            raise ValueError("slices must be >= 0 and slice_stride >= 1")
        self.slices, self.stride = slices, stride

    def indices(self, depth: int) -> torch.Tensor:
        if self.slices == 0 or self.slices >= depth and self.stride == 1:
            return torch.arange(depth)
        offs = (torch.arange(self.slices) - (self.slices - 1) / 2.0) * self.stride
        idx = torch.round(depth // 2 + offs).long().clamp(0, depth - 1)
        return torch.unique(idx)

    def select(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, D, H, W)`` → ``(B*S, 1, H, W)`` (sample-major order)."""
        idx = self.indices(x.shape[2]).to(x.device)
        b = x.shape[0]
        s = x.index_select(2, idx)  # (B, 1, S, H, W)
        return s.permute(0, 2, 1, 3, 4).reshape(b * idx.numel(), 1, x.shape[3], x.shape[4])

    def to_depth(self, feats: torch.Tensor, depth: int) -> torch.Tensor:
        idx = self.indices(depth).to(feats.device).float()
        if idx.numel() == depth:
            return feats
        z = torch.arange(depth, device=feats.device).float()
        nearest = (z[:, None] - idx[None, :]).abs().argmin(1)
        half = self.stride / 2.0
        inside = (z >= idx[0] - half) & (z <= idx[-1] + half)
        out = feats.index_select(2, nearest)
        return out * inside.to(out.dtype).view(1, 1, depth, 1, 1)


class SlicePredictor(TorchPredictor):
    """A 2-D backbone applied to axial slices; ``target_layer`` outputs ``(B*S, C, h, w)``."""

    geometry = "2d-slices"

    def __init__(self, options=None, *, device="cpu", seed=0) -> None:
        self.selector = None
        self._depth: int | None = None
        super().__init__(options, device=device, seed=seed)

    def _selector(self) -> SliceSelector:
        if self.selector is None:
            self.selector = SliceSelector(self.options.slices, self.options.slice_stride)
        return self.selector

    def slice_batch(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 1:
            raise ValueError(f"predictor '{self.name}' expects (B, 1, D, H, W) patches, got {tuple(x.shape)}")
        self._depth = int(x.shape[2])
        return self._selector().select(x)

    def features_to_volume(self, feats: torch.Tensor, batch_size: int) -> torch.Tensor:
        """``(B*S, C, h, w)`` → ``(B, C, D, h, w)`` with ``D`` the depth of the last input (see
        :meth:`SliceSelector.to_depth`)."""
        if feats.dim() == 5:
            return feats
        vol = super().features_to_volume(feats, batch_size)  # (B, C, S, h, w)
        depth = self._depth if self._depth is not None else vol.shape[2]
        return self._selector().to_depth(vol, depth)


def subsample_stratified(ps: PatchSet, n: int, seed: int) -> PatchSet:
    """A seeded subset of ``n`` patches keeping the class proportions (at least one of each)."""
    if n >= len(ps):
        return ps
    rng = np.random.default_rng(seed)
    labels = np.asarray(ps.labels).astype(bool)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    n_pos = int(round(n * len(pos) / len(ps)))
    n_pos = min(max(n_pos, 1 if len(pos) else 0), len(pos))
    n_neg = min(n - n_pos, len(neg))
    idx = np.sort(np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)]))
    return ps.subset(idx)
