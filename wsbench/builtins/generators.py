"""Built-in generators: ``rflow`` (trained here) and ``maisi`` (NVIDIA MAISI-v2 weights)."""

from __future__ import annotations

from wsbench.generators.maisi import MaisiGenerator
from wsbench.generators.rflow import RFlowGenerator
from wsbench.hookspecs import hookimpl


@hookimpl
def register_generators(register) -> None:
    register(RFlowGenerator)
    register(MaisiGenerator)
