"""Dataset: evaluation cases and an image-level training view, split by scan."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Iterator

from wsbench.data.types import Case, Geometry, PatchSet
from wsbench.interfaces.plugin import Plugin

SPLITS = ("train", "validation", "test")


class Dataset(Plugin, abc.ABC):
    """A source of cases.

    Options conventionally include ``data_dir`` (set by ``wsbench run --data-dir``).
    :meth:`prepare` does the expensive work once (reading, resampling, caching patches on disk
    keyed by fingerprint + geometry) and reports progress; the other methods read prepared data.
    Splits are by scan: no scan is in two splits.
    """

    role: ClassVar[str] = "dataset"

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A fast, stable hash of the dataset's content (file list, sizes, CSVs, mask source)."""

    @abc.abstractmethod
    def prepare(self, geometry: Geometry, progress=None) -> None:
        """Read and cache everything :meth:`cases` and :meth:`training_patches` need."""

    @abc.abstractmethod
    def split_info(self) -> dict[str, Any]:
        """The split as recorded in results: ``{"rule": "...", "scans": {"train": n, ...},
        "cases": {"validation": n, "test": n}}`` (after :meth:`prepare`)."""

    @abc.abstractmethod
    def cases(self, split: str, geometry: Geometry) -> Iterator[Case]:
        """Evaluation cases (one patch per annotated nodule) of ``split``, in a stable order."""

    @abc.abstractmethod
    def training_patches(self, split: str, geometry: Geometry) -> PatchSet:
        """Image-level-labelled patches of ``split`` (``"train"`` or ``"validation"``)."""

    def skipped(self) -> list[str]:
        """One line per input item that was skipped (bad file, bad row), for the run report."""
        return []
