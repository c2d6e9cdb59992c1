"""``hu-threshold``: a non-learned reference score — "how soft-tissue-dense is this voxel?".

The score is a soft HU window: ``s(v) = σ((HU(v) - low) / softness) · σ((high - HU(v)) / softness)``
(σ the logistic function), then Gaussian-smoothed with ``sigma`` voxels. Solid nodules
(~0–100 HU) and ground glass (−700…−300 HU) score high, aerated lung (≈ −850 HU) low — but so do
vessels, airway walls and the chest wall: this is the trivial bar every learned method must
clear, not a competitor. No predictor or generator is used.

Shapes: ``x`` ``(B, 1, D, H, W)`` in normalised intensity → ``(B, D, H, W)`` in ``[0, 1]``.

Example::

    >>> HUThresholdSegmenter().segment(x).shape     # x: (2, 1, 32, 32, 32)
    torch.Size([2, 32, 32, 32])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wsbench.data.intensity import norm_to_hu
from wsbench.interfaces import Segmenter
from wsbench.options import option
from wsbench.segmenters.maps import finite, gaussian_smooth


class HUThresholdSegmenter(Segmenter):
    """Smoothed soft HU window; no learning."""

    name = "hu-threshold"
    description = "non-learned reference: smoothed soft HU window for soft-tissue density (no predictor)"
    needs_predictor = False
    needs_generator = False

    @dataclass
    class Options:
        low_hu: float = option(-600.0, "lower edge of the window, HU (ground glass starts near -700)")
        high_hu: float = option(200.0, "upper edge of the window, HU (above: calcification, bone)")
        softness_hu: float = option(50.0, "width of the logistic edges, HU")
        sigma: float = option(1.0, "Gaussian smoothing of the score, voxels (0 = none)")

        def validate(self):
            if self.high_hu <= self.low_hu:
                raise ValueError("high_hu must be greater than low_hu")
            if self.softness_hu <= 0:
                raise ValueError("softness_hu must be > 0")
            if self.sigma < 0:
                raise ValueError("sigma must be >= 0")

    def segment(self, x, predictor=None, generator=None):
        o = self.options
        hu = norm_to_hu(x[:, 0].float())
        s = torch.sigmoid((hu - o.low_hu) / o.softness_hu) * torch.sigmoid((o.high_hu - hu) / o.softness_hu)
        return finite(gaussian_smooth(s, o.sigma))
