"""Built-in dataset ``luna16-synth`` and the ``wsbench data`` commands (synth, prepare, show)."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console

from wsbench.errors import WsbenchError
from wsbench.hookspecs import hookimpl

console = Console(soft_wrap=True)


@hookimpl
def register_datasets(register):
    from wsbench.data.synth.dataset import SynthDataset

    register(SynthDataset)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _parse_dataset_options(pairs) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if key.startswith("dataset."):
            key = key[len("dataset."):]
        if not sep or not key:
            raise WsbenchError(f"bad -o '{pair}': expected KEY=VALUE (a dataset option), e.g. -o scans=20")
        out[key] = value
    return out


@click.group("data")
def data_group() -> None:
    """Build, prepare and look at datasets (the synthetic LUNA16 set, a LUNA16 tree).

    \b
    Examples:
      wsbench data synth --out synth-luna16 --scans 60 --seed 0
      wsbench data prepare --benchmark luna16 --data-dir /data/LUNA16
      wsbench data show --out nodules.png
    """


@data_group.command("synth")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Folder to write the tree into (must be new or empty).")
@click.option("--scans", default=None, type=int, help="Number of CT scans [default: the built-in set's].")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the generator.")
@click.option("--workers", default=None, type=int, help="Processes [default: up to 4 CPU cores].")
def synth_cmd(out: str, scans: int | None, seed: int, workers: int | None) -> None:
    """Write a synthetic LUNA16-format tree (the built-in default dataset) to a folder.

    The tree has LUNA16's layout: subset0..subset9/<seriesuid>.mhd/.raw (int16 HU),
    annotations.csv, candidates_V2.csv, seg-lungs-LUNA16/, plus masks/ (one label per
    nodule, in annotations.csv row order) and synth.json (generator version and parameters).
    Nodules are real LIDC-IDRI outlines. Read it back like real LUNA16:

    \b
    Example:
      wsbench data synth --out ~/synth --scans 60 --seed 0
      wsbench run --dataset luna16 --data-dir ~/synth --segmenter gradcam --predictor cnn3d
    """
    from wsbench.data.synth import DEFAULT_SCANS, build
    from wsbench.progress import Progress

    n = DEFAULT_SCANS if scans is None else scans
    t0 = time.perf_counter()
    with Progress() as prog:
        root = build(out, scans=n, seed=seed, progress=prog, workers=workers)
    secs = time.perf_counter() - t0
    _summary(root, secs)


def _summary(root: Path, seconds: float | None = None) -> None:
    import json

    man = json.loads((Path(root) / "synth.json").read_text())
    per = man["nodules_per_subset"]
    split = {"train (0-6)": sum(per[str(i)] for i in range(7)), "validation (7)": per["7"],
             "test (8-9)": per["8"] + per["9"]}
    types: dict[str, int] = {}
    for n in man["nodules"]:
        types[n["nodule_type"]] = types.get(n["nodule_type"], 0) + 1
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    console.print(f"wrote {man['scans']} scans, {len(man['nodules'])} nodules to {root}{took} "
                  f"({_du(root) / 1e6:.0f} MB)")
    console.print("nodules per split: " + ", ".join(f"{k} {v}" for k, v in split.items()))
    console.print("nodule types: " + ", ".join(f"{k} {v}" for k, v in sorted(types.items())))


def _dataset(benchmark: str | None, data_dir: str | None, options: dict):
    """The benchmark's dataset plugin, or — given only a folder — the LUNA16 reader on it."""
    from wsbench.benchmark import load_benchmark
    from wsbench import plugins

    if benchmark is None and data_dir is not None:
        root = Path(data_dir).expanduser()
        opts = {"data_dir": str(root), **options}  # masks: the reader's 'auto' (the tree's masks/ or LIDC)
        return plugins.get("dataset", "luna16").cls(opts), None
    bench = load_benchmark(benchmark)
    return bench.build_dataset(data_dir=data_dir, overrides=options), bench


@data_group.command("prepare")
@click.option("--benchmark", "-b", default=None, help="Benchmark name or .toml [default: luna16-synth].")
@click.option("--data-dir", default=None, type=click.Path(), help="Dataset folder (a LUNA16 tree).")
@click.option("-o", "options", multiple=True, metavar="KEY=VALUE",
              help="A dataset option (repeatable), e.g. -o scans=20.")
def prepare_cmd(benchmark: str | None, data_dir: str | None, options) -> None:
    """Read a benchmark's dataset once and cache its patches (what `wsbench run` does first).

    Builds the synthetic set if needed, resamples every case and training patch to the
    benchmark's patch geometry and stores them in the patch cache, so later runs start at
    once. Prints the split and any skipped items.

    \b
    Example:
      wsbench data prepare                         # the default benchmark (luna16-synth)
      wsbench data prepare -b luna16 --data-dir /data/LUNA16
      wsbench data prepare -o scans=20 -o seed=1   # a smaller synthetic set
    """
    from wsbench.progress import Progress

    ds, bench = _dataset(benchmark or None, data_dir, _parse_dataset_options(options))
    if bench is None:
        from wsbench.benchmark import load_benchmark

        bench = load_benchmark(None)
    t0 = time.perf_counter()
    with Progress() as prog:
        ds.prepare(bench.geometry, prog)
    info = ds.split_info()
    console.print(f"dataset {ds.name}: fingerprint {ds.fingerprint()}, prepared in {time.perf_counter() - t0:.1f} s")
    console.print(f"split: {info.get('rule')}; scans {info.get('scans')}; cases {info.get('cases')}")
    if "patches" in info:
        console.print(f"training view: {info['patches']}")
    skipped = ds.skipped()
    if skipped:
        console.print(f"[yellow]{len(skipped)} item(s) skipped[/]:")
        for line in skipped[:20]:
            console.print(f"  {line}", highlight=False)
        if len(skipped) > 20:
            console.print(f"  … and {len(skipped) - 20} more")


@data_group.command("show")
@click.option("--benchmark", "-b", default=None, help="Benchmark name or .toml [default: luna16-synth].")
@click.option("--data-dir", default=None, type=click.Path(), help="A LUNA16-format tree to show instead.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@click.option("--nodules", "n_nodules", default=6, show_default=True, type=int, help="Nodules to show.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "validation", "test", "all"]),
              help="Which split's scans to take nodules from.")
@click.option("-o", "options", multiple=True, metavar="KEY=VALUE", help="A dataset option (repeatable).")
def show_cmd(benchmark, data_dir, out, n_nodules, split, options) -> None:
    """Write a PNG of slices through nodules with their truth contour (red).

    The first panel is a whole axial slice of the first nodule's scan; the others are 64 mm
    crops through each nodule's centre in the benchmark's HU window [-1000, 400], titled
    with diameter, type and slice spacing. Nodules span the size range of the split.

    \b
    Example:
      wsbench data show --out synth.png                    # the default synthetic set
      wsbench data show --data-dir ~/synth --out a.png --nodules 9 --split all
    """
    from wsbench.data.preview import render_nodules

    if n_nodules < 1:
        raise WsbenchError(f"--nodules must be at least 1, got {n_nodules}")
    ds, _ = _dataset(benchmark or None, data_dir, _parse_dataset_options(options))
    path = render_nodules(ds, Path(out), n_nodules=n_nodules, split=split)
    console.print(f"wrote {path}")


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(data_group)
