"""Several writers, one store: ``--jobs``, two ``harness run`` at once, a real ``mlflow server``.

Every run must be recorded whole (finished, with its params and eval metrics),
none lost and none duplicated.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.robustness.conftest import (
    WAIT_S,
    cell_runs,
    child_env,
    finish,
    run,
    start,
    suite_runs,
    wait_for,
)

QUICK = ["-q", "vq", "--set", "train.steps=20", "--no-progress"]


def assert_whole(uri: str, parents: int, cells_per_parent: int) -> None:
    """``parents`` suite runs, each with its cells: all FINISHED, complete, none twice."""
    parent_runs = suite_runs(uri)
    assert len(parent_runs) == parents
    assert all(p.info.status == "FINISHED" for p in parent_runs)
    cells = cell_runs(uri)
    assert len(cells) == parents * cells_per_parent
    assert len({c.info.run_id for c in cells}) == len(cells)
    by_parent = Counter(c.data.tags["mlflow.parentRunId"] for c in cells)
    assert by_parent == {p.info.run_id: cells_per_parent for p in parent_runs}
    for parent in parent_runs:  # within one harness run, each cell once
        names = [c.info.run_name for c in cells if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert len(set(names)) == len(names)
    for cell in cells:
        assert cell.info.status == "FINISHED", cell.data.tags.get("harness.error")
        assert {"eval/mse", "eval/utilization"} <= set(cell.data.metrics)
        assert cell.data.params["train.steps"] == "20" and cell.data.params["quantizer.name"] == "vq"
        assert "train/loss" in cell.data.metrics


def test_jobs_runs_cells_in_parallel_processes(workdir: Path, store: str, tiny):
    path = tiny()
    rc, out, err = run(["run", str(path), "--jobs", "2", "--seeds", "2", *QUICK], workdir)
    assert rc == 0, err
    for seed in range(2):
        assert f"vq-K4-d2-s{seed} | FINISHED" in out
    assert_whole(store, parents=1, cells_per_parent=2)


def test_two_commands_at_once_on_a_new_store(workdir: Path, tiny):
    """Both start on a store that does not exist yet: one creates and migrates it, the other waits."""
    path = tiny()
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    procs = [start(["run", str(path), "--seeds", "2", *QUICK], workdir) for _ in range(2)]
    results = [finish(p) for p in procs]
    assert [rc for rc, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    assert_whole(uri, parents=2, cells_per_parent=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(workdir: Path, migrated_db: Path):
    """A real ``mlflow server`` on loopback with a SQLite backend, stopped at the end."""
    import shutil

    folder = workdir / "server"
    folder.mkdir()
    shutil.copy(migrated_db, folder / "server.db")
    port = free_port()
    with open(folder / "server.log", "w") as log:  # the child keeps its own handle
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            cwd=folder, env=child_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, f"mlflow server on {url}", proc=None)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_runs_record_into_a_real_tracking_server(workdir: Path, tiny, mlflow_server: str):
    path = tiny()
    rc, out, err = run(["run", str(path), "--seeds", "1", "--tracking-uri", mlflow_server, *QUICK], workdir)
    assert rc == 0, err
    assert f"cell runs in {mlflow_server}" in out  # the summary names the store it wrote to
    assert_whole(mlflow_server, parents=1, cells_per_parent=1)
    assert not (workdir / "mlflow.db").exists()  # nothing went to a local store
    [cell] = cell_runs(mlflow_server)
    artifacts = {a.path for a in MlflowClient(mlflow_server).list_artifacts(cell.info.run_id)}
    assert "config.json" in artifacts


def test_unreachable_server_fails_fast_with_a_clear_message(workdir: Path, tiny):
    """A closed port: a clear error and exit 1, not a retry loop (the wait bound catches a hang)."""
    path = tiny()
    port = free_port()  # nothing listens there
    rc, _out, err = run(["run", str(path), "--tracking-uri", f"http://127.0.0.1:{port}", *QUICK], workdir,
                        timeout=min(WAIT_S, 120))
    assert rc == 1
    assert f"cannot reach the MLflow tracking server http://127.0.0.1:{port} (connection refused)" in err
    assert "--tracking-uri" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
