"""Many writers into one PostgreSQL-backed ``harness server``: two ``harness run --jobs 4`` at once
(8 worker processes recording concurrently) lose no run, duplicate none, and lose no metric."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.engines.conftest import cell_runs, harness_env, suite_copy

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("engines")]

WRITERS = """
[profiles.writers]
train.steps = 40
train.log_every = 5
train.snapshot_steps = [0]
matrix.seeds = 2
matrix.codebook_size = [2, 10]
matrix.method = ["vq", "drifting"]
"""


def test_eight_concurrent_writers_lose_and_duplicate_nothing(tracking_server, tmp_path):
    suite = suite_copy(tmp_path, "toy2d-writers", WRITERS)
    args = ["run", str(suite), "--profile", "writers", "--jobs", "4", "--tracking-uri", tracking_server,
            "--no-progress"]
    procs = []
    for i in range(2):
        folder = tmp_path / f"writer{i}"
        folder.mkdir()
        procs.append(subprocess.Popen([sys.executable, "-m", "harness.commands.cli", *args], cwd=folder, env=harness_env(),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for proc, out in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out[-3000:]
        assert "database is locked" not in out

    client = MlflowClient(tracking_server)
    experiment = client.get_experiment_by_name("toy2d-writers").experiment_id
    parents = client.search_runs([experiment], "tags.`harness.kind` = 'suite'")
    assert sorted(p.info.status for p in parents) == ["FINISHED", "FINISHED"]
    runs = cell_runs(tracking_server, "toy2d-writers")
    assert len(runs) == 16 and all(r.info.status == "FINISHED" for r in runs)
    for parent in parents:
        hashes = [r.data.tags["harness.config_hash"] for r in runs
                  if r.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert len(hashes) == 8 and len(set(hashes)) == 8  # every cell once under each suite run
    logged = {len(client.get_metric_history(r.info.run_id, "train/loss")) for r in runs}
    assert logged == {len(range(5, 41, 5))}  # every logged step of every run reached the store once
    assert all("eval/utilization" in r.data.metrics for r in runs)
