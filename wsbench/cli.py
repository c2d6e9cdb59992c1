"""The ``wsbench`` command line (click + rich).

Core commands live here (``run``, ``train``, ``plugins``, ``ls``); every other command group
(``data``, ``compare``, ``validate``, ``leaderboard``, ``report``, ``reproduce``) is added by a
plugin module — built-in or third-party — through the ``register_commands`` hook.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from wsbench import __version__, plugins
from wsbench.errors import WsbenchError

console = Console()
err_console = Console(stderr=True)


def parse_kv_options(pairs: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``("segmenter.t0=0.5", "predictor.epochs=3")`` → ``{"segmenter": {"t0": "0.5"}, ...}``."""
    from wsbench.runner import ROLES_WITH_OPTIONS

    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        if "=" not in pair or "." not in pair.split("=", 1)[0]:
            raise WsbenchError(f"bad -o '{pair}': expected ROLE.KEY=VALUE, e.g. -o segmenter.t0=0.5 "
                               f"(ROLE: {', '.join(ROLES_WITH_OPTIONS)})")
        key, value = pair.split("=", 1)
        role, name = key.split(".", 1)
        if role not in ROLES_WITH_OPTIONS:
            raise WsbenchError(f"bad -o '{pair}': unknown role '{role}'; use one of {', '.join(ROLES_WITH_OPTIONS)}")
        out.setdefault(role, {})[name] = value
    return out


class WsbenchGroup(click.Group):
    """Turns :class:`WsbenchError` into one red line and exit status 2 (no traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except WsbenchError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished cases are saved; rerun the same command to resume")
            sys.exit(130)


@click.group(cls=WsbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wsbench")
def cli() -> None:
    """wsbench — benchmark weakly-supervised 3D lung nodule segmentation.

    \b
    Quick start (built-in synthetic LUNA16-format data, trains what it needs):
      wsbench run --segmenter flow-guide --predictor radimgnet
    \b
    See what is installed:
      wsbench plugins
      wsbench ls segmenters
    """


# -- run ------------------------------------------------------------------------------------------
_RUN_EPILOG = """\b
Examples:
  wsbench run --segmenter flow-guide --predictor radimgnet
  wsbench run --segmenter gradcam --predictor cnn3d --limit 5 --out results/quick
  wsbench run --segmenter flow-guide --predictor cnn3d -o segmenter.t0=0.5 -o segmenter.scale=2
  wsbench run --benchmark luna16 --data-dir /data/LUNA16 --segmenter gradcam --predictor cnn3d
"""


def run_options(f):
    opts = [
        click.option("--segmenter", "-s", required=True, help="Segmenter name (see `wsbench ls segmenters`)."),
        click.option("--predictor", "-p", default=None,
                     help="Predictor name; default cnn3d when the segmenter needs one."),
        click.option("--generator", "-g", default=None,
                     help="Generator name; default rflow when the segmenter needs one."),
        click.option("--benchmark", "-b", default="luna16-synth", show_default=True,
                     help="Benchmark definition (benchmarks/NAME.toml) or a path to a .toml file."),
        click.option("--dataset", "-d", default=None, help="Override the benchmark's dataset plugin."),
        click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                     help="Dataset root (e.g. a LUNA16 tree)."),
        click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto."),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed for everything."),
        click.option("--limit", default=None, type=click.IntRange(min=1),
                     help="At most N validation and N test cases (quick runs)."),
        click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
                     help="Output folder [default: results/<benchmark>/<segmenter>--<predictor>--<generator>--seed<N>]."),
        click.option("-o", "--option", "option_pairs", multiple=True, metavar="ROLE.KEY=VALUE",
                     help="Plugin option, e.g. -o segmenter.t0=0.5 (roles: segmenter, predictor, generator, "
                          "dataset, binarization). Repeatable."),
        click.option("--retrain", is_flag=True, help="Ignore cached checkpoints and train again."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@cli.command(epilog=_RUN_EPILOG)
@run_options
def run(segmenter, predictor, generator, benchmark, dataset, data_dir, device, seed, limit, out_dir,
        option_pairs, retrain, quiet):
    """Run a segmenter on a benchmark and write results.

    Trains (and caches) the predictor/generator it needs, fits the binarisation rule on the
    validation split, evaluates the test split, and writes OUT/results.json. Rerunning the
    same command resumes an interrupted run. Exit status 1 when any case failed.
    """
    from wsbench.runner import RunConfig, command_line
    from wsbench import runner

    cfg = RunConfig(segmenter=segmenter, predictor=predictor, generator=generator, benchmark=benchmark,
                    dataset=dataset, data_dir=data_dir, seed=seed, device=device, limit=limit,
                    out_dir=out_dir, options=parse_kv_options(option_pairs), progress=not quiet,
                    retrain=retrain, command=command_line())
    results = runner.run(cfg)
    print_results(results)
    n_failed = len([f for f in results["failures"]])
    if n_failed:
        err_console.print(f"[bold red]{n_failed} case(s) failed[/] (see {results['_out_dir']}/errors.log); "
                          "they are scored as worst case in the aggregates")
        sys.exit(1)


def _fmt(v, pct=False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.2f}"


def print_results(results: dict[str, Any]) -> None:
    agg = results["aggregate"]
    pl = results["plugins"]
    title = " · ".join(x for x in [
        results["benchmark"]["name"], pl["segmenter"]["name"],
        pl["predictor"]["name"] if pl.get("predictor") else None,
        pl["generator"]["name"] if pl.get("generator") else None] if x)
    table = Table(title=title)
    for col in ("metric", "mean ± std", "95% CI", "median", "IQR"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for key, label, pct in (("dice", "Dice %", True), ("msd_mm", "MSD mm", False),
                            ("hd95_mm", "HD95 mm", False), ("surface_dice", "NSD@tol %", True)):
        m = agg.get(key)
        if not isinstance(m, dict):
            continue
        ci = m.get("ci95") or [None, None]
        table.add_row(label, f"{_fmt(m.get('mean'), pct)} ± {_fmt(m.get('std'), pct)}",
                      f"[{_fmt(ci[0], pct)}, {_fmt(ci[1], pct)}]", _fmt(m.get("median"), pct),
                      f"{_fmt(m.get('q1'), pct)}–{_fmt(m.get('q3'), pct)}")
    console.print(table)
    console.print(f"cases: {agg.get('n_cases')}  failed: {agg.get('n_failed')}  "
                  f"empty predictions: {agg.get('n_empty_predictions')}  "
                  f"threshold rule: {results['binarization'].get('rule')} {results['binarization'].get('params')}  "
                  f"s/case: {results['timings'].get('seconds_per_case', 0):.2f}")
    console.print(f"results: {results.get('_out_dir', '')}/results.json")


# -- train ----------------------------------------------------------------------------------------
@cli.group()
def train():
    """Train (and cache) a predictor or generator on a benchmark's training split.

    \b
    Examples:
      wsbench train predictor --predictor cnn3d
      wsbench train generator --generator rflow -o generator.steps=4000 --device cuda
    """


def _train(role: str, name: str, benchmark, dataset, data_dir, device, seed, option_pairs, retrain, quiet):
    from wsbench.progress import Progress
    from wsbench.runner import RunConfig, build_session, prepare, train_or_load

    cfg = RunConfig(segmenter="", benchmark=benchmark, dataset=dataset, data_dir=data_dir, device=device,
                    seed=seed, options=parse_kv_options(option_pairs), progress=not quiet, retrain=retrain,
                    **{role: name})
    s = build_session(cfg, need_segmenter=False)
    with Progress(enabled=not quiet) as progress:
        prepare(s, progress)
        ck = train_or_load(s, role, progress)
    plugin = getattr(s, role)
    if ck is None:
        console.print(f"{role} '{name}' needs no training (pretrained): {plugin.provenance()}")
        return
    console.print(f"{role} '{name}': {'cached' if ck['cached'] else 'trained'} checkpoint {ck['path']}")
    console.print(f"training summary: {ck['training']}")


def _train_options(f):
    for o in reversed([
        click.option("--benchmark", "-b", default="luna16-synth", show_default=True),
        click.option("--dataset", "-d", default=None),
        click.option("--data-dir", default=None, type=click.Path(file_okay=False)),
        click.option("--device", default="auto", show_default=True),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("-o", "--option", "option_pairs", multiple=True, metavar="ROLE.KEY=VALUE"),
        click.option("--retrain", is_flag=True, help="Train even if a cached checkpoint exists."),
        click.option("--quiet", "-q", is_flag=True),
    ]):
        f = o(f)
    return f


@train.command("predictor")
@click.option("--predictor", "-p", "name", required=True, help="Predictor name.")
@_train_options
def train_predictor(name, **kw):
    """Train a predictor with image-level labels only.

    \b
    Example:
      wsbench train predictor --predictor radimgnet -o predictor.weights=RadImageNet-ResNet50.pt
    """
    _train("predictor", name, **kw)


@train.command("generator")
@click.option("--generator", "-g", "name", required=True, help="Generator name.")
@_train_options
def train_generator(name, **kw):
    """Train a generator (rectified flow) on the training patches.

    \b
    Example:
      wsbench train generator --generator rflow -o generator.steps=20000 --device cuda
    """
    _train("generator", name, **kw)


# -- plugins / ls ---------------------------------------------------------------------------------
@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_cmd(as_json):
    """List registered plugins: name, role, distribution, version, origin.

    Plugin modules that failed to load are listed with their error. Block plugins with
    WSBENCH_DISABLE_PLUGINS=name1,name2.

    \b
    Example:
      wsbench plugins
    """
    reg = plugins.get_registry()
    rows = [(i.name, i.role, i.distribution, i.version, i.source)
            for role in reg.plugins for i in sorted(reg.plugins[role].values(), key=lambda i: i.name)]
    if as_json:
        import json

        click.echo(json.dumps({"plugins": [dict(zip(("name", "role", "distribution", "version", "source"), r))
                                           for r in rows],
                               "failures": [{"source": s, "error": e} for s, e in reg.failures]}, indent=1))
        return
    table = Table(title="wsbench plugins")
    for col in ("name", "role", "distribution", "version", "from"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    for src, err in reg.failures:
        console.print(f"[red]failed to load[/] {src}: {err}", highlight=False)


_LS_ROLES = {"predictors": "predictor", "generators": "generator", "segmenters": "segmenter",
             "datasets": "dataset"}


@cli.command("ls")
@click.argument("what", type=click.Choice(sorted(_LS_ROLES)))
@click.option("--options/--no-options", default=True, show_default=True, help="Show each plugin's options.")
def ls_cmd(what, options):
    """Describe the plugins of one role, with their options and defaults.

    \b
    Examples:
      wsbench ls segmenters
      wsbench ls predictors --no-options
    """
    from wsbench.options import describe_options

    role = _LS_ROLES[what]
    reg = plugins.get_registry()
    for name in reg.names(role):
        info = reg.plugins[role][name]
        extra = []
        if role == "segmenter":
            needs = [r for r, flag in (("predictor", info.cls.needs_predictor),
                                       ("generator", info.cls.needs_generator)) if flag]
            extra.append(f"needs: {', '.join(needs) or 'nothing'}")
        console.print(f"[bold]{name}[/] — {info.description}  [dim]({info.distribution} {info.version}"
                      f"{'; ' + '; '.join(extra) if extra else ''})[/]", highlight=False)
        if options:
            for d in describe_options(getattr(info.cls, "Options")):
                choices = f" one of {', '.join(map(str, d['choices']))};" if d["choices"] else ""
                console.print(f"    {role}.{d['name']} ({d['type']}, default {d['default']!r}):{choices} {d['help']}",
                              highlight=False)


def main(argv=None) -> None:
    cli.main(args=argv, prog_name="wsbench")


# Plugin subcommands are added once, when the CLI module is imported (tests use ``cli`` directly).
plugins.add_commands(cli)
