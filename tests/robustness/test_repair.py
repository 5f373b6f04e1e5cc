"""``harness runs repair``: every RUNNING run whose process is gone ends KILLED; live ones are left.

The runs are left RUNNING by a real ``harness run`` killed with SIGKILL (nothing it can handle),
or written with the identity tags of real processes (one alive, one dead, one on another host).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from mlflow.tracking import MlflowClient

from harness.recovery.signals import identity, process_alive
from tests.robustness.conftest import (
    cell_runs,
    finish,
    interrupt,
    run,
    running_cell_with_metric,
    start,
    suite_runs,
    wait_for,
)


def running(uri: str) -> list:
    return [r for r in [*cell_runs(uri), *suite_runs(uri)] if r.info.status == "RUNNING"]


def test_sigkill_leaves_running_runs_that_repair_closes(workdir: Path, store: str, tiny):
    suite = tiny(steps=2000, log_every=5)
    proc = start(["run", str(suite), "-q", "vq", "--seeds", "1", "--no-progress"], workdir)
    wait_for(lambda: running_cell_with_metric(store), "a RUNNING cell with a train metric", proc=proc)
    interrupt(proc, signal.SIGKILL)
    finish(proc)
    stuck = running(store)
    assert stuck, "SIGKILL leaves the parent run RUNNING: nothing can close it from inside"
    # any worker of the killed command notices and stops; then no RUNNING run has a live process
    wait_for(lambda: all(process_alive(r.data.tags) is False for r in running(store)),
             "the killed command's processes to be gone", timeout=120)

    rc, out, err = run(["runs", "repair", "--dry-run"], workdir)
    assert rc == 0 and "would close KILLED" in out
    assert {r.info.run_id for r in running(store)} == {r.info.run_id for r in stuck}

    rc, out, err = run(["runs", "repair"], workdir)
    assert rc == 0, err
    assert running(store) == []
    [parent] = suite_runs(store)
    assert parent.info.status == "KILLED"
    assert "closed KILLED by harness runs repair" in parent.data.tags["harness.repaired"]
    assert f"pid {proc.pid}" in parent.data.tags["harness.repaired"]
    assert f"{len(stuck)} closed, 0 left" in err


def test_repair_tells_dead_from_alive_and_from_elsewhere(workdir: Path, store: str):
    client = MlflowClient(store)
    exp = client.create_experiment("other-suite")
    dead = subprocess.Popen(["true"])
    dead.wait()
    owners = {
        "alive": identity(),  # this test process
        "dead": {**identity(), "harness.pid": str(dead.pid), "harness.pid_start": ""},
        "elsewhere": {**identity(), "harness.hostname": "another-host.example"},
        "untagged": {},
    }
    ids = {name: client.create_run(exp, run_name=name, tags={"harness.kind": "cell", **tags}).info.run_id
           for name, tags in owners.items()}

    rc, out, _err = run(["runs", "repair", "--suite", "other-suite"], workdir)
    assert rc == 0
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {"alive": "RUNNING", "dead": "KILLED", "elsewhere": "RUNNING", "untagged": "KILLED"}
    assert "left: alive" in out and "left: on another-host.example" in out


def test_repair_on_a_store_with_nothing_running(workdir: Path, store: str):
    rc, out, _err = run(["runs", "repair"], workdir)
    assert rc == 0 and "no RUNNING run in" in out
