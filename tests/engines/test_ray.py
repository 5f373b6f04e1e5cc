"""``--executor ray`` on a real local Ray cluster (started and shut down by each run), recording into a
PostgreSQL-backed ``harness server``: tasks, their tags, a worker that dies, Ctrl-C, resume.

Ray binds every interface, so these tests run only inside a private network namespace
(``unshare --net``, as .ci/run does); elsewhere they skip (under CI=true they fail).
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.engines.conftest import (
    cell_runs,
    harness,
    harness_env,
    in_private_netns,
    suite_copy,
    unavailable,
    wait_for_training,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("engines")]

PROFILES = """
[methods.exit-vq]
quantizer = "exit-vq"
params = { exit_after = 20 }

[profiles.engine]
train.steps = 40
train.snapshot_steps = [0]
matrix.seeds = 2
matrix.codebook_size = [2]
matrix.method = ["vq", "exit-vq"]

[profiles.long]
train.steps = 4000
train.log_every = 10
train.snapshot_steps = [0]
matrix.seeds = 1
matrix.codebook_size = [2]
matrix.method = ["vq"]
"""


@pytest.fixture
def ray_ok() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        unavailable("Ray is not installed: pip install 'vq-harness[ray]'")
    if not in_private_netns():
        unavailable("Ray listens on every interface: run these tests inside `unshare --net` "
                    "(with `ip link set lo up`), as .ci/run does")


def ray_args(suite, profile: str, uri: str, *more: str) -> list[str]:
    return ["run", str(suite), "--profile", profile, "--executor", "ray", "--executor-option", "cluster_cpus=2",
            "--tracking-uri", uri, "--no-progress", *more]


def test_cells_run_as_tasks_and_a_dying_worker_is_failed_with_rays_reason(ray_ok, tracking_server, tmp_path,
                                                                          exit_plugin):
    suite = suite_copy(tmp_path, "toy2d-ray", PROFILES)
    done = harness(ray_args(suite, "engine", tracking_server), tmp_path, harness_env(pythonpath=exit_plugin))
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    runs = cell_runs(tracking_server, "toy2d-ray")
    by_method: dict[str, list] = {}
    for run in runs:
        by_method.setdefault(run.data.tags["harness.method"], []).append(run)
    assert sorted(by_method) == ["exit-vq", "vq"], done.stdout[-3000:] + done.stderr[-3000:]
    assert len(by_method["vq"]) == 2 and len(by_method["exit-vq"]) == 2
    tasks = set()
    for run in by_method["vq"]:
        assert run.info.status == "FINISHED"
        assert "eval/utilization" in run.data.metrics
        tasks.add(run.data.tags["harness.ray.task_id"])
    for run in by_method["exit-vq"]:
        assert run.info.status == "FAILED"
        assert run.data.tags["harness.error"].startswith("WorkerCrashedError: The worker died unexpectedly")
        tasks.add(run.data.tags["harness.ray.task_id"])
    assert len(tasks) == 4  # one task per cell; max_retries=0: no cell ran twice
    assert "2 of 4 cells failed" in done.stderr


def test_ctrl_c_cancels_the_tasks_killed_with_a_checkpoint_then_resume(ray_ok, tracking_server, tmp_path):
    suite = suite_copy(tmp_path, "toy2d-ray-kill", PROFILES)
    env = harness_env()
    args = ray_args(suite, "long", tracking_server)
    proc = subprocess.Popen([sys.executable, "-m", "harness.commands.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_training(tracking_server, "toy2d-ray-kill", proc)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, out[-3000:]
    [killed] = cell_runs(tracking_server, "toy2d-ray-kill")
    assert killed.info.status == "KILLED"
    step = int(killed.data.tags["harness.checkpoint_step"])
    assert step > 0

    done = harness([*args, "--resume"], tmp_path, env)
    finished = [r for r in cell_runs(tracking_server, "toy2d-ray-kill") if r.info.status == "FINISHED"]
    assert len(finished) == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert finished[0].data.tags["harness.resumed_from"] == killed.info.run_id
    assert int(finished[0].data.tags["harness.resumed_at_step"]) == step
    assert finished[0].data.tags["harness.ray.task_id"]
