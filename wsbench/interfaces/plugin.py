"""Base class of every plugin, and the mixin for plugins that learn from data."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch

from wsbench.options import NoOptions, options_to_dict, parse_options


class Plugin:
    """A named, configurable component.

    Class attributes a plugin sets:
      * ``name`` — the unique name users type (``--segmenter gradcam``), lower-case, dashes ok.
      * ``description`` — one line for ``wsbench ls``.
      * ``Options`` — a dataclass of typed options (see :mod:`wsbench.options`); validated at
        construction, so a bad option fails before any work is done.

    ``device`` is a :class:`torch.device`; ``seed`` the run's seed.
    """

    role: ClassVar[str] = "plugin"
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Mapping[str, Any] | None = None, *, device: str | torch.device = "cpu",
                 seed: int = 0) -> None:
        self.options = parse_options(type(self), options)
        self.device = torch.device(device)
        self.seed = int(seed)

    def options_dict(self) -> dict[str, Any]:
        return options_to_dict(self.options)

    def changed_options(self) -> dict[str, Any]:
        """The options whose value differs from the plugin's default (recorded in results, so a
        leaderboard row can say e.g. ``medsam (input_size=64)`` without knowing the defaults)."""
        defaults = options_to_dict(parse_options(type(self), None))
        return {k: v for k, v in self.options_dict().items() if defaults.get(k) != v}

    def provenance(self) -> dict[str, Any]:
        """Where this plugin's weights came from, e.g. ``{"init": "pretrained", "weights":
        "/path/file.pth", "sha256": "…"}`` or ``{"init": "scratch"}``. Recorded in results."""
        return {}


class Trainable(abc.ABC):
    """Mixin for plugins that are fitted on the benchmark's training view.

    The runner caches checkpoints keyed by (plugin name, the options in ``training_options``
    — all options when ``None`` —, dataset fingerprint, split, patch geometry, seed): when a
    checkpoint exists it calls :meth:`load`, otherwise :meth:`fit` then :meth:`save`.
    """

    #: Option names that change the fitted weights (others, e.g. inference batch size, do not).
    training_options: ClassVar[tuple[str, ...] | None] = None

    def needs_fit(self) -> bool:
        """False when the plugin is already usable (e.g. it loaded complete pretrained weights
        from a user file and has nothing to learn). Default: True."""
        return True

    @abc.abstractmethod
    def fit(self, train, validation, progress=None) -> dict[str, Any]:
        """Fit on ``train`` (a :class:`wsbench.data.PatchSet`, image-level labels only), select
        on ``validation`` (a PatchSet or None). ``progress`` is a :class:`wsbench.progress.Progress`
        (or None). Returns a JSON-able summary (e.g. ``{"val_auc": 0.93, "steps": 800}``)."""

    @abc.abstractmethod
    def save(self, path: Path) -> None:
        """Write everything :meth:`load` needs to ``path`` (one file)."""

    @abc.abstractmethod
    def load(self, path: Path) -> None:
        """Restore from a file written by :meth:`save` (``torch.load(weights_only=True)``)."""
