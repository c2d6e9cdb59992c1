"""Throwaway plugins for the core tests: a tiny in-memory dataset, simple segmenters and a
trainable predictor. Loaded at run time (``wsbench.plugins.register``) or in subprocesses via
``WSBENCH_PLUGIN_MODULES=wsbench_testkit`` with this folder on ``PYTHONPATH``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsbench import hookimpl
from wsbench.data import Case, PatchSet
from wsbench.interfaces import Dataset, Predictor, Segmenter
from wsbench.options import option

FIT_CALLS = {"n": 0}


def _ball_patch(rng, size, with_ball=True):
    img = rng.normal(-0.7, 0.05, (size,) * 3).astype(np.float32)
    mask = np.zeros((size,) * 3, bool)
    if with_ball:
        r = rng.uniform(2.0, 4.0)
        c = rng.uniform(size / 2 - 2, size / 2 + 2, 3)
        zz, yy, xx = np.meshgrid(*(np.arange(size),) * 3, indexing="ij")
        mask = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) <= r * r
        img[mask] = rng.normal(0.1, 0.05, int(mask.sum()))
    return img, mask


class TinyBlobs(Dataset):
    name = "tiny-blobs"
    description = "bright balls in noise (test-suite dataset)"

    @dataclass
    class Options:
        n_validation: int = option(4, "validation cases")
        n_test: int = option(6, "test cases")
        n_train: int = option(16, "training patches")
        data_dir: str | None = option(None, "unused")

    def fingerprint(self):
        o = self.options
        return f"tiny-{o.n_validation}-{o.n_test}-{o.n_train}-{self.seed}"

    def prepare(self, geometry, progress=None):
        self._size = geometry.size
        self._spacing = geometry.spacing

    def split_info(self):
        o = self.options
        return {"rule": "generated", "cases": {"validation": o.n_validation, "test": o.n_test}}

    def cases(self, split, geometry):
        n = self.options.n_validation if split == "validation" else self.options.n_test
        rng = np.random.default_rng([self.seed, 1 if split == "validation" else 2])
        for i in range(n):
            img, mask = _ball_patch(rng, geometry.size)
            yield Case(f"{split}-{i:03d}", img, mask, geometry.spacing,
                       {"seriesuid": f"scan{i}", "diameter_mm": float(2 * (mask.sum() * 3 / 4 / np.pi) ** (1 / 3) * geometry.spacing_mm)})

    def training_patches(self, split, geometry):
        rng = np.random.default_rng([self.seed, 3 if split == "train" else 4])
        imgs, labels = [], []
        for i in range(self.options.n_train):
            img, _ = _ball_patch(rng, geometry.size, with_ball=bool(i % 2))
            imgs.append(img)
            labels.append(i % 2)
        return PatchSet(np.stack(imgs), np.array(labels, np.int64), [f"p{i}" for i in range(len(labels))])


class IntensitySegmenter(Segmenter):
    name = "intensity"
    description = "score = intensity (test-suite segmenter)"
    needs_predictor = False

    @dataclass
    class Options:
        sleep: float = option(0.0, "seconds to sleep per case (to be killed mid-run)")
        fail_above: float = option(1e9, "raise on a patch whose mean intensity exceeds this (a planted failure)")
        noise: float = option(0.0, "add seeded random noise of this std (tests per-case seeding)")

    def segment(self, x, predictor=None, generator=None):
        if self.options.sleep:
            time.sleep(self.options.sleep)
        out = x[:, 0].clone()
        if self.options.noise:
            out = out + self.options.noise * torch.randn_like(out)
        if float(x.mean()) > self.options.fail_above:
            raise RuntimeError("planted failure")
        return out


class MeanPredictor(Predictor):
    name = "tiny-mean"
    description = "logistic regression on the patch's mean intensity (test-suite predictor)"

    @dataclass
    class Options:
        epochs: int = option(50, "gradient steps")

    def __init__(self, options=None, **kw):
        super().__init__(options, **kw)
        self.model = torch.nn.Linear(1, 1)
        self._layer = torch.nn.Identity()

    def logits(self, x):
        feats = self._layer(x)
        return self.model(feats.mean(dim=(1, 2, 3, 4))[:, None] * 10)[:, 0]

    def target_layer(self):
        return self._layer

    def fit(self, train, validation, progress=None):
        FIT_CALLS["n"] += 1
        x = torch.from_numpy(train.images)[:, None]
        y = torch.from_numpy(train.labels).float()
        opt = torch.optim.SGD(self.model.parameters(), lr=0.5)
        for _ in range(self.options.epochs):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(self.logits(x), y)
            loss.backward()
            opt.step()
        return {"final_loss": float(loss.detach())}

    def save(self, path):
        torch.save(self.model.state_dict(), path)

    def load(self, path):
        self.model.load_state_dict(torch.load(path, weights_only=True))

    def provenance(self):
        return {"init": "scratch"}


class PredictorWeighted(Segmenter):
    name = "pred-weighted"
    description = "intensity × predictor probability (exercises the predictor path)"

    def segment(self, x, predictor=None, generator=None):
        p = torch.sigmoid(predictor(x)).detach()
        return x[:, 0] * p[:, None, None, None]


@hookimpl
def register_datasets(register):
    register(TinyBlobs)


@hookimpl
def register_segmenters(register):
    register(IntensitySegmenter)
    register(PredictorWeighted)


@hookimpl
def register_predictors(register):
    register(MeanPredictor)
