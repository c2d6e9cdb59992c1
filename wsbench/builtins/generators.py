"""Built-in generators: ``rflow`` (trained here) and ``maisi`` (NVIDIA MAISI-v2 weights), and the
``wsbench check-generator`` command (the generator quality check on a benchmark's validation split)."""

from __future__ import annotations

import json

import click

from wsbench.generators.maisi import MaisiGenerator
from wsbench.generators.rflow import RFlowGenerator
from wsbench.hookspecs import hookimpl


@hookimpl
def register_generators(register) -> None:
    register(RFlowGenerator)
    register(MaisiGenerator)


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command("check-generator")
    @click.option("--generator", "-g", "name", default="rflow", show_default=True, help="Generator name.")
    @click.option("--benchmark", "-b", default="luna16-synth", show_default=True)
    @click.option("--dataset", "-d", default=None, help="Dataset plugin (default: the benchmark's).")
    @click.option("--data-dir", default=None, type=click.Path(file_okay=False))
    @click.option("--device", default="auto", show_default=True)
    @click.option("--seed", default=0, show_default=True, type=int)
    @click.option("-o", "--option", "option_pairs", multiple=True, metavar="ROLE.KEY=VALUE",
                  help="Plugin option, e.g. -o generator.steps=2000 (repeatable).")
    @click.option("--patches", default=16, show_default=True, type=int, help="Validation patches to check.")
    @click.option("--t0", default=0.5, show_default=True, type=float, help="Re-noising / inversion time.")
    @click.option("--steps", default=10, show_default=True, type=int, help="Euler steps for the reconstructions.")
    @click.option("--samples", default=8, show_default=True, type=int,
                  help="Patches sampled from pure noise for the histogram statistic (0 = skip).")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    @click.option("--quiet", "-q", is_flag=True)
    def check_generator_cmd(name, benchmark, dataset, data_dir, device, seed, option_pairs, patches, t0, steps,
                            samples, as_json, quiet):
        """Quality check of a generator on the benchmark's validation patches.

        Trains the generator (or loads its cached checkpoint, exactly as `wsbench run` does), then
        reconstructs held-out patches from t0 (deterministic inversion, and stochastic re-noising)
        and compares samples' HU histogram with the data's. Exits with status 1 when the check
        fails (see wsbench.generators.quality for the thresholds).

        \b
        Examples:
          wsbench check-generator                               # default rflow, luna16-synth
          wsbench check-generator -o generator.steps=2000 --device cuda --t0 0.3
          wsbench check-generator -g maisi -o generator.autoencoder_path=ae.pt -o generator.diffusion_path=unet.pt
        """
        import numpy as np
        from rich.console import Console

        from wsbench.cli import parse_kv_options
        from wsbench.errors import WsbenchError
        from wsbench.generators.quality import check_generator
        from wsbench.progress import Progress
        from wsbench.runner import RunConfig, build_session, prepare, train_or_load
        from wsbench.seeding import derive_seed

        console = Console()
        cfg = RunConfig(segmenter="", generator=name, benchmark=benchmark, dataset=dataset, data_dir=data_dir,
                        device=device, seed=seed, options=parse_kv_options(option_pairs), progress=not quiet)
        s = build_session(cfg, need_segmenter=False)
        with Progress(enabled=not quiet) as progress:
            prepare(s, progress)
            train_or_load(s, "generator", progress)
            val = s.dataset.training_patches("validation", s.benchmark.geometry)
            if len(val) == 0:
                raise WsbenchError(f"benchmark {benchmark} has no validation patches to check the generator on")
            rng = np.random.default_rng(derive_seed(seed, "check-generator"))
            pick = np.sort(rng.choice(len(val), size=min(patches, len(val)), replace=False))
            report = check_generator(s.generator, val.images[pick], t0=t0, steps=steps, n_samples=samples,
                                     seed=seed, progress=progress)
        if as_json:
            click.echo(json.dumps(report.to_dict(), indent=1))
        else:
            w1 = "skipped" if report.sample_w1_hu is None else f"{report.sample_w1_hu:.1f} HU"
            console.print(f"generator '{name}' on {report.n_patches} validation patches of {benchmark} (t0={t0}, "
                          f"{steps} Euler steps):")
            console.print(f"  re-noised reconstruction error: {report.renoise_rel_mse:.3f} x data variance "
                          f"(threshold {report.thresholds['max_renoise_rel_mse']})")
            console.print(f"  deterministic round-trip error: {report.roundtrip_rel_mse:.5f} x data variance "
                          f"(threshold {report.thresholds['max_roundtrip_rel_mse']})")
            console.print(f"  inverted-noise std: {report.inversion_noise_std:.3f} (about 1 for a good model)")
            console.print(f"  samples vs data, HU histogram Wasserstein-1: {w1} "
                          f"(threshold {report.thresholds['max_sample_w1_hu']})")
            console.print("[bold green]PASSED[/]" if report.passed else
                          "[bold red]FAILED[/]: " + "; ".join(report.failures))
        if not report.passed:
            raise SystemExit(1)
