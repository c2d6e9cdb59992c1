"""Progress reporting for long work (rich), with a silent variant for tests and libraries.

Plugins receive a :class:`Progress` (or ``None``) and use it as::

    with progress.task("training cnn3d", total=steps) as task:
        for step in range(steps):
            ...
            task.advance(1, loss=f"{loss:.3f}")
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


class TaskHandle:
    def __init__(self, progress: "Progress", task_id) -> None:
        self._p = progress
        self._id = task_id

    def advance(self, n: float = 1, **info) -> None:
        """Advance by ``n``; ``info`` (e.g. ``loss="0.31"``) is shown after the bar."""
        if self._p._rich is not None:
            text = "  ".join(f"{k}={v}" for k, v in info.items())
            if info:
                self._p._rich.update(self._id, advance=n, info=text)
            else:
                self._p._rich.update(self._id, advance=n)

    def total(self, total: float) -> None:
        if self._p._rich is not None:
            self._p._rich.update(self._id, total=total)


class Progress:
    """A progress display. ``Progress(enabled=False)`` (or :func:`null_progress`) shows nothing."""

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._rich = None
        self.enabled = enabled
        if enabled:
            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"), console=self.console, transient=False,
                disable=not enabled)

    def __enter__(self) -> "Progress":
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[TaskHandle]:
        task_id = None
        if self._rich is not None:
            task_id = self._rich.add_task(description, total=total, info="")
        try:
            yield TaskHandle(self, task_id)
        finally:
            if self._rich is not None and task_id is not None:
                self._rich.stop_task(task_id)

    def log(self, message: str) -> None:
        """A line above the bars (or on stderr when disabled)."""
        if self._rich is not None:
            self._rich.console.print(message)
        else:
            print(message, file=sys.stderr)


def null_progress() -> Progress:
    return Progress(enabled=False)


def ensure(progress: Progress | None) -> Progress:
    """``progress`` or a silent one, so plugin code can always call ``progress.task``."""
    return progress if progress is not None else null_progress()
