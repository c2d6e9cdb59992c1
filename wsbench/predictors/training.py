"""The training loop shared by the built-in predictors (image-level labels only).

* **Class balance** — every batch holds as many positives as negatives: each class is drawn
  from its own shuffled queue, refilled when exhausted (the minority class is over-sampled).
  One epoch is ``ceil(N / batch_size)`` batches.
* **Augmentation** (on the input patches, optional) — random flips along each of the three
  axes (probability 0.5 each, per sample) and an intensity jitter ``x·a + b`` with
  ``a ~ U[1 − s, 1 + s]``, ``b ~ U[−t, t]`` per sample (normalised units, see
  :mod:`wsbench.data.intensity`). Flips keep the label: a nodule stays a nodule.
* **Early stopping** on validation ROC AUC, evaluated after every epoch: the best epoch's
  weights are restored at the end; training stops after ``patience`` epochs without
  improvement. Without a usable validation set (none, or one class only) all epochs run and
  the last weights are kept.
* **Determinism** — sampling and augmentation draw from a :class:`torch.Generator` seeded
  with the given seed, never from the global RNG; on CPU the same seed gives the same weights.

:func:`roc_auc` is the Mann–Whitney U statistic with mid-ranks for ties (equal to the area
under the empirical ROC curve with ties counted one half).

Example::

    >>> cfg = TrainConfig(epochs=3, batch_size=16)
    >>> summary = train_classifier(model, model, x_train, y_train, x_val, y_val, cfg, seed=0)
    >>> summary["val_auc"]
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from wsbench.progress import ensure


@dataclass
class TrainConfig:
    """Settings of :func:`train_classifier` (the predictors expose them as options)."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 4
    augment: bool = True
    jitter_scale: float = 0.1
    jitter_shift: float = 0.05
    eval_batch_size: int = 64


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` (higher = positive) for binary ``labels``.

    Shapes: two 1-D arrays of equal length. Ties count one half. Returns NaN when one class
    is absent (the AUC is undefined). Example: ``roc_auc([0.1, 0.9, 0.5], [0, 1, 0]) == 1.0``.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"roc_auc: {s.shape[0]} scores but {y.shape[0]} labels")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # mid-ranks for ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def augment_patches(x: torch.Tensor, gen: torch.Generator, scale: float, shift: float) -> torch.Tensor:
    """Random per-sample flips along (z, y, x) and intensity jitter of ``(B, 1, D, H, W)``."""
    b = x.shape[0]
    x = x.clone()
    for axis in (2, 3, 4):
        flip = torch.rand(b, generator=gen) < 0.5
        if flip.any():
            x[flip] = x[flip].flip(axis)  # boolean indexing keeps the axes
    a = 1.0 + (torch.rand(b, generator=gen) * 2 - 1) * scale
    c = (torch.rand(b, generator=gen) * 2 - 1) * shift
    view = (b,) + (1,) * (x.dim() - 1)
    return x * a.view(view).to(x) + c.view(view).to(x)


class BalancedSampler:
    """Batches with ``batch_size // 2`` positives and the rest negatives (see module doc)."""

    def __init__(self, labels: np.ndarray, batch_size: int, gen: torch.Generator) -> None:
        labels = np.asarray(labels).astype(bool)
        self.pos = np.flatnonzero(labels)
        self.neg = np.flatnonzero(~labels)
        if len(self.pos) == 0 or len(self.neg) == 0:
            raise ValueError("training needs both positive and negative patches")
        self.batch_size = batch_size
        self.gen = gen
        self._queues = {True: [], False: []}

    def _take(self, positive: bool, n: int) -> list[int]:
        out: list[int] = []
        pool = self.pos if positive else self.neg
        q = self._queues[positive]
        while len(out) < n:
            if not q:
                q.extend(pool[torch.randperm(len(pool), generator=self.gen).numpy()].tolist())
            out.append(q.pop())
        return out

    def batch(self) -> np.ndarray:
        n_pos = self.batch_size // 2
        idx = self._take(True, n_pos) + self._take(False, self.batch_size - n_pos)
        return np.asarray(idx, dtype=np.int64)


@torch.no_grad()
def predict_logits(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int,
                   device: torch.device) -> np.ndarray:
    """Logits of ``forward`` on ``x`` (any leading batch axis) in chunks; returns numpy (N,)."""
    out = []
    for i in range(0, x.shape[0], batch_size):
        out.append(forward(x[i:i + batch_size].to(device)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def train_classifier(module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
                     x_train: torch.Tensor, y_train: np.ndarray,
                     x_val: torch.Tensor | None, y_val: np.ndarray | None,
                     cfg: TrainConfig, seed: int, *, device: torch.device | str = "cpu",
                     augment: bool | None = None, progress=None, desc: str = "training") -> dict[str, Any]:
    """Fit the trainable parameters of ``module`` so that ``forward(x)`` → ``(B,)`` logits
    separates ``y_train``; select the epoch by validation AUC.

    ``x_train``/``x_val``: CPU tensors with the sample axis first — patches ``(N, 1, D, H, W)``
    or precomputed features (then pass ``augment=False``). ``y_*``: ``(N,)`` in {0, 1}.
    ``module`` owns the parameters (those with ``requires_grad`` are optimised with AdamW) and
    is switched between train and eval mode. Returns a JSON-able summary: ``val_auc`` (best,
    or None), ``best_epoch``, ``epochs``, ``steps``, ``seconds``, ``history`` (per-epoch
    ``{"epoch", "loss", "val_auc"}``), ``stopped_early``, class counts.
    """
    device = torch.device(device)
    progress = ensure(progress)
    augment = cfg.augment if augment is None else augment
    y_train = np.asarray(y_train).astype(np.int64)
    gen = torch.Generator().manual_seed(int(seed))
    sampler = BalancedSampler(y_train, cfg.batch_size, gen)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train_classifier: the module has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    steps_per_epoch = max(1, math.ceil(len(y_train) / cfg.batch_size))
    usable_val = (x_val is not None and y_val is not None and len(y_val) > 0
                  and 0 < int(np.sum(y_val)) < len(y_val))

    t0 = time.perf_counter()
    history: list[dict[str, Any]] = []
    best_auc, best_epoch, best_state = -1.0, 0, None
    since_best, steps, stopped_early = 0, 0, False
    with progress.task(desc, total=cfg.epochs * steps_per_epoch) as task:
        for epoch in range(1, cfg.epochs + 1):
            module.train()
            losses = []
            for _ in range(steps_per_epoch):
                idx = torch.from_numpy(sampler.batch())
                xb = x_train[idx]
                if augment:
                    xb = augment_patches(xb, gen, cfg.jitter_scale, cfg.jitter_shift)
                yb = torch.from_numpy(y_train[idx.numpy()]).float().to(device)
                loss = loss_fn(forward(xb.to(device)), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                losses.append(float(loss.detach()))
                task.advance(1, epoch=epoch, loss=f"{losses[-1]:.3f}")
            module.eval()
            entry: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses)), "val_auc": None}
            if usable_val:
                auc = roc_auc(predict_logits(forward, x_val, cfg.eval_batch_size, device), y_val)
                entry["val_auc"] = auc
                if auc > best_auc:
                    best_auc, best_epoch, since_best = auc, epoch, 0
                    best_state = copy.deepcopy(module.state_dict())
                else:
                    since_best += 1
                task.advance(0, epoch=epoch, val_auc=f"{auc:.3f}", best=f"{best_auc:.3f}")
            history.append(entry)
            if usable_val and since_best >= cfg.patience:
                stopped_early = True
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return {
        "val_auc": float(best_auc) if usable_val else None,
        "best_epoch": best_epoch if usable_val else len(history),
        "epochs": len(history),
        "steps": steps,
        "seconds": round(time.perf_counter() - t0, 3),
        "stopped_early": stopped_early,
        "n_train": int(len(y_train)),
        "n_train_pos": int(np.sum(y_train)),
        "n_val": int(len(y_val)) if y_val is not None else 0,
        "n_val_pos": int(np.sum(y_val)) if y_val is not None else 0,
        "augment": bool(augment),
        "history": history,
    }
