"""A full disk under the store: stop the suite with one line a user can act on.

When the disk that holds the MLflow store fills up, every further write (a run, a
tag, the status that closes a run) fails with SQLite's ``database or disk is
full``: running more cells would only train them for nothing, and closing the
runs may fail too. So the suite stops, and the one line says what is full (the
store and its file system), what was saved (the cells that finished), and the
commands that close the runs left RUNNING and continue once space is freed.

A full artifact or checkpoint folder while the store can still be written is
not this: that cell ends FAILED with ``No space left on device`` and the suite
goes on (docs/robustness.md).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, one_line
from harness.tracking.store import is_disk_full, is_store_full


class FullStoreSeen(Exception):
    """A cell's outcome showed that the store is full: stops the dispatch (harness.run.lifecycle)."""


def refused(tracker: Any, run_id: str | None, error: BaseException | str | None) -> bool:
    """Whether ``error`` means the store itself can no longer be written.

    SQLite's ``database or disk is full`` says so outright. ``No space left on device`` (an
    artifact or checkpoint write) may be another disk than the store's: one real write to the
    store, a tag on ``run_id`` saying what the cell met, tells the two apart.
    """
    if isinstance(error, FullStoreSeen) or is_store_full(error):
        return True
    if run_id is None or not is_disk_full(error):
        return False
    first = (str(error).splitlines() or [""])[0][:300]
    try:
        tracker.set_tags(run_id, {"harness.warning.disk_full": f"a cell could not write: {first}"})
    except Exception as exc:  # noqa: BLE001 - only a full store stops the suite; anything else is the cell's
        return is_disk_full(exc)
    return False


# -- the line the user reads -----------------------------------------------------------------

def mount_of(path: Path) -> Path:
    """The mount point of the file system that holds ``path`` (the thing that is full)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    device = path.stat().st_dev
    while path.parent != path and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def what_is_full(uri: str) -> str:
    """``the MLflow store /x/mlflow.db (file system /x: 12 KiB free)``, or the server's URI."""
    if not uri.startswith("sqlite:///"):
        return f"the tracking server {uri} (its database or disk)"
    store = Path(uri[len("sqlite:///"):])
    try:
        mount = mount_of(store)
        stats = os.statvfs(mount)
        free = f"{stats.f_bavail * stats.f_frsize // 1024} KiB free"
    except OSError as exc:  # the path vanished: still name the store
        return f"the MLflow store {store} ({exc.strerror})"
    return f"the MLflow store {store} (file system {mount}: {free})"


class StoreFull(HarnessError):
    """The store cannot be written for want of space: the suite stopped (exit 1)."""

    def __init__(self, uri: str, suite: str, saved: Sequence[str], total: int, open_runs: int,
                 checkpoints: int = 0) -> None:
        self.uri, self.suite, self.saved, self.total = uri, suite, list(saved), total
        self.open_runs, self.checkpoints = open_runs, checkpoints
        #: the ``harness run ... --resume`` command (the CLI knows it; see harness.run.rerun)
        self.resume = "harness run <suite> --resume (with the same options)"
        super().__init__(uri)

    def __str__(self) -> str:
        names = ", ".join(self.saved[:5]) + (", ..." if len(self.saved) > 5 else "")
        saved = f"{len(self.saved)} of {self.total} cells finished and recorded" + (f" ({names})" if names else "")
        if self.checkpoints:
            saved += f", {self.checkpoints} unfinished with a checkpoint to continue from"
        repair = shlex.join(["harness", "runs", "repair", "--tracking-uri", self.uri, "--suite", self.suite])
        runs = f"{self.open_runs} run{'s' * (self.open_runs != 1)}"
        close = (f"{runs} left RUNNING: once space is freed, `{repair}` closes {'it' if self.open_runs == 1 else 'them'}, then "
                 if self.open_runs else "Every run is closed: once space is freed, ")
        return (f"{what_is_full(self.uri)} is full: the suite stopped. Saved: {saved}. {close}"
                f"`{self.resume}` continues")


def store_full(tracker: Any, suite: Any, parent: str | None, results: list[Any], total: int) -> StoreFull:
    """The :class:`StoreFull` for this suite, after trying (quietly) to close its runs."""
    from harness.recovery.checkpoint import checkpoint_path, checkpoint_root

    saved = [r.cell.run_name for r in results if r.status in ("FINISHED", "SKIPPED")]
    done = {r.cell.config_hash for r in results if r.status in ("FINISHED", "SKIPPED")}
    root = checkpoint_root(tracker.uri)
    kept = sum(checkpoint_path(root, suite.name, r.cell.config_hash).is_file()
               for r in results if r.cell.config_hash not in done)
    return StoreFull(tracker.uri, suite.name, saved, total, close_quietly(tracker, suite.name, parent), kept)


def close_quietly(tracker: Any, experiment: str, parent: str | None) -> int:
    """End the parent and its RUNNING cells FAILED where the store still lets us; returns how many
    stay RUNNING (reading works on a full disk, so that count is exact)."""
    if parent is None:
        return 0
    why = "the store's disk is full: the suite stopped"
    query = f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'"
    left = 0
    try:
        runs = [r.info.run_id for r in tracker.runs(experiment, query)] + [parent]
    except Exception:  # noqa: BLE001 - cannot even read: say the parent may be open
        return 1
    for run_id in runs:
        try:
            tracker.set_tags(run_id, {"harness.error": why})
            tracker.terminate(run_id, "FAILED")
        except Exception:  # noqa: BLE001 - the disk is full: it stays RUNNING, repair closes it
            left += 1
    return left


def disk_full_line(exc: BaseException, tracking_uri: str | None) -> str | None:
    """The one line for a full disk met by a command with no handling of its own, else ``None``."""
    if not is_disk_full(exc):
        return None
    repair = ["harness", "runs", "repair", *(["--tracking-uri", tracking_uri] if tracking_uri else [])]
    return (f"a disk is full ({one_line(exc)}); free space, then `{shlex.join(repair)}` closes any run "
            "this command left RUNNING")
