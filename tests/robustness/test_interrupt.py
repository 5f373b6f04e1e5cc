"""A real signal to a real ``harness run``: checkpoint, KILLED, exit 130/143; ``--resume`` finishes."""

from __future__ import annotations

import signal
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from harness.commands.cli import main
from harness.recovery.checkpoint import checkpoint_path
from tests.robustness.conftest import (
    cell_runs,
    finish,
    interrupt,
    running_cell_with_metric,
    start,
    suite_runs,
    wait_for,
)

# long enough that the signal lands mid-training, short enough for CI once resumed
STEPS = 1000


def test_sigint_checkpoints_and_records_killed(workdir: Path, store: str, tiny):
    path = tiny(steps=STEPS, log_every=5)
    proc = start(["run", str(path), "-q", "vq", "--seeds", "1", "--no-progress"], workdir)
    run = wait_for(lambda: running_cell_with_metric(store), "a RUNNING cell with a train metric", proc=proc)
    interrupt(proc, signal.SIGINT)
    rc, _out, err = finish(proc)

    assert rc == 130, err
    assert "Traceback" not in err and "--resume" in err
    [cell] = cell_runs(store)
    assert cell.info.run_id == run.info.run_id and cell.info.status == "KILLED"
    [parent] = suite_runs(store)
    assert parent.info.status == "KILLED"

    step = int(cell.data.tags["harness.checkpoint_step"])
    assert 0 < step < STEPS
    ckpt = Path(cell.data.tags["harness.checkpoint"])
    assert ckpt == checkpoint_path(workdir / ".harness" / "checkpoints", "tiny", cell.data.tags["harness.config_hash"])
    payload = torch.load(ckpt, weights_only=True)  # plain tensors and containers only
    assert payload["step"] == step
    assert {"model", "quantizer", "optimizer", "rng", "loss_weights"} <= set(payload)
    assert not list(ckpt.parent.glob("*.tmp"))  # the atomic write left no temp file behind


def test_sigterm_then_resume_finishes_every_cell_once(workdir: Path, store: str, tiny, capsys):
    path = tiny(steps=STEPS, log_every=5)
    args = ["run", str(path), "-q", "vq", "--seeds", "2", "--no-progress"]
    proc = start(args, workdir)
    first = wait_for(lambda: running_cell_with_metric(store), "a RUNNING cell with a train metric", proc=proc)
    interrupt(proc, signal.SIGTERM)
    rc, _out, err = finish(proc)
    assert rc == 143, err
    killed = {r.info.run_name: r for r in cell_runs(store)}
    assert [r.info.status for r in killed.values()] == ["KILLED"]  # the second cell never started
    stopped_at = int(killed[first.info.run_name].data.tags["harness.checkpoint_step"])

    # resume in a new process: the interrupted cell continues, the other one runs from the start
    rc, out, err = finish(start([*args, "--resume"], workdir))
    assert rc == 0, err
    runs = cell_runs(store)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted(r.info.run_name for r in finished) == ["vq-K4-d2-s0", "vq-K4-d2-s1"]
    resumed = next(r for r in finished if r.info.run_name == first.info.run_name)
    assert resumed.data.tags["harness.resumed_from"] == first.info.run_id
    assert int(resumed.data.tags["harness.resumed_at_step"]) == stopped_at
    client = MlflowClient(store)
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "train/loss")]
    # the copied curve up to the checkpoint, then the continued one to the end, each step once
    assert steps == sorted(set(steps)) and steps[-1] == STEPS
    assert steps == list(range(5, STEPS + 1, 5))
    killed_steps = [m.step for m in client.get_metric_history(first.info.run_id, "train/loss")]
    assert max(killed_steps) <= stopped_at
    other = next(r for r in finished if r.info.run_name != first.info.run_name)
    assert "harness.resumed_from" not in other.data.tags
    assert not list((workdir / ".harness" / "checkpoints" / "tiny").glob("*.pt"))  # finished: removed

    # a second --resume finds nothing to do: no new runs, both cells reported as skipped
    assert main([*args, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("SKIPPED") == 2
    assert len(cell_runs(store)) == len(runs) == 3

    # the leaderboard counts each seed once (the finished run), not the interrupted one
    assert main(["leaderboard", str(path), "--format", "csv"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    header, [row] = rows[0].split(","), [line.split(",") for line in rows[1:]]
    assert row[header.index("n")] == "2" and row[header.index("failed")] == "0"


def test_sigkill_leaves_no_finished_run_and_resume_uses_the_periodic_checkpoint(workdir: Path, store: str, tiny):
    """SIGKILL cannot be handled: the run stays RUNNING (never FINISHED); the periodic checkpoint remains."""
    path = tiny(steps=STEPS, log_every=5, checkpoint_every=50)
    args = ["run", str(path), "-q", "vq", "--seeds", "1", "--no-progress"]
    proc = start(args, workdir)
    folder = workdir / ".harness" / "checkpoints" / "tiny"
    wait_for(lambda: running_cell_with_metric(store) and list(folder.glob("*.pt")), "a periodic checkpoint",
             proc=proc)
    interrupt(proc, signal.SIGKILL)
    rc, _out, _err = finish(proc)
    assert rc == -signal.SIGKILL
    [dead] = cell_runs(store)
    assert dead.info.status == "RUNNING"
    saved = torch.load(next(folder.glob("*.pt")), weights_only=True)["step"]
    assert saved % 50 == 0 and 0 < saved < STEPS

    rc, _out, err = finish(start([*args, "--resume"], workdir))
    assert rc == 0, err
    finished = [r for r in cell_runs(store) if r.info.status == "FINISHED"]
    assert len(finished) == 1
    assert finished[0].data.tags["harness.resumed_from"] == dead.info.run_id
    assert int(finished[0].data.tags["harness.resumed_at_step"]) == saved
    [before] = [r for r in cell_runs(store) if r.info.run_id == dead.info.run_id]
    assert before.info.status == "KILLED"  # the dead process's run is closed, not left RUNNING
