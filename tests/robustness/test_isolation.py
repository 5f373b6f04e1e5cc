"""A cell cannot take the suite down (issue 16): real plugins that exit, crash and hang, real
signals to a real ``harness run``, real worker processes.

The faulty plugin (tests/executors/evil.py) is installed for real (a dist-info on
PYTHONPATH), so the worker processes discover it the way they discover any plugin.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_SUITE
from tests.executors.evil import install
from tests.robustness.conftest import (
    WAIT_S,
    cell_runs,
    child_env,
    finish,
    interrupt,
    start,
    suite_runs,
    wait_for,
)

FAULTS = {"exits": "exit", "os-exits": "os_exit", "segfaults": "segv"}


def evil_suite(suite_file, modes: dict[str, str], name: str = "evil.toml", **params: object) -> Path:
    """The tiny suite with one method per fault (``label -> mode``) before its ``vq`` method."""
    extra = ", ".join(f"{k} = {v}" for k, v in params.items())
    methods = "".join(f'[methods.{label}]\nquantizer = "evil-vq"\nparams = {{ mode = "{mode}"'
                      f'{", " + extra if extra else ""} }}\n\n' for label, mode in modes.items())
    return suite_file(TINY_SUITE.replace("[methods.vq]", methods + "[methods.vq]"), name)


@pytest.fixture
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(install(tmp_path_factory.mktemp("site")))


def no_running(uri: str) -> None:
    left = [r.info.run_name for r in [*cell_runs(uri), *suite_runs(uri)] if r.info.status == "RUNNING"]
    assert not left, f"runs left RUNNING: {left}"


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"


def test_exit_os_exit_and_segfault_fail_their_cell_and_the_suite_goes_on(workdir, store, suite_file,
                                                                           plugin_path):
    path = evil_suite(suite_file, FAULTS)
    methods = [arg for label in [*FAULTS, "vq"] for arg in ("-q", label)]
    proc = start(["run", str(path), *methods, "--seeds", "1", "--no-progress"], workdir, PYTHONPATH=plugin_path)
    rc, out, err = finish(proc)

    assert rc == 1, err
    runs = {r.info.run_name: r for r in cell_runs(store)}
    status = {name: r.info.status for name, r in runs.items()}
    assert status == {"exits-K4-d2-s0": "FAILED", "os-exits-K4-d2-s0": "FAILED",
                      "segfaults-K4-d2-s0": "FAILED", "vq-K4-d2-s0": "FINISHED"}
    assert "sys.exit(3)" in runs["exits-K4-d2-s0"].data.tags["harness.error"]
    assert "exited with code 1" in runs["os-exits-K4-d2-s0"].data.tags["harness.error"]
    assert "SIGSEGV" in runs["segfaults-K4-d2-s0"].data.tags["harness.error"]
    assert "3 of 4 cells failed" in err
    [parent] = suite_runs(store)
    assert parent.info.status == "FAILED" and parent.data.tags["harness.failed_cells"] == "3"
    no_running(store)


def test_a_worker_killed_from_outside_fails_its_cell_and_the_next_cell_runs(workdir, store, suite_file,
                                                                            plugin_path):
    """What the OOM killer does: SIGKILL to the worker in the middle of a cell."""
    path = evil_suite(suite_file, {"slow": "slow"}, delay=0.05)
    proc = start(["run", str(path), "-q", "slow", "--seeds", "2", "--no-progress", "--set", "train.steps=200",
                  "--set", "train.log_every=5"], workdir, PYTHONPATH=plugin_path)
    run = wait_for(lambda: next((r for r in cell_runs(store) if "train/loss" in r.data.metrics), None),
                   "a training cell", proc=proc)
    os.kill(int(run.data.tags["harness.pid"]), signal.SIGKILL)
    rc, _out, err = finish(proc)

    assert rc == 1, err
    runs = {r.info.run_name: r for r in cell_runs(store)}
    killed = runs.pop(run.info.run_name)
    assert killed.info.status == "FAILED"
    assert "killed by signal SIGKILL (out of memory?)" in killed.data.tags["harness.error"]
    assert [r.info.status for r in runs.values()] == ["FINISHED"]  # a fresh worker ran the other seed
    no_running(store)


def test_a_hung_cell_is_ended_by_the_watchdog_and_by_train_timeout(workdir, store, suite_file, plugin_path):
    path = evil_suite(suite_file, {"hangs": "hang"})
    # the no-progress watchdog: no write to the store for 20 s (a healthy tiny cell writes far more often)
    rc, _out, err = finish(start(["run", str(path), "-q", "hangs", "-q", "vq", "--seeds", "1", "--no-progress",
                                  "--executor-option", "watchdog=20"], workdir, PYTHONPATH=plugin_path))
    assert rc == 1, err
    runs = {r.info.run_name: r for r in cell_runs(store)}
    assert runs["vq-K4-d2-s0"].info.status == "FINISHED", runs["vq-K4-d2-s0"].data.tags.get("harness.error")
    assert runs["hangs-K4-d2-s0"].info.status == "FAILED"
    assert "no progress for 20 s" in runs["hangs-K4-d2-s0"].data.tags["harness.error"]

    # train.timeout: the cell's own alarm ends it FAILED, with its traceback recorded
    rc, _out, err = finish(start(["run", str(path), "-q", "hangs", "--seeds", "1", "--no-progress",
                                  "--set", "train.timeout=6"], workdir, PYTHONPATH=plugin_path))
    assert rc == 1, err
    timed = [r for r in cell_runs(store) if "train.timeout" in r.data.tags.get("harness.error", "")]
    assert [r.info.status for r in timed] == ["FAILED"]
    assert "CellTimeout: no result within train.timeout = 6 s" in timed[0].data.tags["harness.error"]
    no_running(store)


def test_sigkilled_control_process_stops_its_worker_and_resume_closes_the_dead_run(workdir, store, suite_file,
                                                                                   plugin_path):
    path = evil_suite(suite_file, {"slow": "slow"}, delay=0.05)  # about 15 s of training
    # no periodic checkpoint: --resume must close the dead run anyway, and start the cell over
    args = ["run", str(path), "-q", "slow", "--seeds", "1", "--no-progress", "--set", "train.steps=300",
            "--set", "train.log_every=5"]
    proc = start(args, workdir, PYTHONPATH=plugin_path)
    run = wait_for(lambda: next((r for r in cell_runs(store) if r.info.status == "RUNNING"
                                 and "train/loss" in r.data.metrics), None), "a training cell", proc=proc)
    worker = int(run.data.tags["harness.pid"])
    assert worker != proc.pid  # the cell runs in a worker process, not in the control process
    interrupt(proc, signal.SIGKILL)
    finish(proc)
    wait_for(lambda: pid_gone(worker), "the worker to stop after its control process was killed", timeout=30)
    from mlflow.tracking import MlflowClient

    before = len(MlflowClient(store).get_metric_history(run.info.run_id, "train/loss"))
    time.sleep(3)  # a worker still training would keep logging
    assert len(MlflowClient(store).get_metric_history(run.info.run_id, "train/loss")) == before
    assert {r.info.status for r in cell_runs(store)} == {"RUNNING"}  # it recorded nothing more

    # --resume closes the dead runs KILLED (no checkpoint: the cell starts over) and finishes the cell once
    rc, _out, err = finish(start([*args, "--resume"], workdir, PYTHONPATH=plugin_path))
    assert rc == 0, err
    assert "KILLED: its process is gone" in err
    assert sorted(r.info.status for r in cell_runs(store)) == ["FINISHED", "KILLED"]
    assert sorted(r.info.status for r in suite_runs(store)) == ["FINISHED", "KILLED"]
    no_running(store)


def test_a_second_sigint_never_hangs_and_the_console_says_what_was_saved(workdir, store, suite_file,
                                                                          plugin_path):
    path = evil_suite(suite_file, {"slow": "slow"}, delay=0.05)
    proc = start(["run", str(path), "-q", "slow", "--seeds", "1", "--no-progress", "--set", "train.steps=2000",
                  "--set", "train.log_every=5"], workdir, PYTHONPATH=plugin_path)
    wait_for(lambda: next((r for r in cell_runs(store) if "train/loss" in r.data.metrics), None),
             "a training cell", proc=proc)
    interrupt(proc, signal.SIGINT)
    time.sleep(0.3)
    interrupt(proc, signal.SIGINT)
    rc, _out, err = finish(proc, timeout=90)  # bounded: a hang fails here

    assert rc == 130, err
    assert "Traceback" not in err
    [cell] = cell_runs(store)
    assert cell.info.status == "KILLED"
    no_running(store)
    checkpoints = list((workdir / ".harness" / "checkpoints").rglob("*.pt"))
    [line] = [ln for ln in err.splitlines() if ln.startswith("harness: slow-K4-d2-s0 KILLED")]
    if checkpoints:  # the worker stopped between the signals: its checkpoint is named, and exists
        assert f"({checkpoints[0]})" in line, line
    else:
        assert "no checkpoint saved" in line, line


def test_a_first_sigint_is_honoured_when_the_checkpoint_cannot_be_written(workdir, store, suite_file,
                                                                          plugin_path):
    import shutil

    path = evil_suite(suite_file, {"slow": "slow"}, delay=0.05)
    proc = start(["run", str(path), "-q", "slow", "--seeds", "2", "--no-progress", "--set", "train.steps=2000",
                  "--set", "train.log_every=5"], workdir, PYTHONPATH=plugin_path)
    wait_for(lambda: next((r for r in cell_runs(store) if "train/loss" in r.data.metrics), None),
             "a training cell", proc=proc)
    folder = workdir / ".harness" / "checkpoints" / "tiny"
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("")  # the cell's checkpoint folder is now a file: the save on interrupt fails
    interrupt(proc, signal.SIGINT)
    rc, _out, err = finish(proc, timeout=90)

    assert rc == 130, err  # not 1: the interrupt is honoured although the cell failed to save
    [cell] = cell_runs(store)  # the second seed never started
    assert cell.info.status in ("FAILED", "KILLED")
    assert "no checkpoint saved" in err
    no_running(store)


def test_the_command_and_its_worker_exit_frozen_out_of_the_final_collection(workdir, store, suite_file,
                                                                             plugin_path):
    """`harness run` and its worker both end with every object frozen (``gc.freeze``): the
    interpreter's last collections would otherwise walk torch's and MLflow's objects, 1 to 2 s in
    each process, to free memory the system takes back anyway. Each process says so at exit."""
    probe = workdir / "worker-exit.txt"
    path = evil_suite(suite_file, {"probe": "exit_probe"}, pid_file=f'"{probe}"')
    command = ("import atexit, gc, runpy, sys\n"
               "atexit.register(lambda: print(f'command frozen={gc.get_freeze_count() > 0}'))\n"
               "sys.argv[0] = 'harness'\n"
               "runpy.run_module('harness.commands.cli', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", command, "run", str(path), "-q", "probe", "--seeds", "1",
                           "--no-progress"], cwd=workdir, env=child_env(PYTHONPATH=plugin_path),
                          capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r.info.status for r in cell_runs(store)] == ["FINISHED"]
    assert "command frozen=True" in done.stdout
    assert probe.read_text() == "frozen=True"
