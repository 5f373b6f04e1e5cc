"""Concurrent writers into one tracking store: runs lost or duplicated, points lost, wall time (not a test).

    python benchmarks/writers.py --tracking-uri URI [--tracking-uri URI ...]
        [--writers 8] [--runs 5] [--metrics 50]

For each URI (``sqlite:///...`` directly, or a ``harness server`` on SQLite or PostgreSQL),
``--writers`` processes start together and each records ``--runs`` runs of ``--metrics``
steps of one metric into one fresh experiment, twice: batched (the harness's
:class:`~harness.tracking.Tracker`: points buffered and sent with ``log_batch``) and one
``MlflowClient.log_metric`` call per point. Then the store is read back: runs lost,
runs duplicated, points lost, and the errors the writers met ("database is locked").
The last line printed is JSON, one object per URI and mode.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
import uuid
from typing import Any


def writer(uri: str, experiment: str, index: int, runs: int, metrics: int, batched: bool,
           barrier: Any, errors: Any) -> None:
    from harness.tracking import Tracker

    tracker = Tracker(uri)
    tracker.experiment_id(experiment)
    barrier.wait()
    for r in range(runs):
        try:
            run_id = tracker.start_run(experiment, f"w{index}-r{r}", {"bench.key": f"{index}-{r}"})
            for step in range(metrics):
                if batched:
                    tracker.log_metrics(run_id, {"m": float(step)}, step)
                else:
                    tracker.client.log_metric(run_id, "m", float(step), step=step)
            tracker.flush(run_id)
            tracker.end_run(run_id, "FINISHED")
        except Exception as exc:  # noqa: BLE001 - counted, the benchmark goes on
            errors.put(f"{type(exc).__name__}: {str(exc)[:200]}")


def measure(uri: str, writers: int, runs: int, metrics: int, batched: bool) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from harness.tracking import Tracker

    experiment = f"writers-{uuid.uuid4().hex[:8]}"
    Tracker(uri).experiment_id(experiment)  # created once, before the writers race for it
    ctx = mp.get_context("spawn")
    barrier, errors = ctx.Barrier(writers + 1), ctx.Queue()
    procs = [ctx.Process(target=writer, args=(uri, experiment, i, runs, metrics, batched, barrier, errors))
             for i in range(writers)]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    for p in procs:
        p.join()
    wall = time.perf_counter() - start
    met = []
    while not errors.empty():
        met.append(errors.get())
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment).experiment_id
    found = client.search_runs([exp], max_results=10000)
    keys = [r.data.tags.get("bench.key") for r in found]
    points = sum(len(client.get_metric_history(r.info.run_id, "m")) for r in found)
    expected = writers * runs
    return {"uri": uri, "mode": "batched" if batched else "one call per point", "writers": writers,
            "runs_expected": expected, "runs_lost": expected - len(set(keys)),
            "runs_duplicated": len(keys) - len(set(keys)), "points_lost": expected * metrics - points,
            "errors": len(met), "database_locked": sum("locked" in e for e in met), "wall_s": round(wall, 2),
            "points_per_s": round(points / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", action="append", required=True)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--metrics", type=int, default=50)
    args = parser.parse_args()
    rows = []
    for uri in args.tracking_uri:
        for batched in (True, False):
            row = measure(uri, args.writers, args.runs, args.metrics, batched)
            rows.append(row)
            print(f"{uri:45s} {row['mode']:20s} {row['wall_s']:7.2f} s  {row['points_per_s']:8.1f} points/s  "
                  f"lost {row['runs_lost']} runs / {row['points_lost']} points, duplicated {row['runs_duplicated']}, "
                  f"errors {row['errors']} ({row['database_locked']} locked)", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
