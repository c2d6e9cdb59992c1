"""Benchmark definitions: dataset + split + patch geometry + mask source + metrics + binarisation.

A benchmark is a small TOML file (as lm-evaluation-harness defines tasks)::

    name = "luna16-synth"
    version = "1"
    [dataset]       name = "luna16-synth", options = {...}   # split and mask source live here
    [geometry]      size = 32, spacing_mm = 1.0, max_offset_vox = 6
    [binarization]  rule = "val-dice-threshold", options = {...}
    [metrics]       surface_dice_tolerance_mm = 1.0
    [expected]      fingerprint = "...", n_test_cases = N   # optional, checked by `validate`

Search path for ``load_benchmark(name)``: the directories in ``WSBENCH_BENCHMARK_PATH``
(``os.pathsep``-separated), then the project's ``benchmarks/`` folder. A path to a ``.toml``
file is accepted as a name.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsbench.data.types import Geometry
from wsbench.errors import WsbenchError

DEFAULT_BENCHMARK = "luna16-synth"
_REQUIRED = ("name", "version", "dataset", "geometry")


def search_path() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("WSBENCH_BENCHMARK_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parent.parent / "benchmarks")
    return dirs


def available() -> dict[str, Path]:
    """Benchmark name → definition file, first match on the search path wins."""
    found: dict[str, Path] = {}
    for d in search_path():
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found.setdefault(f.stem, f)
    return found


@dataclass
class Benchmark:
    name: str
    version: str
    description: str
    dataset: str
    dataset_options: dict[str, Any]
    geometry: Geometry
    binarization_rule: str
    binarization_options: dict[str, Any]
    metrics: dict[str, Any]
    expected: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The benchmark as recorded in results."""
        return {
            "name": self.name,
            "version": self.version,
            "geometry": self.geometry.to_dict(),
            "metrics": dict(self.metrics),
            "binarization": {"rule": self.binarization_rule, "options": dict(self.binarization_options)},
        }

    def dataset_plugin_options(self, data_dir: str | Path | None = None,
                               overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        opts = dict(self.dataset_options)
        if data_dir is not None:
            opts["data_dir"] = str(data_dir)
        opts.update(overrides or {})
        return opts

    def build_dataset(self, data_dir: str | Path | None = None, overrides: dict[str, Any] | None = None,
                      seed: int = 0):
        """Construct the benchmark's dataset plugin (options validated)."""
        from wsbench import plugins

        info = plugins.get("dataset", self.dataset)
        return info.cls(self.dataset_plugin_options(data_dir, overrides), seed=seed)


def load_benchmark(name: str | Path | None = None) -> Benchmark:
    """Load a benchmark definition by name (or path to a ``.toml``)."""
    name = name or DEFAULT_BENCHMARK
    p = Path(name)
    if p.suffix == ".toml":
        if not p.is_file():
            raise WsbenchError(f"benchmark file {p} does not exist")
        path = p
    else:
        avail = available()
        if str(name) not in avail:
            close = difflib.get_close_matches(str(name), list(avail), n=2)
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise WsbenchError(f"no benchmark named '{name}'.{hint} Available: {', '.join(sorted(avail)) or 'none'} "
                               f"(search path: {', '.join(map(str, search_path()))})")
        path = avail[str(name)]
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise WsbenchError(f"cannot read benchmark definition {path}: {e}") from None
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise WsbenchError(f"benchmark definition {path} lacks {', '.join(missing)}; see benchmarks/luna16-synth.toml")
    ds = data["dataset"]
    geo = data["geometry"]
    try:
        geometry = Geometry(size=int(geo.get("size", 32)), spacing_mm=float(geo.get("spacing_mm", 1.0)),
                            max_offset_vox=int(geo.get("max_offset_vox", 6)))
    except (TypeError, ValueError) as e:
        raise WsbenchError(f"bad [geometry] in {path}: {e}") from None
    binar = data.get("binarization", {})
    return Benchmark(
        name=str(data["name"]), version=str(data["version"]), description=str(data.get("description", "")),
        dataset=str(ds.get("name")), dataset_options=dict(ds.get("options", {})), geometry=geometry,
        binarization_rule=str(binar.get("rule", "val-dice-threshold")),
        binarization_options=dict(binar.get("options", {})), metrics=dict(data.get("metrics", {})),
        expected=dict(data.get("expected", {})), path=path)
