"""A whole suite sweep against the bare PyTorch loops of its cells, as one ratio (not a test).

    python benchmarks/sweep.py [--suite toy2d] [--profile all] [--jobs 2]

Two measurements in one run, on the same machine, one after the other:

- **bare**: for each distinct configuration of the profile (method, codebook size, dim; the
  first seed), the bare loop of ``benchmarks/overhead.py``: the same dataset, model,
  quantizer, optimizer, batch size and steps, no logging, no callbacks, no schedules, one
  evaluation pass. They run ``--jobs`` at a time, each with ``cores / jobs`` threads, as the
  harness's workers do. A configuration's time counts once per seed.
- **sweep**: ``harness run SUITE --profile PROFILE --jobs N`` into a fresh SQLite store, wall
  time from the command's start to its exit (start-up, figures and closing included).

The ratio the issue sets a target for is ``sweep / (sum of the cells' bare times / cores)``.
Per method, the table beside it gives the median recorded cell time (the MLflow run's start
to end, in its worker) against the bare loop, so a method-level cost (one the bare loop pays
too) is told from a harness-side one. The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def bare_time(args: tuple[dict, int]) -> tuple[float, float]:
    """One configuration's bare loop, in a pool worker with ``threads`` intra-op threads."""
    config, threads = args
    import torch

    sys.path.insert(0, str(HERE))
    from overhead import bare  # the same loop benchmarks/overhead.py times

    from harness.host import get_host

    torch.set_num_threads(threads)
    return bare(get_host(), config)


def configurations(suite_name: str, profile: str) -> list[tuple[str, dict, int]]:
    """(method, completed config, seeds) for each configuration, the config of its first seed."""
    from harness.cell.build import complete_config
    from harness.host import get_host
    from harness.suite import load_suite

    host, suite = get_host(), load_suite(suite_name, profile)
    seeds: dict[tuple, int] = {}
    first: dict[tuple, tuple[str, dict]] = {}
    for cell in suite.cells(None):
        key = (cell.method, cell.codebook_size, cell.dim)
        seeds[key] = seeds.get(key, 0) + 1
        first.setdefault(key, (cell.method, complete_config(host, cell)))
    return [(*first[key], n) for key, n in seeds.items()]


def cell_times(uri: str, suite_name: str) -> dict[str, list[float]]:
    """Each finished cell's recorded wall time (its run's start to end), by method."""
    from harness.tracking import Tracker

    times: dict[str, list[float]] = {}
    for run in Tracker(uri).runs(suite_name, "tags.`harness.kind` = 'cell' and attributes.status = 'FINISHED'"):
        seconds = (run.info.end_time - run.info.start_time) / 1000
        times.setdefault(run.data.tags["harness.method"], []).append(seconds)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="toy2d")
    parser.add_argument("--profile", default="all")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    threads = max(1, cores // args.jobs)

    configs = configurations(args.suite, args.profile)
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        bare = pool.map(bare_time, [(config, threads) for _, config, _ in configs], chunksize=1)
    bare_wall = time.perf_counter() - start
    per_method: dict[str, float] = {}  # bare seconds summed over the method's cells
    cells_of: dict[str, int] = {}
    for (method, _, n), (wall, _cpu) in zip(configs, bare, strict=True):
        per_method[method] = per_method.get(method, 0.0) + wall * n
        cells_of[method] = cells_of.get(method, 0) + n
    total = sum(per_method.values())

    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        command = [sys.executable, "-m", "harness", "run", args.suite, "--profile", args.profile,
                   "--jobs", str(args.jobs), "--no-progress", "--tracking-uri", uri]
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        sweep = time.perf_counter() - start
        if proc.returncode not in (0, 1):  # 1: a claim or cell failed; the timing still stands
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        recorded = cell_times(uri, args.suite)

    cells = sum(cells_of.values())
    print("| method | cells | median cell s (recorded) | bare s (one cell) | cell / bare |")
    print("|---|---|---|---|---|")
    for method in sorted(per_method, key=lambda m: -per_method[m]):
        n = cells_of[method]
        one_bare = per_method[method] / n
        median = statistics.median(recorded.get(method, [float("nan")]))
        print(f"| {method} | {n} | {median:.2f} | {one_bare:.2f} | {median / one_bare:.2f}x |")
    ratio = sweep / (total / cores)
    print(f"sweep {sweep:.1f} s; bare loops {total:.1f} s summed over {cells} cells "
          f"({bare_wall:.1f} s wall on {args.jobs} jobs); sweep / (bare / {cores} cores) = {ratio:.2f}x")
    print(json.dumps({"suite": args.suite, "profile": args.profile, "jobs": args.jobs, "cores": cores,
                      "cells": cells, "sweep_s": round(sweep, 1), "bare_sum_s": round(total, 1),
                      "ratio": round(ratio, 3), "exit": proc.returncode}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
