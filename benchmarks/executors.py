"""Per-cell dispatch overhead of each executor, and a whole suite's wall time (not a test).

    python benchmarks/executors.py [--suite toy2d] [--profile smoke] [--repeats 1]
        [--executor local --executor processes:jobs=1 --executor processes:jobs=2 ...]

Each executor runs the suite through the real command line (``harness run SUITE
--executor NAME --executor-option K=V``; options given here override a suite's
``[executor]`` table, e.g. toy2d's ``jobs = 2``) into a fresh SQLite store, with
``train.log_every = 1`` so the first training step is timestamped in MLflow. Then:

- suite wall time: the ``harness run`` process, start to exit (imports included);
- first cell, submit to first step: the parent run's start (the cells are submitted
  right after it) to the first cell's first ``train/loss`` point: worker start,
  imports, data and model building;
- next cells, submit to first step (median): a cell's first ``train/loss`` point minus
  the end of the cell its worker ran before (with one worker the next cell is sent
  the moment the previous one ends): the per-cell cost once a worker is warm.

Other executors take the same form (``slurm:partition=debug``, ``ray:address=local``);
pass ``--tracking-uri`` for executors that refuse a SQLite store. The last line
printed is JSON, one object per executor.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def run_once(suite: str, profile: str, executor: str, uri: str | None, folder: Path) -> dict[str, Any]:
    name, _, opts = executor.partition(":")
    uri = uri or f"sqlite:///{folder / 'mlflow.db'}"
    command = [sys.executable, "-m", "harness.commands.cli", "run", suite, "--profile", profile, "--no-progress",
               "--executor", name, "--set", "train.log_every=1", "--tracking-uri", uri]
    for item in filter(None, opts.split(",")):
        command += ["--executor-option", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    since_ms = int(time.time() * 1000)  # a shared --tracking-uri holds other runs too
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"{executor}: harness run exited {done.returncode}\n{done.stderr[-3000:]}")
    return {"executor": executor, "wall_s": wall, **dispatch_times(uri, since_ms)}


def dispatch_times(uri: str, since_ms: int = 0) -> dict[str, Any]:
    """Submit-to-first-step times from the store (module docstring), of runs started after ``since_ms``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id], max_results=5000)
            if (r.info.start_time or 0) >= since_ms]
    parent = next(r for r in runs if r.data.tags.get("harness.kind") == "suite")
    cells = sorted((r for r in runs if r.data.tags.get("harness.kind") == "cell"), key=lambda r: r.info.start_time)
    first_step = {r.info.run_id: min(m.timestamp for m in client.get_metric_history(r.info.run_id, "train/loss"))
                  for r in cells}
    by_worker: dict[str, list[Any]] = {}
    for r in cells:
        by_worker.setdefault(r.data.tags.get("harness.pid", ""), []).append(r)
    warm = [(first_step[b.info.run_id] - a.info.end_time) / 1000
            for rs in by_worker.values() for a, b in zip(rs, rs[1:], strict=False)]
    return {"cells": len(cells), "workers": len(by_worker),
            "first_cell_submit_to_step_s": (first_step[cells[0].info.run_id] - parent.info.start_time) / 1000,
            "next_cells_submit_to_step_s": statistics.median(warm) if warm else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="toy2d")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--executor", action="append", help="NAME or NAME:key=value,key=value (repeatable)")
    parser.add_argument("--tracking-uri", help="default: a fresh sqlite:/// store per run")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for _ in range(args.repeats):
        for executor in args.executor or ["local", "processes:jobs=1", "processes:jobs=2"]:
            with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
                row = run_once(args.suite, args.profile, executor, args.tracking_uri, Path(tmp))
            rows.append(row)
            print(f"{executor:24s} wall {row['wall_s']:6.1f} s  first cell submit->step "
                  f"{row['first_cell_submit_to_step_s']:5.2f} s  next cells "
                  f"{row['next_cells_submit_to_step_s'] or float('nan'):5.2f} s  "
                  f"({row['cells']} cells, {row['workers']} workers)", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
