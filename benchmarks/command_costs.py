"""What a command costs from start to exit: a dry run, a one-cell run, a leaderboard, a diagnosis (not a test).

    python benchmarks/command_costs.py [--repeats 5] [--tree before=/path/to/old/checkout ...]

Most of the test suite's time, and of a short ``harness run``'s, is not training: each
``harness`` process imports torch and MLflow, a run's worker imports them again, and
every process used to end with seconds of interpreter teardown. This times whole
commands, in a fresh folder with a copy of one migrated store each time:

- ``run toy2d --dry-run``: the suite checked, cells counted, nothing run;
- ``run toy2d -q vq --seeds 1 --set train.steps=1``: one cell of one step through the
  ``processes`` executor (control process and worker), so what remains is fixed cost;
- ``leaderboard toy2d`` and ``diagnose <cell>``: reading that run back.

Each is run ``--repeats`` times under ``/usr/bin/time`` (wall clock, user + system CPU of
the process and the children it waited for, peak RSS of the largest), interleaved across
trees so a busy machine slows all alike; medians and ranges are printed, and the last line
is JSON. ``--tree LABEL=DIR`` (repeatable) runs another checkout's ``harness`` package
(``PYTHONPATH=DIR``, which the worker processes inherit), e.g. a ``git worktree`` of an
older commit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cli_startup import spread  # this folder is on sys.path: the script is run as a file

ONE_CELL = ["-q", "vq", "--seeds", "1", "--set", "train.steps=1", "--no-progress"]
COMMANDS = {
    "run --dry-run": ["run", "toy2d", "--dry-run"],
    "run, one cell": ["run", "toy2d", *ONE_CELL],
    "leaderboard": ["leaderboard", "toy2d"],
    "diagnose": ["diagnose", "{cell}"],
}


def timed(argv: list[str], tree: str, folder: Path) -> dict[str, float]:
    """Wall and CPU seconds and peak RSS (MB) of one ``harness argv`` from checkout ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve()), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(["/usr/bin/time", "-f", "TIMED %e %U %S %M", sys.executable, "-m",
                           "harness.commands.cli", *argv], capture_output=True, text=True, cwd=folder, env=env)
    found = re.search(r"TIMED ([\d.]+) ([\d.]+) ([\d.]+) (\d+)", done.stderr)
    if done.returncode not in (0, 1) or found is None:  # 1: one step does not make toy2d's claims hold
        raise SystemExit(f"harness {' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    wall, user, system, rss = (float(g) for g in found.groups())
    return {"wall_s": wall, "cpu_s": user + system, "rss_mb": rss / 1024}


def first_cell(folder: Path) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("toy2d")
    return client.search_runs([experiment.experiment_id], "tags.`harness.kind` = 'cell'")[0].info.run_id[:8]


def one_round(trees: dict[str, str], template: Path, samples: dict[tuple[str, str], list[dict]]) -> None:
    """Every command once per tree, each tree in a new folder holding a copy of the migrated store."""
    for label, tree in trees.items():
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            shutil.copy(template, folder / "mlflow.db")
            for key, argv in COMMANDS.items():
                cell = first_cell(folder) if "{cell}" in argv else ""
                samples[label, key].append(timed([a.replace("{cell}", cell) for a in argv], tree, folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR")
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"here": "."}
    from harness.tracking import Tracker

    with tempfile.TemporaryDirectory() as name:
        template = Path(name) / "mlflow.db"
        Tracker(f"sqlite:///{template}").check()  # migrated once: no command pays MLflow's migrations
        samples: dict[tuple[str, str], list[dict]] = {(t, k): [] for t in trees for k in COMMANDS}
        for _ in range(args.repeats):
            one_round(trees, template, samples)
    report: dict[str, dict] = {}
    for (label, key), runs in samples.items():
        row: dict = {}
        for figure in ("wall_s", "cpu_s", "rss_mb"):
            row.update(spread(figure, [r[figure] for r in runs], 2))
        report.setdefault(label, {})[key] = row
        print(f"{label:8s} harness {key:14s} wall {row['wall_s']:6.2f} s ({row['wall_range_s'][0]}-"
              f"{row['wall_range_s'][1]})  cpu {row['cpu_s']:6.2f} s  peak {row['rss_mb']:5.0f} MB")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
