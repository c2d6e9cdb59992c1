"""One binarisation protocol for every method: score map → mask, fitted on validation only.

A segmenter outputs a float score map; the harness turns every method's maps into masks with the
same rule, whose parameters are fitted on the *validation* split (maps + truth masks) and then
frozen: :func:`fit_binarizer` sees validation data only, and :meth:`Binarizer.apply` is a pure
function of one map and the frozen parameters, so nothing about the test split can influence
any choice. The fitted rule is stored in the results (:meth:`Binarizer.to_dict`).

Rules (:data:`RULES`)
    ``val-dice-threshold`` (default)
        ``mask = map >= threshold`` with the threshold that maximises the mean Dice over the
        validation cases. Candidates: ``n_values`` evenly spaced values between the pooled
        validation maps' minimum and maximum, plus ``n_quantiles`` quantiles of the pooled maps
        at levels ``1 - q`` with ``q`` log-spaced in [1e-4, 0.5] (nodules fill well under 1 % of
        a patch, so the upper tail needs the resolution). Ties go to the lowest threshold.
    ``otsu``
        Otsu's threshold (maximal between-class variance of a ``bins``-bin histogram), computed
        per map at apply time (``scope="map"``, default: no parameter is fitted, so nothing can
        leak) or once on the pooled validation maps (``scope="validation"``).
    ``top-k``
        Keep the ``percent`` % highest-scoring voxels of each map (ties at the cut included).
        ``percent`` unset: chosen from a log-spaced grid (0.01–25 %) to maximise validation Dice.

Options shared by all rules
    ``normalize`` — ``"minmax"`` (default) rescales each map to [0, 1] before thresholding
    (a constant map becomes all zeros); ``"none"`` uses raw scores. Default minmax because the
    raw scale of saliency maps varies arbitrarily from case to case (gradient magnitudes follow
    the logit), and one global threshold on raw values would then score scale calibration
    rather than localisation; methods whose raw scale is meaningful can select ``none``.
    ``components`` — ``"all"`` (default) keeps every voxel above the cut; ``"peak"`` keeps only
    the connected component holding the highest score; ``"mass"`` the component with the
    largest summed score. Default ``all`` so that a map is scored as the method produced it;
    component selection is a post-processing choice a benchmark can opt into (each patch holds
    one nodule). ``connectivity`` — 6, 18 or 26 (default: 26, diagonal contact joins).

Example::

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> masks = [np.zeros((8, 8, 8), bool) for _ in range(3)]
    >>> for m in masks: m[2:5, 2:5, 2:5] = True
    >>> maps = [m * 1.0 + 0.3 * rng.random(m.shape) for m in masks]
    >>> b = fit_binarizer("val-dice-threshold", {}, maps, masks)
    >>> b.validation_mean_dice
    1.0
    >>> int(b.apply(maps[0]).sum())
    27
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
from scipy import ndimage

from wsbench.errors import DataError, OptionError
from wsbench.options import option, options_to_dict, parse_options

__all__ = ["RULES", "DEFAULT_RULE", "Binarizer", "fit_binarizer", "otsu_threshold"]

DEFAULT_RULE = "val-dice-threshold"


# --------------------------------------------------------------------------- rule options

@dataclass
class _CommonOptions:
    normalize: str = option("minmax", "per-map rescaling before thresholding", choices=("minmax", "none"))
    components: str = option("all", "connected components kept: all, the one with the peak score, or the "
                             "one with the largest summed score", choices=("all", "peak", "mass"))
    connectivity: int = option(26, "voxel connectivity of components (6 faces, 18 +edges, 26 +corners)",
                               choices=(6, 18, 26))


@dataclass
class _ThresholdOptions(_CommonOptions):
    n_values: int = option(64, "evenly spaced candidate thresholds between the pooled maps' min and max")
    n_quantiles: int = option(64, "candidate thresholds at upper-tail quantiles of the pooled maps")

    def validate(self) -> None:
        if self.n_values < 0 or self.n_quantiles < 0 or self.n_values + self.n_quantiles < 1:
            raise ValueError("n_values and n_quantiles must be >= 0 and not both 0")


@dataclass
class _OtsuOptions(_CommonOptions):
    scope: str = option("map", "'map': Otsu per map at apply time; 'validation': one threshold from "
                        "the pooled validation maps", choices=("map", "validation"))
    bins: int = option(256, "histogram bins")

    def validate(self) -> None:
        if self.bins < 2:
            raise ValueError("bins must be >= 2")


@dataclass
class _TopKOptions(_CommonOptions):
    percent: float | None = option(None, "percent of voxels kept per map; unset: fitted on validation")

    def validate(self) -> None:
        if self.percent is not None and not (0 < self.percent <= 100):
            raise ValueError("percent must be in (0, 100]")


class _Rule:
    """Option schema of one rule, in the shape :func:`wsbench.options.parse_options` expects."""

    role: ClassVar[str] = "binarization rule"
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = _CommonOptions


class _ThresholdRule(_Rule):
    name = "val-dice-threshold"
    description = "threshold maximising mean Dice on the validation split (default)"
    Options = _ThresholdOptions


class _OtsuRule(_Rule):
    name = "otsu"
    description = "Otsu's threshold, per map or from the pooled validation maps"
    Options = _OtsuOptions


class _TopKRule(_Rule):
    name = "top-k"
    description = "keep the top k percent of voxels per map (k fitted on validation unless given)"
    Options = _TopKOptions


_RULE_CLASSES = {c.name: c for c in (_ThresholdRule, _OtsuRule, _TopKRule)}

#: Rule name → one-line description (for help texts).
RULES: dict[str, str] = {n: c.description for n, c in _RULE_CLASSES.items()}

#: Candidate percentages for a fitted ``top-k``.
TOPK_GRID = tuple(float(v) for v in np.geomspace(0.01, 25.0, 48))


def _parse(rule: str, options: dict[str, Any] | None):
    if rule not in _RULE_CLASSES:
        raise OptionError(f"unknown binarization rule '{rule}'; choose one of "
                          f"{', '.join(f'{k} ({v})' for k, v in RULES.items())}")
    return parse_options(_RULE_CLASSES[rule], options or {})


# --------------------------------------------------------------------------- primitives

def _as_map(a: Any, where: str) -> np.ndarray:
    try:
        import torch

        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 3:
        raise DataError(f"{where}: a score map must be 3-D (z, y, x), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"{where}: score map has NaN/inf values; segmenters must return finite maps")
    return a


def _normalize(x: np.ndarray, how: str) -> np.ndarray:
    if how == "none":
        return x
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:  # constant map: no evidence anywhere
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values``: the histogram bin edge maximising between-class variance.

    Returns a value ``t`` such that ``values >= t`` is the upper class. Where several edges tie
    (empty bins between two modes) the middle one is returned. A constant input returns its
    value (everything foreground).

    >>> otsu_threshold(np.r_[np.zeros(50), np.ones(50)], bins=4)
    0.5
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)[:-1].astype(np.float64)          # class below edge k+1
    w1 = v.size - w0
    s0 = np.cumsum(hist * centres)[:-1]
    m0 = s0 / np.maximum(w0, 1)
    m1 = (float((hist * centres).sum()) - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    # empty bins make plateaus of equal variance: take the middle of the best plateau
    best = np.flatnonzero(between >= between.max() * (1 - 1e-12))
    k = int(best[len(best) // 2])
    return float(edges[k + 1])


def _structure(connectivity: int) -> np.ndarray:
    return ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])


def _select_components(mask: np.ndarray, score: np.ndarray, how: str, connectivity: int) -> np.ndarray:
    if how == "all" or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=_structure(connectivity))
    if n == 1:
        return mask
    if how == "peak":  # the component holding the highest in-mask score (first in C order on ties)
        keep = labels.flat[int(np.argmax(np.where(mask, score, -np.inf)))]
    else:  # mass: largest summed score; ties go to the lowest label (first in C order)
        keep = 1 + int(np.argmax(np.bincount(labels.ravel(), weights=score.ravel(), minlength=n + 1)[1:]))
    return labels == keep


def _topk_cut(x: np.ndarray, percent: float) -> float:
    k = max(1, int(round(percent / 100.0 * x.size)))
    return float(np.partition(x.ravel(), x.size - k)[x.size - k])


def _dice(p: np.ndarray, t: np.ndarray) -> float:
    n = int(p.sum()) + int(t.sum())
    return 1.0 if n == 0 else 2.0 * int(np.count_nonzero(p & t)) / n


# --------------------------------------------------------------------------- the binariser

@dataclass
class Binarizer:
    """A fitted binarisation rule. ``apply`` is pure: it never changes the fitted state.

    ``params`` holds what was fitted (``{"threshold": t}``, ``{"percent": k}``, or ``{}`` for
    per-map Otsu); ``options`` the fully resolved rule options.
    """

    rule: str
    options: dict[str, Any]
    params: dict[str, Any]
    validation_mean_dice: float | None = None
    n_cases: int = 0

    def __post_init__(self) -> None:
        self._opts = _parse(self.rule, self.options)
        self.options = options_to_dict(self._opts)

    def apply(self, score_map: Any) -> np.ndarray:
        """Binarise one ``(D, H, W)`` score map (numpy or torch) → bool ``(D, H, W)``."""
        x = _normalize(_as_map(score_map, "score map"), self._opts.normalize)
        return self._apply_normalized(x)

    def _apply_normalized(self, x: np.ndarray) -> np.ndarray:
        o = self._opts
        if self.rule == "val-dice-threshold" or (self.rule == "otsu" and o.scope == "validation"):
            mask = x >= self.params["threshold"]
        elif self.rule == "otsu":
            mask = x >= otsu_threshold(x, o.bins)
        else:  # top-k
            mask = x >= _topk_cut(x, self.params["percent"])
        return _select_components(mask, x, o.components, o.connectivity)

    def to_dict(self) -> dict[str, Any]:
        """``{"rule", "options", "params", "validation_mean_dice", "n_cases"}`` (JSON-able)."""
        return {"rule": self.rule, "options": dict(self.options), "params": dict(self.params),
                "validation_mean_dice": self.validation_mean_dice, "n_cases": int(self.n_cases)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Binarizer":
        """Rebuild a fitted binariser from :meth:`to_dict` output (e.g. a results file)."""
        try:
            return cls(rule=d["rule"], options=dict(d.get("options") or {}), params=dict(d.get("params") or {}),
                       validation_mean_dice=d.get("validation_mean_dice"), n_cases=int(d.get("n_cases", 0)))
        except KeyError as e:
            raise DataError(f"binarization record lacks {e}; expected keys rule, options, params") from None


def _dice_curve(xs: Sequence[np.ndarray], ts: Sequence[np.ndarray], cands: np.ndarray) -> np.ndarray:
    """Mean Dice of ``x >= c`` for every candidate ``c`` (no component selection), vectorised."""
    total = np.zeros(cands.size)
    for x, t in zip(xs, ts):
        allv = np.sort(x.ravel())
        inv = np.sort(x[t])
        n_pred = allv.size - np.searchsorted(allv, cands, side="left")
        n_hit = inv.size - np.searchsorted(inv, cands, side="left")
        denom = n_pred + inv.size
        total += np.where(denom == 0, 1.0, 2.0 * n_hit / np.maximum(denom, 1))
    return total / len(xs)


def _threshold_candidates(xs: Sequence[np.ndarray], o: _ThresholdOptions) -> np.ndarray:
    pooled = np.concatenate([x.ravel() for x in xs])
    lo, hi = float(pooled.min()), float(pooled.max())
    parts = [np.linspace(lo, hi, o.n_values)] if o.n_values else []
    if o.n_quantiles:
        parts.append(np.quantile(pooled, 1.0 - np.geomspace(1e-4, 0.5, o.n_quantiles)))
    return np.unique(np.concatenate(parts))


def fit_binarizer(rule: str, options: dict[str, Any] | None, maps: Sequence[Any],
                  masks: Sequence[Any]) -> Binarizer:
    """Fit a binarisation rule on validation score maps and their truth masks.

    ``maps``: float ``(D, H, W)`` arrays (numpy or torch), one per validation case; ``masks``:
    bool arrays of the same shapes. Options may be strings (as from ``-o binarization.k=v``).
    Unknown rules or options raise :class:`~wsbench.errors.OptionError`; mismatched or non-finite
    inputs :class:`~wsbench.errors.DataError`. Returns the frozen :class:`Binarizer`, whose
    ``validation_mean_dice`` is the mean Dice of the fitted rule on these cases.
    """
    opts = _parse(rule, options)
    if len(maps) != len(masks):
        raise DataError(f"fit_binarizer: {len(maps)} validation maps but {len(masks)} masks")
    if not maps:
        raise DataError("fit_binarizer: no validation cases to fit the binarization rule on")
    xs, ts = [], []
    for i, (m, t) in enumerate(zip(maps, masks)):
        x = _normalize(_as_map(m, f"validation case {i}"), opts.normalize)
        t = np.asarray(t.detach().cpu().numpy() if hasattr(t, "detach") else t).astype(bool)
        if t.shape != x.shape:
            raise DataError(f"validation case {i}: map shape {x.shape} differs from mask shape {t.shape}")
        xs.append(x)
        ts.append(t)

    def mean_dice(b: Binarizer) -> float:
        return float(np.mean([_dice(b._apply_normalized(x), t) for x, t in zip(xs, ts)]))

    def search(param: str, cands: Sequence[float]) -> Binarizer:
        best, best_d = None, -1.0
        for c in cands:  # ascending, strict '>' keeps the lowest of tied candidates
            b = Binarizer(rule, options_to_dict(opts), {param: float(c)})
            d = mean_dice(b)
            if d > best_d + 1e-12:
                best, best_d = b, d
        return best

    o = opts
    if rule == "val-dice-threshold":
        cands = _threshold_candidates(xs, o)
        if o.components == "all":  # exact and fast: Dice as a function of the cut
            curve = _dice_curve(xs, ts, cands)
            best = Binarizer(rule, options_to_dict(o), {"threshold": float(cands[int(np.argmax(curve))])})
        else:
            best = search("threshold", cands)
    elif rule == "otsu":
        params = {}
        if o.scope == "validation":
            params = {"threshold": otsu_threshold(np.concatenate([x.ravel() for x in xs]), o.bins)}
        best = Binarizer(rule, options_to_dict(o), params)
    else:  # top-k
        if o.percent is not None:
            best = Binarizer(rule, options_to_dict(o), {"percent": float(o.percent)})
        else:
            best = search("percent", TOPK_GRID)
    best.validation_mean_dice = mean_dice(best)
    best.n_cases = len(xs)
    if not math.isfinite(best.validation_mean_dice):  # pragma: no cover - Dice is always finite
        raise DataError("validation Dice is not finite")
    return best
