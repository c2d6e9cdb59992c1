"""Tests of the generators: the velocity U-Net, ``rflow`` (training, convention, save/load, seeds),
the quality check (against analytic generators), and the ``maisi`` adapter (tiny random config).

The trained-model test is sized by ``WSBENCH_TEST_GEN_STEPS`` (default 150 steps on 16³ patches).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from wsbench.data.types import PatchSet
from wsbench.errors import OptionError, WsbenchError
from wsbench.generators.quality import (check_generator, histogram_w1_hu, reconstruction_errors,
                                        sample_patches)
from wsbench.generators.rflow import RFlowGenerator, sample_times
from wsbench.generators.unet import VelocityUNet, timestep_embedding
from wsbench.interfaces.generator import Generator

TINY = {"channels": "8,16", "batch_size": 8}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small 3-D convolutions gain nothing from a second thread, and on a shared (oversubscribed)
    # CPU two OpenMP threads were measured ~30x slower than one.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def blob_patches(n: int, size: int = 16, seed: int = 0) -> PatchSet:
    """An easy set: a bright Gaussian blob at a random place on a dark, slightly noisy background."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*(np.arange(size, dtype=np.float32),) * 3, indexing="ij"), -1)
    images = np.empty((n, size, size, size), np.float32)
    labels = (np.arange(n) % 2).astype(np.int64)
    for i in range(n):
        img = np.full((size,) * 3, -0.8, np.float32)
        if labels[i]:
            c = rng.uniform(size * 0.3, size * 0.7, 3)
            s = rng.uniform(1.5, 3.0)
            img += 1.4 * np.exp(-((g - c) ** 2).sum(-1) / (2 * s * s))
        img += rng.normal(scale=0.02, size=img.shape).astype(np.float32)
        images[i] = img
    return PatchSet(images, labels, [f"s{i}:p:{i}" for i in range(n)], [f"s{i}" for i in range(n)])


class _Analytic(Generator):
    """A generator with a known velocity field, for checking the quality measurements."""

    name = "analytic"

    def __init__(self, kind: str, point: torch.Tensor | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.point = point
        self.model = torch.nn.Identity()

    def encode(self, x):
        return x

    def decode(self, z):
        return z

    def velocity(self, z, t):
        if self.kind == "zero":
            return torch.zeros_like(z)
        # exact velocity of the flow whose data distribution is the single patch `point`:
        # z_t = (1 - t) p + t eps  =>  v = eps - p = (z - p) / t
        tt = t.clamp_min(1e-6)[:, None, None, None, None]
        return (z - self.point) / tt

    def fit(self, train, validation=None, progress=None):
        return {}

    def save(self, path):
        pass

    def load(self, path):
        pass


# -- U-Net --------------------------------------------------------------------------------------

def test_unet_shapes_and_time_dependence():
    torch.manual_seed(0)
    net = VelocityUNet(1, 1, channels=(4, 8, 8))
    for p in net.conv_out.parameters():  # make the output depend on everything
        torch.nn.init.normal_(p, std=0.1)
    z = torch.randn(2, 1, 8, 8, 8)
    out = net(z, torch.tensor([0.2, 0.2]))
    assert out.shape == z.shape
    out2 = net(z, torch.tensor([0.8, 0.8]))
    assert not torch.allclose(out, out2), "the output must depend on t"
    assert net(torch.randn(1, 1, 4, 8, 12), torch.tensor(0.5)).shape == (1, 1, 4, 8, 12)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, 1, 10, 8, 8), torch.tensor([0.5]))


def test_timestep_embedding_and_sampling():
    e = timestep_embedding(torch.tensor([0.0, 0.5, 1.0]), 16)
    assert e.shape == (3, 16)
    assert torch.allclose(e[0, :8], torch.ones(8)) and torch.allclose(e[0, 8:], torch.zeros(8))
    g = torch.Generator().manual_seed(0)
    for method in ("uniform", "logit-normal"):
        t = sample_times(10_000, method, 0.85, g)
        assert float(t.min()) >= 0.0 and float(t.max()) <= 0.85
    # logit-normal concentrates around the middle: fewer draws in the outer fifths than uniform
    lt = sample_times(10_000, "logit-normal", 1.0, g)
    ut = sample_times(10_000, "uniform", 1.0, g)
    assert ((lt < 0.2) | (lt > 0.8)).float().mean() < ((ut < 0.2) | (ut > 0.8)).float().mean()


# -- options -------------------------------------------------------------------------------------

def test_rflow_options_fail_fast():
    with pytest.raises(OptionError, match="t_max"):
        RFlowGenerator({"t_max": 1.5})
    with pytest.raises(OptionError, match="did you mean 'steps'"):
        RFlowGenerator({"step": 3})
    with pytest.raises(OptionError, match="choose one of"):
        RFlowGenerator({"data": "positives"})
    g = RFlowGenerator({"channels": "8,16,32"})
    assert g.options.channels == (8, 16, 32)
    with pytest.raises(WsbenchError, match="divisible by 4"):
        g.velocity(torch.zeros(1, 1, 18, 16, 16), torch.tensor([0.5]))


def test_negatives_only_without_negatives_is_a_clear_error():
    ps = blob_patches(4)
    ps = ps.subset(np.flatnonzero(ps.labels == 1))
    g = RFlowGenerator({**TINY, "steps": 1, "data": "negatives"})
    with pytest.raises(WsbenchError, match="no negative"):
        g.fit(ps, None)


# -- the quality check against analytic generators -----------------------------------------------

def test_quality_check_analytic_oracle_passes_and_zero_velocity_fails():
    ps = blob_patches(8, seed=3)
    point = torch.from_numpy(ps.images[1])[None, None]  # a patch with a blob
    x = np.repeat(ps.images[1:2], 4, axis=0)
    oracle = _Analytic("exact", point)
    errs = reconstruction_errors(oracle, x, t0=0.5, steps=10, seed=1)
    # the straight path is integrated exactly by Euler steps: both reconstructions are exact
    assert errs["renoise_rel_mse"] < 1e-8 and errs["roundtrip_rel_mse"] < 1e-8
    rep = check_generator(oracle, x, n_samples=2, sample_steps=5)
    assert rep.passed, rep.failures
    assert rep.sample_w1_hu < 1.0  # samples are the data point itself

    zero = _Analytic("zero")
    errs = reconstruction_errors(zero, x, t0=0.5, steps=10, seed=1)
    # zero velocity: the deterministic round trip is exact (why it cannot be the only test) ...
    assert errs["roundtrip_rel_mse"] < 1e-10
    # ... but re-noised patches stay noisy: MSE = t0^2 * mean((eps - x)^2) ~ t0^2 (E[x^2] + 1)
    expected = 0.25 * (float(np.mean(x.astype(np.float64) ** 2)) + 1.0)
    assert errs["renoise_mse"] == pytest.approx(expected, rel=0.05)
    rep = check_generator(zero, x, n_samples=2, sample_steps=5)
    assert not rep.passed
    assert any("re-noised" in f for f in rep.failures)
    assert any("histogram" in f for f in rep.failures)


def test_histogram_w1_matches_shift():
    rng = np.random.default_rng(0)
    a = rng.uniform(-0.9, 0.5, size=(2, 8, 8, 8)).astype(np.float32)
    shift_norm = 0.1  # 0.1 normalised units = 70 HU (window 1400 HU over 2 units)
    assert histogram_w1_hu(a, a) == pytest.approx(0.0, abs=1e-9)
    assert histogram_w1_hu(a, a + shift_norm) == pytest.approx(70.0, rel=1e-3)


def test_untrained_rflow_fails_quality_check():
    ps = blob_patches(4, size=8, seed=4)
    g = RFlowGenerator({**TINY, "steps": 0}, seed=0)
    rep = check_generator(g, ps.images, steps=5, n_samples=2, sample_steps=5)
    assert not rep.passed
    assert rep.renoise_rel_mse > 1.0


# -- training, round trip, save/load, seeds ------------------------------------------------------

@pytest.mark.slow
def test_rflow_trains_and_round_trips(tmp_path):
    steps = int(os.environ.get("WSBENCH_TEST_GEN_STEPS", "150"))
    train, val = blob_patches(128, seed=0), blob_patches(8, seed=1)
    g = RFlowGenerator({**TINY, "steps": steps, "lr": 3e-3, "warmup": 10, "val_patches": 8}, seed=0)
    untrained = reconstruction_errors(RFlowGenerator({**TINY, "steps": 0}, seed=0), val.images, seed=5)
    summary = g.fit(train, val)
    assert summary["steps"] == steps and summary["val_patches"] == 8
    assert np.isfinite(summary["final_loss"])
    held_out = val.images[val.labels == 1]
    errs = reconstruction_errors(g, held_out, t0=0.5, steps=10, seed=5)
    # clearly below the data's own variance, and far better than the untrained model
    assert errs["renoise_rel_mse"] < 0.5, errs
    assert errs["renoise_rel_mse"] < 0.3 * untrained["renoise_rel_mse"]
    assert errs["roundtrip_rel_mse"] < 0.05, errs

    path = tmp_path / "rflow.pt"
    g.save(path)
    g2 = RFlowGenerator({**TINY, "steps": steps, "lr": 3e-3, "warmup": 10, "val_patches": 8}, seed=123)
    g2.load(path)
    z = torch.from_numpy(val.images[:2, None])
    t = torch.tensor([0.3, 0.6])
    assert torch.equal(g.velocity(z, t), g2.velocity(z, t))
    assert g2.summary == summary
    with pytest.raises(WsbenchError, match="channels"):
        RFlowGenerator({"channels": "8,16,32"}).load(path)


def test_rflow_seeded_training_is_deterministic():
    train = blob_patches(16, size=8, seed=0)
    out = []
    for _ in range(2):
        g = RFlowGenerator({**TINY, "steps": 2, "batch_size": 4}, seed=7)
        s = g.fit(train, None)
        out.append((s["final_loss"], [p.detach().clone() for p in g.model.parameters()]))
    assert out[0][0] == out[1][0]
    assert all(torch.equal(a, b) for a, b in zip(out[0][1], out[1][1]))
    g3 = RFlowGenerator({**TINY, "steps": 2, "batch_size": 4}, seed=8)
    g3.fit(train, None)
    assert not all(torch.equal(a, b) for a, b in zip(out[0][1], g3.model.parameters()))


def test_rflow_load_errors(tmp_path):
    g = RFlowGenerator(TINY)
    with pytest.raises(WsbenchError, match="does not exist"):
        g.load(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something-else"}, bad)
    with pytest.raises(WsbenchError, match="not an rflow checkpoint"):
        g.load(bad)


def test_sample_patches_shape():
    g = RFlowGenerator(TINY)
    s = sample_patches(g, blob_patches(2, size=8).images, n=3, steps=2)
    assert s.shape == (3, 8, 8, 8) and np.isfinite(s).all()


# -- maisi ---------------------------------------------------------------------------------------

MAISI_TINY = {"random_init": True, "ae_channels": "8,8,8", "ae_res_blocks": "1,1,1", "ae_norm_groups": 4,
              "unet_channels": "8,16", "unet_attention": "false,false", "unet_head_channels": "0,8",
              "unet_res_blocks": 1, "unet_norm_groups": 4, "num_class_embeds": 8}


class _RecordingUNet(torch.nn.Module):
    """Stands in for MONAI's MAISI U-Net where einops (needed by its attention) is missing:
    returns a fixed function of its input and records what it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def forward(self, x, timesteps, class_labels=None, spacing_tensor=None):
        self.calls.append({"t": timesteps, "class_labels": class_labels, "spacing": spacing_tensor})
        return 2.0 * x + 1.0


def _maisi(monkeypatch, **extra):
    from wsbench.generators import maisi

    try:
        import einops  # noqa: F401
    except ImportError:
        monkeypatch.setattr(maisi, "build_diffusion_unet", lambda o: _RecordingUNet())
    return maisi.MaisiGenerator({**MAISI_TINY, **extra})


def test_maisi_missing_weights_error(tmp_path):
    from wsbench.generators.maisi import MaisiGenerator

    with pytest.raises(WsbenchError, match="autoencoder_path"):
        MaisiGenerator({})
    with pytest.raises(WsbenchError, match="does not exist"):
        MaisiGenerator({"autoencoder_path": str(tmp_path / "ae.pt"), "diffusion_path": str(tmp_path / "d.pt")})
    g = MaisiGenerator.__new__(MaisiGenerator)
    with pytest.raises(WsbenchError, match="pretrained only"):
        MaisiGenerator.fit(g, None)


def test_maisi_intensity_mapping_round_trip():
    from wsbench.generators.maisi import MaisiGenerator

    x = torch.linspace(-1, 1, 15)
    y = MaisiGenerator.norm_to_maisi(x)
    # -1 -> -1000 HU -> 0; +1 -> 400 HU -> 0.7
    assert float(y[0]) == pytest.approx(0.0) and float(y[-1]) == pytest.approx(0.7)
    assert torch.allclose(MaisiGenerator.maisi_to_norm(y), x, atol=1e-6)
    # MAISI outputs above the benchmark window clip to +1
    assert float(MaisiGenerator.maisi_to_norm(torch.tensor(1.0))) == pytest.approx(1.0)


def test_maisi_tiny_encode_velocity_decode(monkeypatch):
    g = _maisi(monkeypatch, spacing_mm="1.0,0.7,0.7")
    x = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    z = g.encode(x)
    assert z.shape == (2, 4, 4, 4, 4)  # 4 latent channels, 4x downsampling per axis
    t = torch.tensor([0.3, 0.6])
    v = g.velocity(z, t)
    assert v.shape == z.shape and torch.isfinite(v).all()
    xr = g.decode(z)
    assert xr.shape == x.shape
    assert float(xr.min()) >= -1.0 and float(xr.max()) <= 1.0
    zz = z.clone().requires_grad_(True)
    g.decode(zz).sum().backward()
    assert zz.grad is not None and torch.isfinite(zz.grad).all()
    # the ODE helpers of the interface work on the latent
    assert g.generate(g.invert(z, 0.5, 2), 0.5, 2).shape == z.shape
    with pytest.raises(WsbenchError, match="divisible by 8"):
        g.encode(torch.zeros(1, 1, 12, 16, 16))


def test_maisi_velocity_convention(monkeypatch):
    """MONAI's U-Net predicts x0 - noise at t_monai = 1000 t; wsbench's velocity is its negative."""
    from wsbench.generators import maisi

    monkeypatch.setattr(maisi, "build_diffusion_unet", lambda o: _RecordingUNet())
    g = maisi.MaisiGenerator({**MAISI_TINY, "spacing_mm": "2.5,0.7,0.6", "modality": 1})
    z = torch.randn(2, 4, 4, 4, 4)
    v = g.velocity(z, torch.tensor([0.25, 0.5]))
    assert torch.allclose(v, -(2.0 * z + 1.0))
    call = g.model.calls[-1]
    assert torch.allclose(call["t"], torch.tensor([250.0, 500.0]))
    assert call["class_labels"].tolist() == [1, 1]
    # spacing given (z, y, x) reaches the U-Net as (x, y, z) * 100
    assert torch.allclose(call["spacing"], torch.tensor([[60.0, 70.0, 250.0]] * 2))


def test_maisi_axes_round_trip(monkeypatch):
    g = _maisi(monkeypatch)
    a = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(1, 2, 3, 4, 5)
    m = g._to_model_axes(a)
    assert m.shape == (1, 2, 5, 4, 3)
    assert torch.equal(g._from_model_axes(m), a)
    # RAS: model index (0, 0, 0) is the patch's last x and y, first z
    assert m[0, 0, 0, 0, 0] == a[0, 0, 0, 3, 4]


def test_builtins_register_generators_and_command():
    from click.testing import CliRunner

    from wsbench import plugins
    from wsbench.cli import cli, main  # noqa: F401  (main adds plugin commands)

    reg = plugins.get_registry()
    assert {"rflow", "maisi"} <= set(reg.names("generator"))
    assert reg.get("generator", "rflow").cls is RFlowGenerator
    plugins.add_commands(cli)
    res = CliRunner().invoke(cli, ["check-generator", "--help"])
    assert res.exit_code == 0, res.output
    assert "wsbench check-generator" in res.output


def test_checkpoint_cache_reuses_rflow(tmp_path):
    """Through the runner's checkpoint cache: the second call loads instead of training again."""
    from wsbench.checkpoints import fit_or_load

    train = blob_patches(8, size=8, seed=0)
    calls = []

    def make():
        g = RFlowGenerator({**TINY, "steps": 2, "batch_size": 2}, seed=3)
        return g, (lambda: calls.append(1) or g.fit(train, None))

    g1, fit1 = make()
    ck1 = fit_or_load(g1, "k", fit1, root=tmp_path)
    g2, fit2 = make()
    ck2 = fit_or_load(g2, "k", fit2, root=tmp_path)
    assert (ck1["cached"], ck2["cached"]) == (False, True) and len(calls) == 1
    assert ck1["sha256"] == ck2["sha256"]
    z, t = torch.from_numpy(train.images[:2, None]), torch.tensor([0.2, 0.7])
    assert torch.equal(g1.velocity(z, t), g2.velocity(z, t))


def test_maisi_loads_weight_files(monkeypatch, tmp_path):
    """Weights and scale_factor come from the user's files (tiny config saved, then reloaded)."""
    src = _maisi(monkeypatch)
    ae, unet = tmp_path / "autoencoder.pt", tmp_path / "diff_unet.pt"
    torch.save(src.autoencoder.state_dict(), ae)  # MAISI ships the autoencoder as a plain state dict
    torch.save({"unet_state_dict": src.model.state_dict(), "scale_factor": torch.tensor(0.25)}, unet)
    g = _maisi(monkeypatch, random_init=False, autoencoder_path=str(ae), diffusion_path=str(unet))
    assert g._scale == pytest.approx(0.25)
    for a, b in zip(src.autoencoder.state_dict().values(), g.autoencoder.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.rand(1, 1, 16, 16, 16) * 2 - 1
    assert torch.allclose(g.encode(x), 0.25 * src.encode(x))  # src has scale 1
    prov = g.provenance()
    assert prov["init"] == "pretrained" and len(prov["autoencoder_sha256"]) == 64
    torch.save({"unet_state_dict": src.model.state_dict()}, unet)
    with pytest.raises(WsbenchError, match="scale_factor"):
        _maisi(monkeypatch, random_init=False, autoencoder_path=str(ae), diffusion_path=str(unet))
