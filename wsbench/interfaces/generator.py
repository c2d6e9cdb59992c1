"""Generator: a rectified-flow model of CT patches.

The one convention every generator follows (segmenters rely on it and nothing else):

* time ``t`` runs from 0 (data) to 1 (noise); a state at time ``t`` is
  ``z_t = (1 - t) * z_0 + t * eps`` with ``eps ~ N(0, I)``;
* :meth:`Generator.velocity` predicts ``v = dz_t/dt = eps - z_0``;
* **inversion** (data → noise) integrates ``dz = v dt`` forward in ``t``; **generation**
  (noise → data) integrates backward: one Euler step from ``t`` to ``t - h`` is ``z - h * v``;
* the one-step clean estimate at time ``t`` is ``z_0_hat = z_t - t * v``.

``encode``/``decode`` map between the benchmark's normalised patch intensity ``x``
(``(B, 1, D, H, W)``) and the generator's state space ``z`` (identity for pixel-space
models; an autoencoder's latent for latent models such as MAISI). Adapters of models that use
another convention (e.g. MONAI's ``RFlowScheduler`` with ``t`` in ``[0, 1000]`` and target
``x0 - noise``) convert inside ``velocity``.
"""

from __future__ import annotations

import abc
from typing import Callable, ClassVar

import torch

from wsbench.interfaces.plugin import Plugin, Trainable


class Generator(Plugin, Trainable, abc.ABC):
    role: ClassVar[str] = "generator"

    @abc.abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, D, H, W)`` normalised patch → state ``z`` (any shape)."""

    @abc.abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """State ``z`` → ``(B, 1, D, H, W)`` normalised patch (differentiable)."""

    @abc.abstractmethod
    def velocity(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted ``dz/dt = eps - z_0`` at state ``z`` and times ``t`` (shape ``(B,)``,
        in ``[0, 1]``). Differentiable w.r.t. ``z``."""

    def to(self, device) -> "Generator":
        self.device = torch.device(device)
        for m in self.modules():
            m.to(self.device)
        return self

    def eval(self) -> "Generator":
        for m in self.modules():
            m.eval()
        return self

    def modules(self) -> list[torch.nn.Module]:
        """The ``nn.Module``\\ s that make up the generator (moved by :meth:`to`)."""
        return [getattr(self, "model")]

    # -- ODE integration shared by all segmenters -------------------------------------------
    @torch.no_grad()
    def invert(self, z0: torch.Tensor, t0: float, steps: int) -> torch.Tensor:
        """Deterministic Euler inversion from ``t = 0`` to ``t0`` in ``steps`` steps."""
        z = z0
        ts = torch.linspace(0.0, float(t0), steps + 1, device=z0.device)
        for i in range(steps):
            t = ts[i].expand(z.shape[0])
            z = z + (ts[i + 1] - ts[i]) * self.velocity(z, t)
        return z

    def generate(self, z: torch.Tensor, t0: float, steps: int,
                 step_hook: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                 ) -> torch.Tensor:
        """Euler integration from ``t0`` back to 0 in ``steps`` steps.

        ``step_hook(i, z, t) -> z`` (optional) may modify the state before step ``i`` is
        taken (``t``: ``(B,)`` current times) — this is where guidance plugs in; the hook
        may use autograd itself. The Euler steps run under ``no_grad``."""
        ts = torch.linspace(float(t0), 0.0, steps + 1, device=z.device)
        for i in range(steps):
            t = ts[i].expand(z.shape[0])
            if step_hook is not None:
                z = step_hook(i, z, t)
            with torch.no_grad():
                v = self.velocity(z, t)
            z = (z + (ts[i + 1] - ts[i]) * v).detach()
        return z
