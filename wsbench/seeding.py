"""Deterministic seeding: one global seed per run, one derived seed per case or task."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(seed: int, *keys: object) -> int:
    """A stable 31-bit seed from a base seed and any keys (e.g. a case id)."""
    h = hashlib.sha256(("|".join([str(seed), *map(str, keys)])).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
