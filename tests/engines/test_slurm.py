"""``--executor slurm`` on a real one-node SLURM cluster (slurmctld, slurmd, slurmdbd), recording
into a PostgreSQL-backed ``harness server``: jobs, their tags, deaths, kills, preemption, resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engines.conftest import cell_runs, harness, harness_env, suite_copy, wait_for_training

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("engines")]

EXITING = """
[methods.exit-vq]
quantizer = "exit-vq"
params = { exit_after = 20 }

[profiles.engine]
train.steps = 40
train.snapshot_steps = [0]
matrix.seeds = 1
matrix.codebook_size = [2]
matrix.method = ["vq", "exit-vq"]
"""

PROFILES = """
[profiles.engine]
train.steps = 40
train.snapshot_steps = [0]
matrix.seeds = 1
matrix.codebook_size = [2]
matrix.method = ["vq"]

[profiles.long]
train.steps = 4000
train.log_every = 10
train.snapshot_steps = [0]
matrix.seeds = 1
matrix.codebook_size = [2]
matrix.method = ["vq"]
"""


def slurm_args(suite: Path, profile: str, uri: str, tmp_path: Path, *more: str) -> list[str]:
    return ["run", str(suite), "--profile", profile, "--executor", "slurm", "--executor-option", "poll=1",
            "--executor-option", f"folder={tmp_path / 'jobs'}", "--executor-option", "time=10",
            "--tracking-uri", uri, "--no-progress", *more]


TRANSIENT = ("", "PENDING", "RUNNING", "COMPLETING", "REQUEUED", "CONFIGURING", "SUSPENDED")


def sacct_state(job_id: str, env: dict[str, str], settle_s: float = 60) -> str:
    """The job's final state in accounting (a job whose result is written may still be completing)."""
    deadline, state = time.monotonic() + settle_s, ""
    while time.monotonic() < deadline:
        out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", job_id, "-o", "State"], capture_output=True,
                             text=True, env=env, timeout=30).stdout
        state = out.strip().splitlines()[-1] if out.strip() else ""
        if state.split(" ")[0] not in TRANSIENT:
            return state
        time.sleep(0.5)
    return state


def release_requeued(name: str, env: dict[str, str], timeout: float = 120) -> None:
    """SLURM holds a requeued job about two minutes (reason BeginTime); start it now, as an admin may."""
    deadline, queue = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-o", "%i %T %r", "--name", name], capture_output=True,
                               text=True, env=env, timeout=30).stdout.split()
        if len(queue) == 3 and queue[1:] == ["PENDING", "BeginTime"]:
            subprocess.run(["scontrol", "update", f"JobId={queue[0]}", "StartTime=now"], env=env, check=True,
                           timeout=30)
            return
        time.sleep(0.5)
    raise AssertionError(f"the job {name} was not requeued within {timeout:.0f} s (queue: {queue})")


def test_every_cell_is_a_job_with_its_tags(slurm, tracking_server, tmp_path):
    suite = suite_copy(tmp_path, "toy2d-slurm")
    env = harness_env(slurm)
    done = harness([*slurm_args(suite, "smoke", tracking_server, tmp_path), "-q", "vq",
                    "--set", "train.steps=40"], tmp_path, env)
    runs = cell_runs(tracking_server, "toy2d-slurm")
    assert len(runs) == 4, done.stdout[-3000:] + done.stderr[-3000:]
    jobs = set()
    for run in runs:
        tags = run.data.tags
        assert run.info.status == "FINISHED", tags.get("harness.error")
        assert "eval/utilization" in run.data.metrics
        job_id = tags["harness.slurm.job_id"]
        assert sacct_state(job_id, env) == "COMPLETED"
        assert Path(tags["harness.log"]).is_file() and Path(tags["harness.slurm.stderr"]).is_file()
        jobs.add(job_id)
    assert len(jobs) == 4  # one job (array element) per cell
    assert "cells failed" not in done.stderr


def test_a_dying_job_is_failed_with_sacct_reason(slurm, tracking_server, tmp_path, exit_plugin):
    suite = suite_copy(tmp_path, "toy2d-slurm-exit", EXITING)
    done = harness(slurm_args(suite, "engine", tracking_server, tmp_path), tmp_path,
                   harness_env(slurm, pythonpath=exit_plugin))
    assert done.returncode == 1
    runs = {r.data.tags["harness.method"]: r for r in cell_runs(tracking_server, "toy2d-slurm-exit")}
    assert runs["vq"].info.status == "FINISHED"
    dead = runs["exit-vq"]
    assert dead.info.status == "FAILED"
    error = dead.data.tags["harness.error"]
    assert "FAILED" in error and "exit code 9" in error, error
    assert dead.data.tags["harness.log"].endswith("_log.out")
    assert "1 of 2 cells failed: exit-vq" in done.stderr


def test_a_cancelled_job_is_killed_and_resumes_from_its_checkpoint(slurm, tracking_server, tmp_path):
    suite = suite_copy(tmp_path, "toy2d-slurm-kill", PROFILES)
    env = harness_env(slurm)
    args = slurm_args(suite, "long", tracking_server, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "harness.commands.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_training(tracking_server, "toy2d-slurm-kill", proc)
        subprocess.run(["scancel", "--name", "harness-toy2d-slurm-kill"], env=env, check=True, timeout=30)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 1, out[-3000:]
    [killed] = cell_runs(tracking_server, "toy2d-slurm-kill")
    tags = killed.data.tags
    assert killed.info.status == "KILLED"
    assert "CANCELLED" in sacct_state(tags["harness.slurm.job_id"], env)
    assert int(tags["harness.checkpoint_step"]) > 0 and Path(tags["harness.checkpoint"]).is_file()

    done = harness([*args, "--resume"], tmp_path, env)
    resumed = [r for r in cell_runs(tracking_server, "toy2d-slurm-kill") if r.info.status == "FINISHED"]
    assert len(resumed) == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert resumed[0].data.tags["harness.resumed_from"] == killed.info.run_id
    assert int(resumed[0].data.tags["harness.resumed_at_step"]) == int(tags["harness.checkpoint_step"])
    assert resumed[0].data.tags["harness.slurm.job_id"] != tags["harness.slurm.job_id"]


def test_a_preempted_job_is_requeued_and_continues(slurm, tracking_server, tmp_path):
    """submitit's preemption signal (USR2): checkpoint, KILLED, requeue; the requeued job continues."""
    suite = suite_copy(tmp_path, "toy2d-slurm-preempt", PROFILES)
    env = harness_env(slurm)
    proc = subprocess.Popen([sys.executable, "-m", "harness.commands.cli",
                             *slurm_args(suite, "long", tracking_server, tmp_path)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_training(tracking_server, "toy2d-slurm-preempt", proc)
        subprocess.run(["scancel", "--signal=USR2", "--name", "harness-toy2d-slurm-preempt"], env=env,
                       check=True, timeout=30)
        release_requeued("harness-toy2d-slurm-preempt", env)
        out, _ = proc.communicate(timeout=400)
    finally:
        proc.kill()
    runs = sorted(cell_runs(tracking_server, "toy2d-slurm-preempt"), key=lambda r: r.info.start_time)
    assert [r.info.status for r in runs] == ["KILLED", "FINISHED"], out[-3000:]
    first, second = runs
    assert second.data.tags["harness.resumed_from"] == first.info.run_id
    assert int(second.data.tags["harness.resumed_at_step"]) == int(first.data.tags["harness.checkpoint_step"]) > 0
    assert second.data.tags["harness.slurm.job_id"]  # the same job id, requeued
    assert "cells failed" not in out


def test_ctrl_c_cancels_the_jobs_and_records_them_killed(slurm, tracking_server, tmp_path):
    suite = suite_copy(tmp_path, "toy2d-slurm-ctrlc", PROFILES)
    env = harness_env(slurm)
    proc = subprocess.Popen([sys.executable, "-m", "harness.commands.cli",
                             *slurm_args(suite, "long", tracking_server, tmp_path)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_training(tracking_server, "toy2d-slurm-ctrlc", proc)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, out[-3000:]
    [run] = cell_runs(tracking_server, "toy2d-slurm-ctrlc")
    assert run.info.status == "KILLED"
    assert "CANCELLED" in sacct_state(run.data.tags["harness.slurm.job_id"], env)
    queue = subprocess.run(["squeue", "-h", "--name", "harness-toy2d-slurm-ctrlc"], capture_output=True,
                           text=True, env=env, timeout=30).stdout
    assert queue.strip() == ""  # nothing left queued or running


def test_a_two_rank_cell_trains_under_ddp_in_one_job(slurm, tracking_server, tmp_path):
    """tasks_per_cell=2: two tasks in one job join one process group (gloo on CPU); rank 0 records."""
    suite = suite_copy(tmp_path, "toy2d-slurm-ddp", PROFILES)
    done = harness([*slurm_args(suite, "engine", tracking_server, tmp_path),
                    "--executor-option", "tasks_per_cell=2"], tmp_path, harness_env(slurm))
    [run] = cell_runs(tracking_server, "toy2d-slurm-ddp")
    assert run.info.status == "FINISHED", done.stdout[-3000:] + done.stderr[-3000:]
    log = Path(run.data.tags["harness.log"])
    assert log.name.endswith("_0_log.out")
    assert log.with_name(log.name.replace("_0_log.out", "_1_log.out")).is_file()  # rank 1's task ran too
