"""Plugin hook specifications (pluggy, project name and entry-point group ``wsbench``).

Hooks *register classes*; the work happens in the classes. A plugin module implements any of
these with ``@wsbench.hookimpl``::

    from wsbench import hookimpl
    from wsbench.interfaces import Segmenter

    class MySegmenter(Segmenter):
        name = "my-method"
        ...

    @hookimpl
    def register_segmenters(register):
        register(MySegmenter)

and exposes the module through an entry point in its ``pyproject.toml``::

    [project.entry-points.wsbench]
    my_method = "my_package.plugin"

Built-ins register through exactly these hooks (``wsbench.plugins.DEFAULT_PLUGINS``).
"""

from __future__ import annotations

from typing import Callable

import click
import pluggy

hookspec = pluggy.HookspecMarker("wsbench")
hookimpl = pluggy.HookimplMarker("wsbench")

Register = Callable[[type], None]


@hookspec
def register_predictors(register: Register) -> None:
    """Register :class:`wsbench.interfaces.Predictor` subclasses.

    Call ``register(cls)`` once per class; ``cls.name`` must be unique among predictors.
    A predictor maps a batch of patches ``(B, 1, D, H, W)`` to nodule-presence logits ``(B,)``.
    """


@hookspec
def register_generators(register: Register) -> None:
    """Register :class:`wsbench.interfaces.Generator` subclasses.

    Call ``register(cls)`` once per class. A generator is a rectified-flow model of patches
    (``encode``/``decode``/``velocity``; convention in :mod:`wsbench.interfaces.generator`).
    """


@hookspec
def register_segmenters(register: Register) -> None:
    """Register :class:`wsbench.interfaces.Segmenter` subclasses.

    Call ``register(cls)`` once per class. A segmenter turns patches ``(B, 1, D, H, W)`` into
    float score maps ``(B, D, H, W)``; the harness binarises every method's maps the same way.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register :class:`wsbench.interfaces.Dataset` subclasses.

    Call ``register(cls)`` once per class. A dataset yields evaluation cases (patch + truth
    mask) and an image-level-labelled training view, split by scan.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``wsbench`` command-line group.

    ``cli`` is the top-level :class:`click.Group`; use ``@cli.command()`` or
    ``cli.add_command(...)``. Give every command a ``--help`` text with a worked example.
    """
