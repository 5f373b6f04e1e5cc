"""The whole working folder on a full disk (store, artifacts, checkpoints): ``harness run`` stops
with one line (what is full, what was saved, how to close the runs and continue), never a
SQLAlchemy traceback; once space is freed, the printed commands close the runs and finish the suite.

Real ``harness run`` processes on a real tmpfs that the test fills once the first cell finished.
"""

from __future__ import annotations

import errno
import shlex
import shutil
import sqlite3
from pathlib import Path

import pytest

from harness.recovery.diskfull import StoreFull, is_disk_full, is_store_full, refused
from tests.robustness.conftest import cell_runs, finish, run, start, suite_runs, wait_for
from tests.robustness.mounts import fill, tmpfs


def test_the_store_on_a_full_disk_stops_the_suite_in_one_line(workdir: Path, migrated_db: Path, tiny):
    suite = tiny(steps=200, checkpoint_every=20)
    with tmpfs(workdir / "full", size="8m") as disk:
        shutil.copy(migrated_db, disk / "mlflow.db")
        uri = f"sqlite:///{disk / 'mlflow.db'}"
        args = ["run", str(suite), "-q", "vq", "--seeds", "4", "--no-progress", "--tracking-uri", uri]
        proc = start(args, workdir)
        wait_for(lambda: any(r.info.status == "FINISHED" for r in cell_runs(uri)), "the first cell", proc=proc)
        fill(disk)
        rc, _out, err = finish(proc)
        assert rc == 1, err
        assert "Traceback" not in err and "sqlalchemy" not in err.lower(), err
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"harness: error: the MLflow store {disk / 'mlflow.db'} (file system {disk}:"), line
        assert "is full: the suite stopped. Saved: " in line and "of 4 cells finished and recorded (vq-K4-d2-s0" in line
        resume = f"harness run {suite} -q vq --seeds 4 --tracking-uri {uri} --no-progress --resume"
        assert f"`{resume}` continues" in line, line
        repair = f"harness runs repair --tracking-uri {uri} --suite tiny"
        left = [r for r in [*cell_runs(uri), *suite_runs(uri)] if r.info.status == "RUNNING"]
        if left:  # the full disk refused closing them: the line says how, once space is freed
            assert f"{len(left)} run{'s' * (len(left) != 1)} left RUNNING: once space is freed, `{repair}`" in line
        else:
            assert "Every run is closed" in line, line

        (disk / "filler").unlink()  # space freed: the printed commands do what they say
        rc, _out, err = run(shlex.split(repair)[1:], workdir)
        assert rc == 0, err
        assert all(r.info.status != "RUNNING" for r in [*cell_runs(uri), *suite_runs(uri)])
        rc, _out, err = run(shlex.split(resume)[1:], workdir)
        assert rc == 0, err
        finished = {r.info.run_name for r in cell_runs(uri) if r.info.status == "FINISHED"}
    assert finished == {f"vq-K4-d2-s{s}" for s in range(4)}


# -- telling a full store from a full artifact disk (no process needed) --------------------------

def test_what_counts_as_a_full_disk():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full("OSError: [Errno 28] No space left on device: '/x/ckpt.pt'")
    assert is_store_full(sqlite3.OperationalError("database or disk is full"))
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise RuntimeError("MlflowException: wrapped") from inner
    except RuntimeError as outer:
        assert is_store_full(outer) and is_disk_full(outer)
    assert not is_disk_full(OSError(errno.EROFS, "Read-only file system"))
    assert not is_store_full("OSError: [Errno 28] No space left on device")


class _Store:
    """A stand-in tracker whose tag write succeeds or fails like a real store would."""

    def __init__(self, error: Exception | None) -> None:
        self.error, self.tags = error, {}

    def set_tags(self, run_id: str, tags: dict) -> None:
        if self.error is not None:
            raise self.error
        self.tags.update(tags)


@pytest.mark.parametrize("store_error, stops", [
    (None, False),  # only the artifact disk is full: the cell fails, the suite goes on
    (sqlite3.OperationalError("database or disk is full"), True),  # the store's disk too: stop
])
def test_no_space_on_an_artifact_disk_stops_only_when_the_store_is_full(store_error, stops):
    store = _Store(store_error)
    assert refused(store, "parent", "OSError: [Errno 28] No space left on device") is stops
    assert not refused(store, "parent", "OSError: [Errno 30] Read-only file system")
    if not stops:  # the probe is a real write that says what the cell met
        assert store.tags["harness.warning.disk_full"].startswith("a cell could not write: OSError: [Errno 28]")


def test_the_line_names_the_commands(tmp_path: Path):
    error = StoreFull(f"sqlite:///{tmp_path}/mlflow.db", "tiny", ["vq-K4-d2-s0"], 4, open_runs=2)
    error.resume = "harness run tiny.toml --resume"
    text = str(error)
    assert "\n" not in text
    assert f"the MLflow store {tmp_path}/mlflow.db (file system " in text
    assert "Saved: 1 of 4 cells finished and recorded (vq-K4-d2-s0). 2 runs left RUNNING" in text
    assert f"`harness runs repair --tracking-uri sqlite:///{tmp_path}/mlflow.db --suite tiny` closes them" in text
    assert text.endswith("`harness run tiny.toml --resume` continues")


def test_any_command_meeting_a_full_disk_says_so_in_one_line(monkeypatch, capsys):
    from harness.commands import cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    parser = cli.build_parser()  # `harness doctor`, made to meet a full disk
    parser._subparsers._group_actions[0].choices["doctor"].set_defaults(func=full)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main(["doctor"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("harness: error: a disk is full (OSError: [Errno 28] No space left on device); free "
                           "space, then `harness runs repair` closes any run this command left RUNNING")
