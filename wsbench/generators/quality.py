"""Quality check of a generator: does it reconstruct held-out patches and sample like the data?

Three measurements on held-out patches ``x`` (normalised intensity, ``(N, D, H, W)``), all
through the generator's own ``encode``/``invert``/``generate``/``decode``:

1. **Deterministic round trip** — invert ``z0 = encode(x)`` to ``t0`` with Euler steps, generate
   back to 0, decode; mean-squared error against ``x``. A sound model gives a small error, *but
   so does a model with zero (or any smooth) velocity*: forward and backward Euler steps cancel.
   This measurement catches ill-conditioned models, not ignorant ones.
2. **Re-noised reconstruction** — ``z_t0 = (1 - t0) z0 + t0 eps`` with seeded noise (the forward
   process segmenters use to re-noise a patch), generated back to 0. Only a model that has learnt
   the data removes the noise: a zero-velocity model returns ``z_t0`` itself, with a mean-squared
   error of ``t0² (E[x²] + 1)`` — several times the data variance at ``t0 = 0.5``.
3. **Samples vs data** — generate ``n_samples`` patches from pure noise (``t = 1``) and compare
   their intensity histogram with the held-out patches' (Wasserstein-1 distance in HU, both
   clipped to the benchmark window ``[-1000, 400]``).

Errors are reported relative to the held-out patches' intensity variance (voxels pooled), so
``rel_mse < 1`` means "better than predicting the mean intensity". The check passes when
``renoise_rel_mse < max_renoise_rel_mse`` and ``roundtrip_rel_mse < max_roundtrip_rel_mse`` and
``sample_w1_hu < max_sample_w1_hu``.

Example::

    >>> report = check_generator(gen, validation.images[:16], t0=0.5, steps=10)   # doctest: +SKIP
    >>> report.passed, report.renoise_rel_mse
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from wsbench.data.intensity import HU_MAX, HU_MIN, norm_to_hu
from wsbench.progress import ensure

#: Default pass thresholds. Measured on luna16-synth (benchmarks/generators.py, 8 held-out patches):
#: rflow after 200 steps 0.062 / 0.001 / 114 HU; untrained 1.17 / 0.0004 / 314 HU.
MAX_RENOISE_REL_MSE = 0.5
MAX_ROUNDTRIP_REL_MSE = 0.05
MAX_SAMPLE_W1_HU = 150.0


def _as_batch(patches) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(patches, dtype=np.float32))
    if x.ndim == 4:
        x = x[:, None]
    if x.ndim != 5 or x.shape[1] != 1:
        raise ValueError(f"patches must be (N, D, H, W) or (N, 1, D, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("no patches to check")
    return x


def _device(generator) -> torch.device:
    return torch.device(getattr(generator, "device", "cpu"))


@torch.no_grad()
def reconstruction_errors(generator, patches, t0: float = 0.5, steps: int = 10, seed: int = 0,
                          batch_size: int = 8) -> dict[str, float]:
    """Measurements 1 and 2 of the module docstring on ``patches``.

    Returns ``{"data_var", "roundtrip_mse", "roundtrip_rel_mse", "renoise_mse", "renoise_rel_mse",
    "inversion_noise_std"}``; ``inversion_noise_std`` is the mean per-patch standard deviation of
    ``(z_t0 - (1 - t0) z0) / t0`` after deterministic inversion (≈ 1 when the inverted state looks
    like the forward process's, ≈ std of the data for a zero-velocity model).
    """
    if not 0.0 < t0 <= 1.0:
        raise ValueError(f"t0 must be in (0, 1], got {t0}")
    x = _as_batch(patches)
    dev = _device(generator)
    gen_noise = torch.Generator().manual_seed(int(seed))
    rt_se = rn_se = 0.0
    noise_std = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].to(dev)
        z0 = generator.encode(xb)
        # 1. deterministic inversion, then generation
        zt = generator.invert(z0, t0, steps)
        noise_std.extend(((zt - (1.0 - t0) * z0) / t0).flatten(1).std(dim=1).tolist())
        xr = generator.decode(generator.generate(zt, t0, steps))
        rt_se += float(((xr.float() - xb) ** 2).sum())
        # 2. stochastic re-noising (forward process), then generation
        eps = torch.randn(z0.shape, generator=gen_noise).to(dev, z0.dtype)
        zt = (1.0 - t0) * z0 + t0 * eps
        xr = generator.decode(generator.generate(zt, t0, steps))
        rn_se += float(((xr.float() - xb) ** 2).sum())
    n = x.numel()
    var = float(x.double().var())
    var = max(var, 1e-12)
    return {
        "data_var": var,
        "roundtrip_mse": rt_se / n, "roundtrip_rel_mse": rt_se / n / var,
        "renoise_mse": rn_se / n, "renoise_rel_mse": rn_se / n / var,
        "inversion_noise_std": float(np.mean(noise_std)),
    }


def histogram_w1_hu(a, b, max_voxels: int = 200_000, seed: int = 0) -> float:
    """Wasserstein-1 distance (HU) between the voxel intensities of two patch sets.

    Both are mapped from normalised intensity to HU and clipped to the benchmark window
    ``[HU_MIN, HU_MAX]`` (a sample outside ``[-1, 1]`` counts as the window's edge); up to
    ``max_voxels`` voxels of each are drawn (seeded) to bound the cost.
    """
    rng = np.random.default_rng(seed)

    def hu(v):
        v = np.asarray(v, dtype=np.float64).ravel()
        if v.size > max_voxels:
            v = rng.choice(v, size=max_voxels, replace=False)
        return np.clip(norm_to_hu(v), HU_MIN, HU_MAX)

    return float(wasserstein_distance(hu(a), hu(b)))


@torch.no_grad()
def sample_patches(generator, like, n: int, steps: int = 20, seed: int = 0, batch_size: int = 8) -> np.ndarray:
    """``n`` patches generated from pure noise (``t = 1``) in ``steps`` Euler steps → ``(n, D, H, W)``.

    ``like``: one or more patches ``(N, D, H, W)`` that fix the patch shape (their content is only
    used to find the state shape via ``encode``)."""
    x = _as_batch(like)[:1]
    dev = _device(generator)
    zshape = tuple(generator.encode(x.to(dev)).shape[1:])
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for i in range(0, n, batch_size):
        k = min(batch_size, n - i)
        z = torch.randn((k, *zshape), generator=g).to(dev)
        out.append(generator.decode(generator.generate(z, 1.0, steps)).float().cpu()[:, 0].numpy())
    return np.concatenate(out, axis=0)


@dataclass
class QualityReport:
    """Result of :func:`check_generator` (all errors relative to the held-out data's variance)."""

    n_patches: int
    t0: float
    steps: int
    data_var: float
    roundtrip_rel_mse: float
    renoise_rel_mse: float
    inversion_noise_std: float
    sample_w1_hu: float | None
    n_samples: int
    thresholds: dict[str, float]
    passed: bool
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_generator(generator, patches, *, t0: float = 0.5, steps: int = 10, n_samples: int = 8,
                    sample_steps: int = 20, seed: int = 0, max_renoise_rel_mse: float = MAX_RENOISE_REL_MSE,
                    max_roundtrip_rel_mse: float = MAX_ROUNDTRIP_REL_MSE, max_sample_w1_hu: float = MAX_SAMPLE_W1_HU,
                    progress=None) -> QualityReport:
    """Run the three measurements on held-out ``patches`` and decide pass/fail.

    ``n_samples=0`` skips the sample statistic (it then does not count against passing)."""
    progress = ensure(progress)
    with progress.task("generator quality check", total=2 if n_samples else 1) as task:
        errs = reconstruction_errors(generator, patches, t0=t0, steps=steps, seed=seed)
        task.advance(1)
        w1 = None
        if n_samples > 0:
            samples = sample_patches(generator, patches, n_samples, steps=sample_steps, seed=seed + 1)
            w1 = histogram_w1_hu(samples, np.asarray(patches), seed=seed)
            task.advance(1)
    failures = []
    if not errs["renoise_rel_mse"] < max_renoise_rel_mse:
        failures.append(f"re-noised reconstruction error {errs['renoise_rel_mse']:.3f} x data variance "
                        f"(t0={t0}) is not below {max_renoise_rel_mse}")
    if not errs["roundtrip_rel_mse"] < max_roundtrip_rel_mse:
        failures.append(f"deterministic round-trip error {errs['roundtrip_rel_mse']:.4f} x data variance "
                        f"(t0={t0}) is not below {max_roundtrip_rel_mse}")
    if w1 is not None and not w1 < max_sample_w1_hu:
        failures.append(f"samples' HU histogram is {w1:.1f} HU (Wasserstein-1) from the data's, "
                        f"not below {max_sample_w1_hu}")
    return QualityReport(
        n_patches=int(_as_batch(patches).shape[0]), t0=float(t0), steps=int(steps), data_var=errs["data_var"],
        roundtrip_rel_mse=errs["roundtrip_rel_mse"], renoise_rel_mse=errs["renoise_rel_mse"],
        inversion_noise_std=errs["inversion_noise_std"], sample_w1_hu=w1, n_samples=int(n_samples),
        thresholds={"max_renoise_rel_mse": max_renoise_rel_mse, "max_roundtrip_rel_mse": max_roundtrip_rel_mse,
                    "max_sample_w1_hu": max_sample_w1_hu},
        passed=not failures, failures=failures)
