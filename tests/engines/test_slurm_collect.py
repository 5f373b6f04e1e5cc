"""The submitting process's view of a job that ended without a result (no cluster needed: ``squeue`` is faked).

sacct (and submitit, which reads it) can show a job requeued on preemption as FAILED for a moment;
the collector must wait for SLURM's controller to let the job go before it records the cell lost.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.plugins.executors.slurm import still_held


@pytest.fixture
def squeue(tmp_path, monkeypatch):
    """Install a fake ``squeue`` printing what the test sets (nothing: the job is gone)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    answer = tmp_path / "squeue.out"
    answer.write_text("")
    script = bin_dir / "squeue"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'squeue.args'}\ncat {answer}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return answer


def job(tmp_path: Path, with_result: bool = False) -> SimpleNamespace:
    result = tmp_path / "9_0_result.pkl"
    if with_result:
        result.write_bytes(b"result")
    return SimpleNamespace(job_id="9_0", paths=SimpleNamespace(result_pickle=result))


@pytest.mark.parametrize("state", ["PENDING", "REQUEUED", "RUNNING", "COMPLETING", "PREEMPTED"])
def test_a_job_the_controller_still_holds_has_no_outcome_yet(state, squeue, tmp_path):
    squeue.write_text(f"{state}\n")
    assert still_held(job(tmp_path))
    assert "-j 9_0" in (tmp_path / "squeue.args").read_text()


@pytest.mark.parametrize("listed", ["", "FAILED\n", "CANCELLED\n", "COMPLETED\n"])
def test_a_job_the_controller_let_go_is_collected(listed, squeue, tmp_path):
    squeue.write_text(listed)
    assert not still_held(job(tmp_path))


def test_a_job_with_a_result_is_collected_without_asking(squeue, tmp_path):
    squeue.write_text("RUNNING\n")
    assert not still_held(job(tmp_path, with_result=True))
    assert not (tmp_path / "squeue.args").exists()


def test_a_job_out_of_the_queue_is_collected_only_after_settling(squeue, tmp_path, monkeypatch):
    """A requeue can leave a job FAILED for a moment: out of the queue, then PENDING again."""
    from harness.plugins.executors import slurm

    clock = [1000.0]
    monkeypatch.setattr(slurm.time, "monotonic", lambda: clock[0])
    executor = object.__new__(slurm.SlurmExecutor)  # the collector's state only: no submitit, no sbatch
    executor._unheld_since = {}
    ended = job(tmp_path)
    assert not executor._settled(ended)  # first seen out of the queue
    clock[0] += slurm.SETTLE_S / 2
    squeue.write_text("PENDING\n")  # requeued after all
    assert not executor._settled(ended)
    squeue.write_text("")
    clock[0] += 1
    assert not executor._settled(ended)  # out of the queue again: the wait starts again
    clock[0] += slurm.SETTLE_S - 1
    assert not executor._settled(ended)
    clock[0] += 1
    assert executor._settled(ended)
