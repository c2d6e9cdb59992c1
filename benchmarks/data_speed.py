"""Time building the default synthetic LUNA16 set and preparing its patches, per scan.

Prints: the LIDC outline pool (rasterised once, then cached), the build wall time and CPU
seconds per scan by slice spacing, disk size, nodules per split, and the time the LUNA16
reader takes to prepare the benchmark's patches (cases + training view) per scan.

Usage::

    PYTHONPATH=. python benchmarks/data_speed.py                    # default set (60 scans)
    PYTHONPATH=. python benchmarks/data_speed.py --scans 20 --workers 1
    PYTHONPATH=. python benchmarks/data_speed.py --keep /tmp/synth   # keep the tree

Everything goes to a temporary folder (tree and caches) unless ``--keep`` is given; the LIDC
outline pool is taken from the normal wsbench cache when it is there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def main() -> None:
    from wsbench.data.synth import DEFAULT_SCANS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=DEFAULT_SCANS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="build processes (default: up to 4 cores)")
    ap.add_argument("--keep", type=Path, default=None, help="write the tree here and keep it")
    args = ap.parse_args()

    from wsbench.benchmark import load_benchmark
    from wsbench.data.synth import builder

    tmp = Path(tempfile.mkdtemp(prefix="wsbench-data-speed-"))
    try:
        t0, c0 = time.perf_counter(), _cpu()
        shapes = builder.default_shapes()
        print(f"LIDC outline pool: {len(shapes)} outlines in {time.perf_counter() - t0:.1f} s "
              f"(cached after the first time)")
        root = args.keep or tmp / "tree"
        workers = args.workers or min(os.cpu_count() or 1, 4, args.scans)
        t0, c0 = time.perf_counter(), _cpu()
        builder.build(root, scans=args.scans, seed=args.seed, workers=workers, shapes=shapes)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        man = json.loads((root / "synth.json").read_text())
        per = man["nodules_per_subset"]
        print(f"build: {args.scans} scans with {workers} worker(s) on {os.cpu_count()} core(s): "
              f"{wall:.1f} s wall, {cpu:.1f} s CPU ({cpu / args.scans:.2f} CPU s/scan), "
              f"{size / 1e6:.0f} MB on disk")
        print(f"nodules: {len(man['nodules'])} (train {sum(per[str(i)] for i in range(7))}, "
              f"validation {per['7']}, test {per['8'] + per['9']})")
        by_sz: dict[float, list[int]] = {}
        for s in man["series"]:
            by_sz.setdefault(s["slice_spacing_mm"], []).append(s["shape_zyx"][0] * s["shape_zyx"][1] * s["shape_zyx"][2])
        print("scans by slice spacing: " + ", ".join(
            f"{k:g} mm x{len(v)} (~{sum(v) / len(v) / 1e6:.1f} Mvox)" for k, v in sorted(by_sz.items())))

        os.environ["WSBENCH_CACHE"] = str(tmp / "cache")  # a cold patch cache
        bench = load_benchmark("luna16-synth")
        from wsbench import plugins

        ds = plugins.get("dataset", "luna16-synth").cls({"scans": args.scans, "seed": args.seed,
                                                         "data_dir": str(root)})
        t0, c0 = time.perf_counter(), _cpu()
        ds.prepare(bench.geometry)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        info = ds.split_info()
        print(f"prepare ({bench.geometry.size}^3 at {bench.geometry.spacing_mm} mm): {wall:.1f} s wall, "
              f"{wall / args.scans:.2f} s/scan; cases {info['cases']}; training view {info['patches']}")
        t0 = time.perf_counter()
        ds2 = plugins.get("dataset", "luna16-synth").cls({"scans": args.scans, "seed": args.seed,
                                                          "data_dir": str(root)})
        ds2.prepare(bench.geometry)
        print(f"prepare again (patch cache hit): {time.perf_counter() - t0:.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
