"""``maisi``: NVIDIA MAISI-v2 (``maisi3d-rflow``) as a wsbench generator — pretrained weights only.

MAISI is a latent 3-D generative CT model: an autoencoder (``AutoencoderKlMaisi``, 4 latent
channels, 4× downsampling per axis) and a rectified-flow diffusion U-Net
(``DiffusionModelUNetMaisi`` with spacing input and a modality class embedding), both built with
MONAI's own classes here. The weights are hub downloads (NVIDIA ``NV-Generate-CT``); users pass
the two files::

    wsbench run --segmenter flow-guide --generator maisi \\
        -o generator.autoencoder_path=~/maisi/autoencoder_v1.pt \\
        -o generator.diffusion_path=~/maisi/diff_unet_3d_rflow-ct.pt

Conversions done here so that segmenters see wsbench's one convention
(:mod:`wsbench.interfaces.generator`):

* **Intensity** — wsbench's normalised ``[-1, 1]`` (HU window ``[-1000, 400]``) → HU → MAISI's
  input ``clip(HU, -1000, 1000)`` scaled to ``[0, 1]``; decoding maps back and clips to the
  benchmark window (so the gradient is zero where a decoded voxel is outside it, e.g. bone).
* **Axes** — wsbench patches are ``(z, y, x)``; MAISI was trained on RAS-oriented ``(x, y, z)``
  arrays (MONAI ``LoadImage`` + ``Orientation("RAS")``). ``orientation="ras"`` transposes and flips
  x and y (LUNA16/SimpleITK arrays with identity direction are LPS); ``"none"`` only transposes.
* **Latent** — ``z = scale_factor * mu(x)`` (the encoder's mean: deterministic), ``scale_factor``
  read from the diffusion checkpoint (``"scale_factor"``) unless given as an option.
* **Time and velocity** — MONAI's ``RFlowScheduler`` uses ``t_monai = 1000 * t`` with the same
  interpolation ``x_t = (1 - t) x0 + t noise`` and trains the U-Net on ``x0 - noise``; wsbench's
  velocity is ``noise - x0``, so :meth:`MaisiGenerator.velocity` returns ``-unet(z, 1000 t)``.
* **Spacing** — the U-Net takes the voxel spacing in mm × 100, ordered (x, y, z); set it with
  ``spacing_mm`` (``(z, y, x)``, default the benchmark's 1 mm isotropic).

MONAI builds the U-Net's attention blocks (its middle block always has one) with ``einops``, an
optional MONAI dependency that wsbench does not install: ``maisi`` needs ``pip install einops``;
without it a clear error is raised.

Accepted patch sizes: every side divisible by ``4 * 2 ** (len(unet_channels) - 1)`` (32 with the
published configuration — the benchmark's default 32³ patch gives an 8³ latent).

The network options default to MAISI-v2's published configuration (``config_maisi3d-rflow.json``)
so the real weights load; a tiny configuration with ``random_init=true`` builds the same classes
with random weights (tests, timing). Two memory-only settings of the published configuration
are not used: ``norm_float16`` (half-precision GroupNorm output, CUDA only) and ``num_splits``
(the autoencoder splits large volumes; a patch needs no splitting) — neither changes the weights.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wsbench.data.intensity import HU_MAX, HU_MIN, hu_to_norm, norm_to_hu
from wsbench.errors import WsbenchError
from wsbench.interfaces.generator import Generator
from wsbench.options import option
from wsbench.seeding import derive_seed
from wsbench.checkpoints import file_sha256

MAISI_HU_MIN, MAISI_HU_MAX = -1000.0, 1000.0
REF_FORMAT = "wsbench-maisi-ref-1"
_HUB_HINT = "MAISI-v2 weights: NVIDIA's NV-Generate-CT release (autoencoder + rflow diffusion U-Net)"


def _state_dict(payload: Any, keys: tuple[str, ...]) -> dict:
    """The state dict inside a checkpoint: the payload itself or one of ``keys``."""
    if isinstance(payload, dict):
        for k in keys:
            if k in payload and isinstance(payload[k], dict):
                return payload[k]
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            return payload
    raise ValueError(f"no state dict found (looked for the keys {', '.join(keys)} or a plain state dict)")


def build_autoencoder(o) -> torch.nn.Module:
    """MONAI's ``AutoencoderKlMaisi`` from :class:`MaisiGenerator.Options` ``o`` (random weights)."""
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi

    try:
        return AutoencoderKlMaisi(
            spatial_dims=3, in_channels=1, out_channels=1, latent_channels=o.latent_channels,
            num_channels=list(o.ae_channels), num_res_blocks=list(o.ae_res_blocks),
            norm_num_groups=o.ae_norm_groups, norm_eps=1e-6, attention_levels=[False] * len(o.ae_channels),
            with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False, use_checkpointing=False,
            use_convtranspose=False, norm_float16=False, num_splits=1, dim_split=1, save_mem=False)
    except (ValueError, TypeError, AssertionError) as e:
        raise WsbenchError(f"generator 'maisi': the autoencoder options (ae_*) do not form a valid "
                           f"configuration: {e}") from None


def build_diffusion_unet(o) -> torch.nn.Module:
    """MONAI's ``DiffusionModelUNetMaisi`` from :class:`MaisiGenerator.Options` ``o`` (random weights)."""
    from monai.apps.generation.maisi.networks.diffusion_model_unet_maisi import DiffusionModelUNetMaisi

    try:
        return DiffusionModelUNetMaisi(
            spatial_dims=3, in_channels=o.latent_channels, out_channels=o.latent_channels,
            num_channels=list(o.unet_channels), attention_levels=list(o.unet_attention),
            num_head_channels=list(o.unet_head_channels), num_res_blocks=o.unet_res_blocks,
            norm_num_groups=o.unet_norm_groups, use_flash_attention=False,
            include_top_region_index_input=False, include_bottom_region_index_input=False,
            include_spacing_input=o.include_spacing_input, num_class_embeds=o.num_class_embeds or None,
            resblock_updown=o.resblock_updown, include_fc=o.include_fc)
    except ImportError as e:
        # MONAI's attention blocks (the U-Net's middle block always has one) import einops lazily
        raise WsbenchError(f"generator 'maisi': MONAI's MAISI U-Net needs the optional package einops "
                           f"({str(e).splitlines()[0]}); install it: pip install einops") from None
    except (ValueError, TypeError, AssertionError, ZeroDivisionError) as e:
        raise WsbenchError(f"generator 'maisi': the U-Net options (unet_*) do not form a valid "
                           f"configuration: {type(e).__name__}: {e}") from None


class MaisiGenerator(Generator):
    """NVIDIA MAISI-v2 rectified flow (latent, pretrained), adapted to wsbench's convention."""

    name = "maisi"
    description = "NVIDIA MAISI-v2 latent rectified flow (pretrained; weight files supplied by the user)"

    @dataclass
    class Options:
        autoencoder_path: Path | None = option(None, "MAISI autoencoder weights (.pt); " + _HUB_HINT)
        diffusion_path: Path | None = option(None, "MAISI-v2 rflow diffusion U-Net weights (.pt, with scale_factor)")
        scale_factor: float | None = option(None, "latent scale factor; default: the diffusion checkpoint's")
        spacing_mm: tuple[float, float, float] = option((1.0, 1.0, 1.0), "voxel spacing (z, y, x) mm given to the U-Net")
        orientation: str = option("ras", "array orientation the model sees", choices=("ras", "none"))
        modality: int = option(1, "class label for the U-Net's modality embedding (MAISI-v2: 1 = CT)")
        amp: bool = option(True, "mixed precision on CUDA (bf16 where supported, else fp16); ignored on CPU")
        random_init: bool = option(False, "random weights instead of files (tests and timing only)")
        latent_channels: int = option(4, "autoencoder latent channels")
        ae_channels: tuple[int, ...] = option((64, 128, 256), "autoencoder channels per level")
        ae_res_blocks: tuple[int, ...] = option((2, 2, 2), "autoencoder residual blocks per level")
        ae_norm_groups: int = option(32, "autoencoder GroupNorm groups")
        unet_channels: tuple[int, ...] = option((64, 128, 256, 512), "diffusion U-Net channels per level")
        unet_attention: tuple[bool, ...] = option((False, False, True, True), "diffusion U-Net attention per level")
        unet_head_channels: tuple[int, ...] = option((0, 0, 32, 32), "channels per attention head per level")
        unet_res_blocks: int = option(2, "diffusion U-Net residual blocks per level")
        unet_norm_groups: int = option(32, "diffusion U-Net GroupNorm groups")
        num_class_embeds: int = option(128, "size of the U-Net's class (modality) embedding; 0 = none")
        include_spacing_input: bool = option(True, "the U-Net takes the voxel spacing")
        resblock_updown: bool = option(True, "U-Net resamples with residual blocks")
        include_fc: bool = option(True, "U-Net attention blocks have a final linear layer")

        def validate(self) -> None:
            if len(self.ae_channels) != len(self.ae_res_blocks):
                raise ValueError("ae_channels and ae_res_blocks differ in length")
            n = len(self.unet_channels)
            if len(self.unet_attention) != n or len(self.unet_head_channels) != n:
                raise ValueError("unet_channels, unet_attention and unet_head_channels differ in length")
            if any(s <= 0 for s in self.spacing_mm):
                raise ValueError("spacing_mm must be positive")

    training_options = ()

    def __init__(self, options=None, *, device="cpu", seed: int = 0) -> None:
        super().__init__(options, device=device, seed=seed)
        o = self.options
        if not o.random_init:
            self._check_paths()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "maisi-init"))
            self.autoencoder = build_autoencoder(o)
            self.model = build_diffusion_unet(o)
        self._scale = float(o.scale_factor) if o.scale_factor is not None else (1.0 if o.random_init else None)
        self._hashes: dict[str, str] = {}
        if not o.random_init:
            self._load_weights()
        self.autoencoder.eval().requires_grad_(False)
        self.model.eval().requires_grad_(False)
        self.to(self.device)

    # -- weights --------------------------------------------------------------------------------
    def _check_paths(self) -> None:
        o = self.options
        for key in ("autoencoder_path", "diffusion_path"):
            p = getattr(o, key)
            if p is None:
                raise WsbenchError(f"generator 'maisi' needs -o generator.{key}=/path/to/file.pt ({_HUB_HINT}; "
                                   f"they cannot be downloaded by wsbench)")
            if not Path(p).is_file():
                raise WsbenchError(f"generator 'maisi': {key} {p} does not exist; pass the downloaded "
                                   f"{'autoencoder' if key == 'autoencoder_path' else 'diffusion U-Net'} weights")

    def _load_weights(self) -> None:
        o = self.options
        for key, net, keys in (("autoencoder_path", self.autoencoder, ("autoencoder_state_dict", "state_dict", "unet_state_dict", "model")),
                               ("diffusion_path", self.model, ("unet_state_dict", "state_dict", "model"))):
            path = Path(getattr(o, key))
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
                net.load_state_dict(_state_dict(payload, keys), strict=True)
            except Exception as e:
                msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                raise WsbenchError(f"generator 'maisi': cannot load {key} {path}: {msg}; check that it is the "
                                   f"MAISI-v2 file and that the network options match its configuration") from None
            if key == "diffusion_path" and self._scale is None:
                sf = payload.get("scale_factor") if isinstance(payload, dict) else None
                if sf is None:
                    raise WsbenchError(f"generator 'maisi': {path} holds no 'scale_factor'; pass "
                                       f"-o generator.scale_factor=<value used in training>")
                self._scale = float(torch.as_tensor(sf).float().item())

    def provenance(self) -> dict[str, Any]:
        o = self.options
        if o.random_init:
            return {"init": "random", "note": "random weights (tests/timing), not MAISI"}
        for key in ("autoencoder_path", "diffusion_path"):
            if key not in self._hashes:
                self._hashes[key] = file_sha256(Path(getattr(o, key)))
        return {"init": "pretrained", "autoencoder": str(o.autoencoder_path),
                "autoencoder_sha256": self._hashes["autoencoder_path"], "diffusion": str(o.diffusion_path),
                "diffusion_sha256": self._hashes["diffusion_path"], "scale_factor": self._scale}

    # -- Trainable: pretrained only ----------------------------------------------------------------
    def needs_fit(self) -> bool:
        return False

    def fit(self, train, validation=None, progress=None) -> dict[str, Any]:
        raise WsbenchError("generator 'maisi' is pretrained only and cannot be trained by wsbench; pass its "
                           "weight files (-o generator.autoencoder_path=... -o generator.diffusion_path=...) "
                           "or use --generator rflow")

    def save(self, path: Path) -> None:
        """A small reference file (options and weight hashes), not a copy of the weights."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": REF_FORMAT, "options": self.options_dict(), "provenance": self.provenance()}, path)

    def load(self, path: Path) -> None:
        """Check that a reference file written by :meth:`save` matches these options."""
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != REF_FORMAT:
            raise WsbenchError(f"{path} is not a maisi reference file ({REF_FORMAT})")
        if payload.get("options") != self.options_dict():
            raise WsbenchError(f"maisi reference {path} was written with other options; delete it")

    # -- geometry and intensity ---------------------------------------------------------------------
    @property
    def multiple(self) -> int:
        """Patch sides must be divisible by this (autoencoder 4× times the U-Net's downsampling)."""
        return 2 ** (len(self.options.ae_channels) - 1) * 2 ** (len(self.options.unet_channels) - 1)

    def check_patch_shape(self, shape) -> None:
        """Raise a one-line :class:`WsbenchError` unless ``(B, 1, D, H, W)`` fits the model."""
        if len(shape) != 5 or shape[1] != 1:
            raise WsbenchError(f"generator 'maisi' expects patches (B, 1, D, H, W), got {tuple(shape)}")
        m = self.multiple
        if any(s % m for s in shape[2:]):
            raise WsbenchError(f"generator 'maisi' needs patch sides divisible by {m} (autoencoder and U-Net "
                               f"downsampling), got {tuple(shape[2:])}; use a benchmark geometry of size 32, 64, ...")

    def _to_model_axes(self, a: torch.Tensor) -> torch.Tensor:
        a = a.permute(0, 1, 4, 3, 2)  # (z, y, x) -> (x, y, z)
        if self.options.orientation == "ras":
            a = a.flip(2, 3)  # LPS -> RAS: reverse x and y
        return a

    def _from_model_axes(self, a: torch.Tensor) -> torch.Tensor:
        if self.options.orientation == "ras":
            a = a.flip(2, 3)
        return a.permute(0, 1, 4, 3, 2)

    @staticmethod
    def norm_to_maisi(x: torch.Tensor) -> torch.Tensor:
        """wsbench normalised intensity → MAISI's ``[0, 1]`` (HU ``[-1000, 1000]``)."""
        hu = norm_to_hu(x.clamp(-1.0, 1.0))
        return (hu.clamp(MAISI_HU_MIN, MAISI_HU_MAX) - MAISI_HU_MIN) / (MAISI_HU_MAX - MAISI_HU_MIN)

    @staticmethod
    def maisi_to_norm(y: torch.Tensor) -> torch.Tensor:
        """MAISI's ``[0, 1]`` → wsbench normalised intensity (clipped to the HU window)."""
        hu = y * (MAISI_HU_MAX - MAISI_HU_MIN) + MAISI_HU_MIN
        return hu_to_norm(hu.clamp(HU_MIN, HU_MAX))

    # -- Generator interface ----------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, D, H, W)`` → latent ``(B, latent_channels, W/4, H/4, D/4)`` (model axes), scaled."""
        self.check_patch_shape(x.shape)
        with self._autocast(x.device):
            z_mu, _ = self.autoencoder.encode(self._to_model_axes(self.norm_to_maisi(x)))
        return z_mu.float() * self._scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent → ``(B, 1, D, H, W)`` normalised patch (differentiable inside the HU window)."""
        with self._autocast(z.device):
            y = self.autoencoder.decode(z / self._scale)
        return self.maisi_to_norm(self._from_model_axes(y.float()))

    def velocity(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """wsbench velocity ``eps - z0`` = ``-(MAISI U-Net output)`` at MONAI time ``1000 t``."""
        t = torch.as_tensor(t, device=z.device, dtype=torch.float32)
        if t.ndim == 0:
            t = t.expand(z.shape[0])
        b = z.shape[0]
        kwargs = {}
        if self.options.include_spacing_input:
            sx = self.options.spacing_mm[::-1]  # (z, y, x) -> (x, y, z)
            kwargs["spacing_tensor"] = torch.tensor(sx, device=z.device, dtype=torch.float32).expand(b, 3) * 100.0
        if self.options.num_class_embeds:
            kwargs["class_labels"] = torch.full((b,), self.options.modality, device=z.device, dtype=torch.long)
        with self._autocast(z.device):
            out = self.model(z, t * 1000.0, **kwargs)
        return -out.float()

    def modules(self) -> list[torch.nn.Module]:
        return [self.autoencoder, self.model]

    def _autocast(self, device):
        device = torch.device(device)
        if not self.options.amp or device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
