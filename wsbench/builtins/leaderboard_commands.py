"""CLI: ``wsbench validate``, ``wsbench leaderboard build|submit``, ``wsbench report``, ``wsbench reproduce``."""

from __future__ import annotations

import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from wsbench.errors import WsbenchError
from wsbench.hookspecs import hookimpl

console = Console(soft_wrap=True)
err_console = Console(stderr=True)

DEFAULT_SUBMISSIONS = "leaderboard/submissions"
DEFAULT_README = "leaderboard/README.md"
#: Metrics compared by ``wsbench reproduce`` (numbers within ``--atol``; flags exactly).
REPRO_NUMBERS = ("dice", "msd_mm", "masd_mm", "hd95_mm", "surface_dice", "volume_pred_ml", "volume_truth_ml",
                 "volume_diff_ml")
REPRO_FLAGS = ("hit", "empty_prediction", "empty_truth")


# -- reproduction comparison (pure; tested without a rerun) -------------------------------------


def compare_runs(original: dict[str, Any], rerun: dict[str, Any], atol: float) -> dict[str, Any]:
    """Per-case differences between a results dict and its rerun.

    Returns ``{"rows": [{"case_id", "status", "diffs": {metric: new - old}, "ok"}],
    "max_abs_diff": {metric: float}, "missing": [...], "extra": [...], "threshold_diff": {...},
    "fingerprints": (old, new), "same_data": bool, "passed": bool}``. A case passes when both
    runs have it with the same status, every number of :data:`REPRO_NUMBERS` differs by at most
    ``atol`` and every flag is equal; the run passes when every case does, no case is extra and
    the dataset fingerprints are equal.
    """
    new = {c["case_id"]: c for c in rerun["cases"]}
    old_ids = [c["case_id"] for c in original["cases"]]
    rows = []
    max_diff = {k: 0.0 for k in REPRO_NUMBERS}
    for c in original["cases"]:
        n = new.get(c["case_id"])
        if n is None:
            rows.append({"case_id": c["case_id"], "status": "missing in rerun", "diffs": {}, "ok": False})
            continue
        diffs = {k: float(n["metrics"][k]) - float(c["metrics"][k]) for k in REPRO_NUMBERS
                 if k in c["metrics"] and k in n["metrics"]}
        for k, v in diffs.items():
            max_diff[k] = max(max_diff[k], abs(v))
        flags_equal = all(c["metrics"].get(k) == n["metrics"].get(k) for k in REPRO_FLAGS)
        same_status = c["status"] == n["status"]
        ok = same_status and flags_equal and all(abs(v) <= atol for v in diffs.values())
        status = c["status"] if same_status else f"{c['status']} -> {n['status']}"
        if not flags_equal:
            status += " (flags differ)"
        rows.append({"case_id": c["case_id"], "status": status, "diffs": diffs, "ok": ok})
    extra = sorted(set(new) - set(old_ids))
    p_old = (original.get("binarization") or {}).get("params") or {}
    p_new = (rerun.get("binarization") or {}).get("params") or {}
    tdiff = {k: float(p_new[k]) - float(p_old[k]) for k in p_old
             if k in p_new and isinstance(p_old[k], (int, float)) and isinstance(p_new[k], (int, float))}
    fp_old = (original.get("dataset") or {}).get("fingerprint")
    fp_new = (rerun.get("dataset") or {}).get("fingerprint")
    return {"rows": rows, "max_abs_diff": max_diff, "missing": [r["case_id"] for r in rows if not r["diffs"]
                                                                 and r["status"] == "missing in rerun"],
            "extra": extra, "threshold_diff": tdiff,
            "fingerprints": (fp_old, fp_new), "same_data": fp_old == fp_new,
            "passed": all(r["ok"] for r in rows) and not extra and bool(rows) and fp_old == fp_new}


def rerun_config(data: dict[str, Any], *, out_dir: str, device: str, benchmark: str | None = None,
                 data_dir: str | None = None, progress: bool = True, recorded_dataset_options: bool = False):
    """The :class:`wsbench.runner.RunConfig` that reruns a (validated, upgraded) results dict.

    Plugins, their options, seed, limit and binarisation options come from the file. The data
    come from the benchmark definition (the authority for a leaderboard row; a dataset plugin's
    option names may change between releases) unless ``recorded_dataset_options``; either way
    the comparison checks the dataset fingerprint.
    """
    from wsbench.runner import RunConfig

    pl = data["plugins"]
    options: dict[str, dict[str, Any]] = {}
    for role in ("segmenter", "predictor", "generator"):
        if pl.get(role) and pl[role].get("options"):
            options[role] = dict(pl[role]["options"])
    if recorded_dataset_options:
        ds_opts = dict(data["dataset"].get("options") or {})
        # the submitter's data folder means nothing here: --data-dir (or the dataset's default) instead
        ds_opts.pop("data_dir", None)
        if ds_opts:
            options["dataset"] = ds_opts
    bopts = (data.get("binarization") or {}).get("options")
    if bopts:
        options["binarization"] = dict(bopts)
    return RunConfig(
        segmenter=pl["segmenter"]["name"],
        predictor=pl["predictor"]["name"] if pl.get("predictor") else None,
        generator=pl["generator"]["name"] if pl.get("generator") else None,
        benchmark=benchmark or data["benchmark"]["name"],
        dataset=data["dataset"]["name"],
        data_dir=data_dir,
        seed=int(data["seed"]),
        device=device,
        limit=data.get("limit"),  # a limited run is reproduced with its limit (same binarisation fit)
        out_dir=out_dir,
        options=options,
        progress=progress,
        command="wsbench reproduce",
    )


def _print_comparison(cmp: dict[str, Any], atol: float, show_all: bool) -> None:
    table = Table(title=f"per-case differences (rerun − original), tolerance {atol:g}")
    cols = ("dice", "msd_mm", "hd95_mm", "surface_dice")
    table.add_column("case")
    table.add_column("status")
    for c in cols:
        table.add_column(f"Δ {c}", justify="right")
    table.add_column("ok")
    shown = 0
    for r in cmp["rows"]:
        if not show_all and r["ok"] and shown >= 20:
            continue
        shown += 1
        table.add_row(r["case_id"], r["status"], *[f"{r['diffs'][c]:+.2e}" if c in r["diffs"] else "–" for c in cols],
                      "[green]yes[/]" if r["ok"] else "[red]NO[/]")
    console.print(table)
    n_bad = sum(not r["ok"] for r in cmp["rows"])
    console.print("max |Δ|: " + ", ".join(f"{k} {v:.2e}" for k, v in cmp["max_abs_diff"].items()), highlight=False)
    if cmp["threshold_diff"]:
        console.print("fitted binarisation Δ: " + ", ".join(f"{k} {v:+.2e}" for k, v in cmp["threshold_diff"].items()),
                      highlight=False)
    if not cmp["same_data"]:
        fo, fn = cmp["fingerprints"]
        console.print(f"[bold red]the data differ[/]: dataset fingerprint {fo} in the file, {fn} in the rerun "
                      "(another dataset version, other data, or dataset options: see --recorded-dataset-options); "
                      "the cases are not comparable", highlight=False)
    if cmp["extra"]:
        console.print(f"[red]{len(cmp['extra'])} case(s) only in the rerun[/]: {', '.join(cmp['extra'][:5])}")
    verdict = "[bold green]PASS[/]" if cmp["passed"] else "[bold red]FAIL[/]"
    console.print(f"{verdict}: {len(cmp['rows']) - n_bad} of {len(cmp['rows'])} cases reproduced within {atol:g}")


# -- commands -----------------------------------------------------------------------------------


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(validate_cmd)
    cli.add_command(leaderboard_group)
    cli.add_command(report_cmd)
    cli.add_command(reproduce_cmd)


@click.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--submission", is_flag=True, help="Also require a complete run without --limit (as the leaderboard does).")
def validate_cmd(files, submission):
    """Check results files: schema, types, consistency, safe names.

    Older schema versions are upgraded first. Consistency means the aggregates recompute from
    the per-case records and, when the benchmark definition states them, the dataset
    fingerprint and the test-case count match. Exit status 1 if any file has a problem.

    \b
    Example:
      wsbench validate results/luna16-synth/gradcam--cnn3d--none--seed0/results.json
    """
    from wsbench.validate import validate_results

    bad = 0
    for f in files:
        try:
            problems = validate_results(Path(f), submission=submission)
        except WsbenchError as e:
            problems = [str(e)]
        if problems:
            bad += 1
            console.print(f"[bold red]INVALID[/] {f}: {len(problems)} problem(s)", highlight=False)
            for p in problems:
                console.print(f"  - {p}", highlight=False, markup=False)
        else:
            console.print(f"[green]valid[/] {f}", highlight=False)
    if bad:
        sys.exit(1)


@click.group("leaderboard")
def leaderboard_group():
    """Build the leaderboard page or file a results file as a submission.

    \b
    Examples:
      wsbench leaderboard submit results/luna16-synth/gradcam--cnn3d--none--seed0/results.json
      wsbench leaderboard build
      wsbench leaderboard build --check
    """


@leaderboard_group.command("build")
@click.option("--submissions", default=DEFAULT_SUBMISSIONS, show_default=True, type=click.Path(file_okay=False),
              help="Folder of <benchmark>/<name>.json submissions.")
@click.option("--out", default=DEFAULT_README, show_default=True, type=click.Path(dir_okay=False),
              help="Markdown file to write.")
@click.option("--check", is_flag=True, help="Write nothing; exit non-zero if OUT is stale.")
def leaderboard_build(submissions, out, check):
    """Render the leaderboard README from the validated submissions.

    Every submission is validated; an invalid one stops the build with a message naming it.
    The output holds no build time, so --check is reliable in CI.

    \b
    Examples:
      wsbench leaderboard build
      wsbench leaderboard build --check
    """
    from wsbench.leaderboard import build

    build(submissions, out, check=check)
    console.print(f"{out} is up to date" if check else f"wrote {out}", highlight=False)


@leaderboard_group.command("submit")
@click.argument("results", type=click.Path(dir_okay=True))
@click.option("--submissions", default=DEFAULT_SUBMISSIONS, show_default=True, type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Replace an existing submission of the same configuration.")
def leaderboard_submit(results, submissions, force):
    """Validate a results file and copy it to SUBMISSIONS/<benchmark>/<seg>--<pred>--<gen>--seed<N>.json.

    The file must be valid and complete (whole test split, no --limit). Rebuild the page
    afterwards with `wsbench leaderboard build`.

    \b
    Example:
      wsbench leaderboard submit results/luna16-synth/gradcam--cnn3d--none--seed0/results.json
    """
    from wsbench.validate import load_results, submission_path

    src = Path(results)
    if src.is_dir():
        src = src / "results.json"
    data = load_results(src, submission=True)
    dest = submission_path(submissions, data)
    if dest.exists() and not force:
        raise WsbenchError(f"{dest} already exists (same benchmark, plugins and seed); pass --force to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)  # the submitted bytes, unchanged (reproduction records hash them)
    console.print(f"submitted {src} -> {dest}\nnow run: wsbench leaderboard build", highlight=False)


@click.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: <first run>/report].")
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True)
@click.option("--max-cases", default=None, type=click.IntRange(min=1), help="At most N case montages per run.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def report_cmd(results, out_dir, fmt, max_cases, quiet):
    """Pictures of one or more runs: per-case montages, Dice plots, one index page.

    Each case gets a PNG with axial, coronal and sagittal planes through the nodule: the CT,
    the score map over it, and the predicted (red) against the truth (green) contour. Several
    results files add a Dice-per-method comparison.

    \b
    Examples:
      wsbench report results/luna16-synth/gradcam--cnn3d--none--seed0/results.json
      wsbench report results/luna16-synth/*/results.json --out report --format html
    """
    from wsbench.progress import Progress
    from wsbench.report import make_report

    with Progress(enabled=not quiet) as progress:
        index = make_report(list(results), out_dir, fmt=fmt, max_cases=max_cases, progress=progress)
    console.print(f"wrote {index}", highlight=False)


@click.command("reproduce")
@click.argument("file", type=click.Path(dir_okay=True))
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Folder for the rerun [default: results/reproduce/<benchmark>/<name>].")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--atol", default=1e-6, show_default=True, type=float,
              help="Largest |difference| per metric that still counts as reproduced (mm for distances).")
@click.option("--benchmark", default=None, help="Benchmark definition to use [default: the one named in FILE].")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False), help="Dataset root (e.g. LUNA16).")
@click.option("--record", is_flag=True,
              help="FILE is a leaderboard submission: write leaderboard/reproductions/<benchmark>/<name>.json.")
@click.option("--submissions", default=DEFAULT_SUBMISSIONS, show_default=True, type=click.Path(file_okay=False))
@click.option("--recorded-dataset-options", is_flag=True,
              help="Pass the file's dataset options (e.g. a run made with -o dataset.KEY=VALUE) instead of "
                   "the benchmark's.")
@click.option("--all", "show_all", is_flag=True, help="List every case, not only the first 20 that match.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def reproduce_cmd(file, out_dir, device, atol, benchmark, data_dir, record, submissions, recorded_dataset_options,
                  show_all, quiet):
    """Rerun the configuration recorded in a results file and compare per-case metrics.

    Uses the recorded benchmark, plugins and their options, binarisation options, seed and
    limit, and the benchmark's data; trains what is not cached. Exit status 1 when any case
    differs by more than --atol or the data's fingerprint differs from the file's.

    \b
    Examples:
      wsbench reproduce leaderboard/submissions/luna16-synth/gradcam--cnn3d--none--seed0.json
      wsbench reproduce results/quick/results.json --device cpu --atol 1e-4
    """
    from wsbench import runner
    from wsbench.leaderboard import file_sha256, reproduction_record_path
    from wsbench.results import git_hash, write_json_atomic
    from wsbench.validate import load_results, sanitize_name, submission_name

    src = Path(file)
    if src.is_dir():
        src = src / "results.json"
    bench_obj = None
    if benchmark is not None:
        from wsbench.benchmark import load_benchmark

        bench_obj = load_benchmark(benchmark)
    data = load_results(src, benchmark=bench_obj)
    rec_path = None
    if record:
        root = Path(submissions).resolve()
        if not src.resolve().is_relative_to(root):
            raise WsbenchError(f"--record needs a file under {submissions}/ (file it with `wsbench leaderboard submit`)")
        rec_path = reproduction_record_path(root, src.resolve())
    out = out_dir or str(Path("results") / "reproduce" / sanitize_name(data["benchmark"]["name"])
                         / submission_name(data).removesuffix(".json"))
    cfg = rerun_config(data, out_dir=out, device=device, benchmark=benchmark, data_dir=data_dir,
                       progress=not quiet, recorded_dataset_options=recorded_dataset_options)
    console.print(f"rerunning {src} into {out}", highlight=False)
    rerun = runner.run(cfg)
    cmp = compare_runs(data, rerun, atol)
    _print_comparison(cmp, atol, show_all)
    if rec_path is not None:
        rec_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(rec_path, {
            "submission": src.name, "sha256": file_sha256(src), "passed": cmp["passed"], "atol": atol,
            "n_cases": len(cmp["rows"]), "max_abs_diff": cmp["max_abs_diff"], "same_data": cmp["same_data"],
            "device": rerun["device"],
            "wsbench_version": rerun["wsbench_version"], "git_hash": git_hash(),
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
        console.print(f"recorded {rec_path}", highlight=False)
    if not cmp["passed"]:
        sys.exit(1)
