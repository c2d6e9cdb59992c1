"""The benchmark's intensity normalisation (one definition for every plugin).

CT values in Hounsfield units are clipped to the window ``[HU_MIN, HU_MAX] = [-1000, 400]``
(air to dense soft tissue / faint calcification; lung nodules, ground glass at about -700 to
-300 HU and solid tissue near 0..100 HU, all fall inside) and mapped linearly to ``[-1, 1]``.
"""

from __future__ import annotations

import numpy as np

HU_MIN = -1000.0
HU_MAX = 400.0


def hu_to_norm(hu):
    """Hounsfield units → normalised intensity in ``[-1, 1]`` (numpy or torch)."""
    if isinstance(hu, np.ndarray):
        hu = np.clip(hu.astype(np.float32), HU_MIN, HU_MAX)
    else:
        hu = hu.clamp(HU_MIN, HU_MAX)
    return (hu - HU_MIN) / (HU_MAX - HU_MIN) * 2.0 - 1.0


def norm_to_hu(x):
    """Inverse of :func:`hu_to_norm` on ``[-1, 1]`` (numpy or torch)."""
    return (x + 1.0) / 2.0 * (HU_MAX - HU_MIN) + HU_MIN
