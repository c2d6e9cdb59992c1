"""CLI: ``wsbench compare A.json B.json`` — paired per-case comparison of two runs."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from wsbench.compare import METRICS
from wsbench.hookspecs import hookimpl

console = Console(soft_wrap=True)

_EPILOG = """\b
Examples:
  wsbench compare results/luna16-synth/gradcam--cnn3d--none--seed0/results.json \\
                  results/luna16-synth/flow-guide--cnn3d--rflow--seed0/results.json
  wsbench compare A.json B.json --metric dice --metric hd95_mm --per-case
  wsbench compare runA/ runB/ --json > comparison.json
"""


def _p(p) -> str:
    if p is None:
        return "–"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def _num(v, metric: str) -> str:
    if v is None:
        return "–"
    return f"{v:+.3f}" if metric.endswith("_mm") else f"{v:+.4f}"


@click.command("compare", epilog=_EPILOG)
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--metric", "-m", "metric_names", multiple=True, default=("dice",), show_default=True,
              type=click.Choice(list(METRICS)), help="Metric to compare (repeatable).")
@click.option("--per-case", is_flag=True, help="Also print every shared case's values and difference.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON instead of tables.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the bootstrap CI.")
def compare_cmd(a: str, b: str, metric_names: tuple[str, ...], per_case: bool, as_json: bool, seed: int) -> None:
    """Compare two results files case by case (paired on shared case ids).

    For each metric: the means of A and B, the per-case difference B − A (mean with a
    bootstrap 95 % CI, median), how many cases A wins, ties or B wins (by the metric's
    direction: higher Dice, lower distances), and the Wilcoxon signed-rank p-value. A and B
    are results.json files of `wsbench run` (or their run folders). Failed cases count with
    their worst-case metrics.
    """
    from wsbench.compare import compare, load_results

    ra, rb = load_results(a), load_results(b)
    comps = [compare(ra, rb, m, seed=seed) for m in dict.fromkeys(metric_names)]
    if as_json:
        click.echo(json.dumps(comps if len(comps) > 1 else comps[0], indent=1))
        return
    first = comps[0]
    console.print(f"[bold]A[/] = {first['label_a']}\n[bold]B[/] = {first['label_b']}")
    for w in first["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")
    t = Table(title=f"B − A on {first['n_shared']} shared test cases")
    t.add_column("")
    for c in comps:
        t.add_column(f"{c['metric']} {'↑' if c['higher_is_better'] else '↓'}", justify="right", no_wrap=True)

    def row(label, fn):
        t.add_row(label, *[fn(c) for c in comps])

    def ci(c):
        lo, hi = c["ci95_diff"] or [None, None]
        return f"[{_num(lo, c['metric'])}, {_num(hi, c['metric'])}]"

    row("A mean", lambda c: f"{c['mean_a']:.4f}")
    row("B mean", lambda c: f"{c['mean_b']:.4f}")
    row("B − A mean", lambda c: _num(c["mean_diff"], c["metric"]))
    row("  95% CI", ci)
    row("B − A median", lambda c: _num(c["median_diff"], c["metric"]))
    row("A better/ties/B better", lambda c: f"{c['a_better']}/{c['ties']}/{c['b_better']}")
    row("Wilcoxon p", lambda c: _p(c["wilcoxon_p"]))
    console.print(t)
    if first["n_failed_a"] or first["n_failed_b"]:
        console.print(f"failed cases (scored as worst case): A {first['n_failed_a']}, B {first['n_failed_b']}")

    s = Table(title="by nodule diameter (mm): B − A mean, A better / ties / B better")
    s.add_column("diameter")
    s.add_column("n", justify="right")
    for c in comps:
        s.add_column(c["metric"], justify="right")
    for stratum, row in first["by_diameter"].items():
        cells = []
        for c in comps:
            r = c["by_diameter"][stratum]
            cells.append("–" if not r["n"] else
                         f"{_num(r['mean_diff'], c['metric'])}  {r['a_better']}/{r['ties']}/{r['b_better']}")
        s.add_row(stratum, str(row["n"]), *cells)
    console.print(s)

    if per_case:
        pc = Table(title="per case")
        pc.add_column("case_id")
        pc.add_column("diameter mm", justify="right")
        for c in comps:
            for col in (f"A {c['metric']}", f"B {c['metric']}", "B − A"):
                pc.add_column(col, justify="right")
        for i, row in enumerate(first["cases"]):
            d = row["diameter_mm"]
            cells = []
            for c in comps:
                r = c["cases"][i]
                cells += [f"{r['a']:.4f}", f"{r['b']:.4f}", _num(r["diff"], c["metric"])]
            pc.add_row(row["case_id"], "–" if d is None else f"{float(d):.1f}", *cells)
        console.print(pc)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(compare_cmd)
