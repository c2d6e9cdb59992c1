"""``rflow``: a 3-D rectified flow of CT patches, trained on the benchmark's training patches.

Training (Liu et al. 2022, "Flow straight and fast"): draw a patch ``x0``, noise
``eps ~ N(0, I)`` and a time ``t``; regress the U-Net's output on the straight-line velocity
``eps - x0`` at ``z_t = (1 - t) x0 + t eps`` with a mean-squared error — exactly the convention
of :mod:`wsbench.interfaces.generator` (t = 0 data, t = 1 noise), so no conversion is needed
in :meth:`RFlowGenerator.velocity`. Inference uses an exponential moving average (EMA) of the
weights.

**Pixel space, not latent** (decided by measurement, 2 CPU cores, 32³ patches at 1 mm): the
lean U-Net (:mod:`wsbench.generators.unet`, 16/32/64 channels, 1.3 M parameters) took 0.9 s per
batch-8 training step in pixel space on a lightly loaded machine, so a useful model trains in
minutes. A latent model would first need a 3-D autoencoder trained on the same patches (its own
minutes of training and a reconstruction floor that every score map inherits), and guidance
would back-propagate through its decoder at every step; at 32³ the 4× smaller latent (8³)
leaves the U-Net only two useful levels. Latent space pays off for much larger patches — that is
what the ``maisi`` adapter is for.

**Measured** (``benchmarks/generators.py`` on ``luna16-synth``, 928 training patches, one thread
on a heavily shared 2-core machine: 6.8 s per step there): after **200 steps** the model passes
the quality check on held-out validation patches — re-noised (t0 = 0.5) reconstruction error
0.062 × the data variance (untrained: 1.17), deterministic round trip 0.001, samples' HU
histogram 114 HU (Wasserstein-1) from the data's (untrained: 314). The default of 400 steps
(~6 min at 0.9 s/step) buys margin; more steps or a GPU (``--device cuda``, bf16) do better.
Five times longer — ``-o generator.steps=2000 -o generator.warmup=100``, 3,335 s at 1.67 s/step
on one thread of a shared 2-core CPU — lowers the validation re-noise error (t0 = 0.5) from
0.074 to 0.065: diminishing returns in this size of U-Net, hence the CPU default stays at 400.

**Training data: ``all`` (default) vs ``negatives``** — measured on the 16 validation nodule
cases after re-noising and regenerating (10 Euler steps), mean |change| inside the truth mask
divided by outside: ``all`` 2.14 (t0 = 0.3) / 2.49 (t0 = 0.5), ``negatives`` 2.13 / 2.48 at 200
steps each: a negatives-only model does not "heal" nodules measurably more at this training
length, and sees half the data. ``all`` stays the default until the guided-segmentation sweep
(``benchmarks/flow_guide_sweep.py``) decides.

Times are sampled uniformly in ``[0, t_max]`` with ``t_max = 1`` by default (so that samples
from pure noise exist for the quality check); ``t_max = 0.85`` (the prototype's choice in
FACTS.md) concentrates the model on the re-noising range segmenters use.

Example (``train``/``val``: :class:`~wsbench.data.PatchSet`, ``x``: ``(B, 1, 32, 32, 32)``)::

    gen = RFlowGenerator({"steps": 200}, seed=0)
    summary = gen.fit(train, val)           # {"steps": 200, "val_renoise_rel_mse": 0.09, ...}
    z = gen.encode(x)                       # identity in pixel space
    x_rec = gen.decode(gen.generate(gen.invert(z, 0.5, 10), 0.5, 10))
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wsbench.data.types import PatchSet
from wsbench.errors import DataError, WsbenchError
from wsbench.generators.unet import VelocityUNet
from wsbench.interfaces.generator import Generator
from wsbench.options import option
from wsbench.progress import ensure
from wsbench.seeding import derive_seed

CHECKPOINT_FORMAT = "wsbench-rflow-1"


def sample_times(n: int, method: str, t_max: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` training times in ``[0, t_max]``.

    ``uniform``: ``t ~ U(0, 1)``; ``logit-normal``: ``t = sigmoid(u)``, ``u ~ N(0, 1)`` (more weight
    on mid times, as in SD3 / MAISI-v2). Either is then scaled by ``t_max``.
    """
    if method == "uniform":
        t = torch.rand(n, generator=generator)
    elif method == "logit-normal":
        t = torch.sigmoid(torch.randn(n, generator=generator))
    else:
        raise ValueError(f"unknown timestep sampling {method!r}")
    return t * t_max


def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flips along each axis (CT patches have no preferred handedness at this scale)."""
    for axis in (1, 2, 3):
        if rng.random() < 0.5:
            x = np.flip(x, axis=axis)
    return np.ascontiguousarray(x)


class RFlowGenerator(Generator):
    """Pixel-space 3-D rectified flow with a lean U-Net, trained on the benchmark's patches."""

    name = "rflow"
    description = "3-D rectified flow (lean U-Net, pixel space) trained on the benchmark's training patches"

    @dataclass
    class Options:
        channels: tuple[int, ...] = option((16, 32, 64), "U-Net feature channels per level (comma-separated)")
        blocks: int = option(1, "residual blocks per U-Net level and path")
        steps: int = option(400, "training steps (optimizer updates); more = better; ~0.9 s each at 32³ on 2 free CPU cores")
        batch_size: int = option(8, "patches per training step")
        lr: float = option(2e-3, "peak AdamW learning rate (linear warm-up, cosine decay)")
        warmup: int = option(40, "learning-rate warm-up steps")
        weight_decay: float = option(0.0, "AdamW weight decay")
        timesteps: str = option("uniform", "training time distribution", choices=("uniform", "logit-normal"))
        t_max: float = option(1.0, "training times are drawn in [0, t_max]; < 1 spends the model on the "
                                   "re-noising range segmenters use but makes sampling from pure noise unreliable")
        ema_decay: float = option(0.995, "EMA decay of the inference weights (warm-up: min(decay, (1+n)/(10+n)))")
        data: str = option("all", "training patches: all, or negatives only (a model of healthy tissue)",
                           choices=("all", "negatives"))
        augment: bool = option(True, "random flips of training patches")
        grad_clip: float = option(1.0, "gradient-norm clip (0 = off)")
        amp: bool = option(True, "mixed precision on CUDA (bf16 where supported, else fp16); ignored on CPU")
        val_patches: int = option(16, "validation patches for the round-trip error reported by fit")
        val_steps: int = option(10, "Euler steps for that round trip (t0 = 0.5)")

        def validate(self) -> None:
            if not self.channels or any(c < 1 for c in self.channels):
                raise ValueError("channels must be positive integers")
            if self.blocks < 1:
                raise ValueError("blocks must be >= 1")
            if self.steps < 0 or self.batch_size < 1 or self.warmup < 0:
                raise ValueError("steps and warmup must be >= 0, batch_size >= 1")
            if not (0.0 < self.t_max <= 1.0):
                raise ValueError(f"t_max must be in (0, 1], got {self.t_max}")
            if not (0.0 <= self.ema_decay < 1.0):
                raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
            if self.lr <= 0:
                raise ValueError("lr must be > 0")

    #: Options that change the fitted weights (the checkpoint cache key).
    training_options = ("channels", "blocks", "steps", "batch_size", "lr", "warmup", "weight_decay",
                        "timesteps", "t_max", "ema_decay", "data", "augment", "grad_clip", "amp")

    def __init__(self, options=None, *, device="cpu", seed: int = 0) -> None:
        super().__init__(options, device=device, seed=seed)
        # Seeded initialisation that does not disturb the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "rflow-init"))
            self.net = VelocityUNet(1, 1, self.options.channels, self.options.blocks)
        #: EMA copy used for inference (``velocity``); equals ``net`` until trained.
        self.model = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.summary: dict[str, Any] | None = None
        self.net.to(self.device)
        self.model.to(self.device)

    # -- Generator interface -------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Identity (pixel space); ``(B, 1, D, H, W)``."""
        self._check_shape(x)
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Identity (pixel space)."""
        return z

    def velocity(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``eps - z0`` predicted by the EMA U-Net; ``z``: ``(B, 1, D, H, W)``, ``t``: ``(B,)``."""
        self._check_shape(z)
        t = torch.as_tensor(t, device=z.device, dtype=torch.float32)
        if t.ndim == 0:
            t = t.expand(z.shape[0])
        with self._autocast(z.device):
            v = self.model(z, t)
        return v.float()

    def modules(self) -> list[torch.nn.Module]:
        return [self.model, self.net]

    def eval(self) -> "RFlowGenerator":
        self.model.eval()
        return self

    def provenance(self) -> dict[str, Any]:
        return {"init": "trained" if self.summary is not None else "scratch", "space": "pixel",
                "parameters": int(sum(p.numel() for p in self.model.parameters()))}

    # -- training --------------------------------------------------------------------------------
    def fit(self, train: PatchSet, validation: PatchSet | None = None, progress=None) -> dict[str, Any]:
        """Train on ``train`` (all patches or negatives only); report a round trip on ``validation``.

        Returns ``{"steps", "seconds", "seconds_per_step", "final_loss", "train_patches", "data",
        "device", "val_patches", "val_renoise_rel_mse", "val_roundtrip_rel_mse", "t0"}`` — the
        validation errors are mean-squared errors divided by the validation patches' intensity
        variance (see :mod:`wsbench.generators.quality`); ``None`` without validation patches.
        """
        o = self.options
        progress = ensure(progress)
        images = self._training_images(train)
        n = images.shape[0]
        self._check_shape(torch.from_numpy(images[:1, None]))

        rng = np.random.default_rng(derive_seed(self.seed, "rflow-data"))
        tgen = torch.Generator().manual_seed(derive_seed(self.seed, "rflow-noise"))
        net, ema = self.net, self.model
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=o.lr, weight_decay=o.weight_decay)

        def lr_at(step: int) -> float:
            if step < o.warmup:
                return o.lr * (step + 1) / o.warmup
            span = max(1, o.steps - o.warmup)
            return o.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - o.warmup) / span)))

        scaler = None
        if self._amp_dtype(self.device) is torch.float16:
            scaler = torch.amp.GradScaler("cuda")
        losses: list[float] = []
        start = time.perf_counter()
        with progress.task(f"training generator rflow ({n} patches, {o.data})", total=o.steps) as task:
            for step in range(o.steps):
                idx = rng.integers(0, n, size=o.batch_size)
                batch = images[idx]
                if o.augment:
                    batch = _augment(batch, rng)
                x0 = torch.from_numpy(batch[:, None]).to(self.device)
                eps = torch.randn(x0.shape, generator=tgen).to(self.device)
                t = sample_times(x0.shape[0], o.timesteps, o.t_max, tgen).to(self.device)
                tb = t[:, None, None, None, None]
                zt = (1.0 - tb) * x0 + tb * eps
                for g in opt.param_groups:
                    g["lr"] = lr_at(step)
                with self._autocast(self.device):
                    v = net(zt, t)
                loss = F.mse_loss(v.float(), eps - x0)
                if not torch.isfinite(loss):
                    raise WsbenchError(f"rflow training diverged at step {step} (loss {loss.item()}); "
                                       f"lower -o generator.lr (now {o.lr})")
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                else:
                    loss.backward()
                if o.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), o.grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                self._update_ema(step)
                losses.append(float(loss.item()))
                task.advance(1, loss=f"{np.mean(losses[-20:]):.4f}")
        seconds = time.perf_counter() - start
        net.eval()

        summary: dict[str, Any] = {
            "steps": o.steps, "seconds": round(seconds, 2),
            "seconds_per_step": round(seconds / o.steps, 4) if o.steps else None,
            "final_loss": round(float(np.mean(losses[-50:])), 5) if losses else None,
            "train_patches": int(n), "data": o.data, "device": str(self.device),
            "val_patches": 0, "val_renoise_rel_mse": None, "val_roundtrip_rel_mse": None, "t0": 0.5,
        }
        if validation is not None and len(validation) > 0 and o.val_patches > 0:
            from wsbench.generators.quality import reconstruction_errors

            vrng = np.random.default_rng(derive_seed(self.seed, "rflow-val"))
            k = min(o.val_patches, len(validation))
            pick = np.sort(vrng.choice(len(validation), size=k, replace=False))
            errs = reconstruction_errors(self, validation.images[pick], t0=0.5, steps=o.val_steps,
                                         seed=derive_seed(self.seed, "rflow-val-noise"))
            summary.update(val_patches=int(k), val_renoise_rel_mse=round(errs["renoise_rel_mse"], 5),
                           val_roundtrip_rel_mse=round(errs["roundtrip_rel_mse"], 6))
        self.summary = summary
        return summary

    def _training_images(self, train: PatchSet) -> np.ndarray:
        images = np.asarray(train.images, dtype=np.float32)
        if self.options.data == "negatives":
            images = images[np.asarray(train.labels) == 0]
            if images.shape[0] == 0:
                raise DataError("generator option data=negatives, but the training patches contain no negative "
                                "(label 0) patch; use -o generator.data=all")
        if images.shape[0] == 0:
            raise DataError("no training patches for the generator; check the dataset's train split")
        return images

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        # Warm-up of the decay so that a short training run is not dominated by the initial weights.
        d = min(self.options.ema_decay, (1.0 + step) / (10.0 + step))
        for pe, p in zip(self.model.parameters(), self.net.parameters()):
            pe.mul_(d).add_(p.detach(), alpha=1.0 - d)
        for be, b in zip(self.model.buffers(), self.net.buffers()):
            be.copy_(b)

    def _amp_dtype(self, device: torch.device):
        if not self.options.amp or device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _autocast(self, device: torch.device):
        dtype = self._amp_dtype(torch.device(device))
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=dtype)

    def _check_shape(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != 1:
            raise WsbenchError(f"generator 'rflow' expects patches of shape (B, 1, D, H, W), got {tuple(x.shape)}")
        m = self.net.multiple
        if any(s % m for s in x.shape[2:]):
            raise WsbenchError(f"generator 'rflow' with {len(self.options.channels)} U-Net levels needs patch sizes "
                               f"divisible by {m}, got {tuple(x.shape[2:])}; change the benchmark geometry or "
                               f"-o generator.channels")

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """One file: training weights, EMA weights and metadata (options, summary)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "net": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "ema": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "meta": {"options": self.options_dict(), "seed": self.seed, "summary": self.summary},
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)

    def load(self, path: Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise WsbenchError(f"rflow checkpoint {path} does not exist; train one with `wsbench run` "
                               f"(it trains when missing)")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WsbenchError(f"cannot read rflow checkpoint {path}: {type(e).__name__}: {e}; delete it to retrain") from None
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise WsbenchError(f"{path} is not an rflow checkpoint (format {CHECKPOINT_FORMAT}); delete it to retrain")
        saved = payload["meta"].get("options", {})
        mine = self.options_dict()
        for key in ("channels", "blocks"):
            if saved.get(key) != mine[key]:
                raise WsbenchError(f"rflow checkpoint {path} was trained with {key}={saved.get(key)}, but the "
                                   f"options ask for {key}={mine[key]}; pass -o generator.{key}=... to match, "
                                   f"or delete the checkpoint to retrain")
        self.net.load_state_dict(payload["net"])
        self.model.load_state_dict(payload["ema"])
        self.net.to(self.device)
        self.model.to(self.device).eval()
        self.summary = payload["meta"].get("summary")
