"""``harness run SUITE --resume``: what each cell needs, judged from MLflow and the checkpoints.

A cell is matched to earlier runs by its ``harness.config_hash`` tag (the same
resolved config, profile and suite version):

- a FINISHED run exists: the cell is skipped (reported as SKIPPED with that run's numbers);
- otherwise, its checkpoint exists: the cell continues from it in a **new** run,
  tagged ``harness.resumed_from`` (the interrupted run) and ``harness.resumed_at_step``;
  the interrupted run keeps its KILLED or FAILED status as the record of what happened;
- otherwise: the cell runs from the start.

So a cell never gets two FINISHED runs from ``--resume``, and the leaderboard,
which keeps the newest finished run per configuration and seed, never counts
an interrupted run beside the run that finished it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.recovery.checkpoint import checkpoint_path
from harness.suite import Cell
from harness.tracking import Tracker


@dataclass
class Resume:
    """How one cell continues: ``action`` is ``skip``, ``continue`` or ``fresh``."""

    action: str
    run: Any = None  # the FINISHED run (skip) or the interrupted one (continue), if any
    checkpoint: Path | None = None

    @property
    def previous_run_id(self) -> str | None:
        return self.run.info.run_id if self.run is not None else None

    def plain(self) -> dict[str, Any]:
        """The decision as plain data, for a :class:`harness.run.executors.CellSpec`."""
        return {"action": self.action, "previous_run_id": self.previous_run_id,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None}


def close_dead_runs(tracker: Tracker, experiment: str) -> list[Any]:
    """End KILLED every RUNNING run of ``experiment`` whose process is gone (SIGKILL, OOM, power cut),
    with or without a checkpoint: what ``harness runs repair`` does (:mod:`harness.recovery.repair`), for
    one suite. Returns the closed runs (``.name``, ``.run_id``)."""
    from harness.recovery.repair import repair

    return [r for r in repair(tracker, [experiment]) if r.action == "closed KILLED"]


def plan(tracker: Tracker, suite_name: str, cells: list[Cell], root: Path) -> dict[str, Resume]:
    """The resume decision for each cell, keyed by config hash."""
    wanted = {c.config_hash for c in cells}
    by_hash: dict[str, list[Any]] = {}
    for run in tracker.runs(suite_name, "tags.`harness.kind` = 'cell'"):
        key = run.data.tags.get("harness.config_hash")
        if key in wanted:
            by_hash.setdefault(key, []).append(run)
    decisions: dict[str, Resume] = {}
    for cell in cells:
        runs = sorted(by_hash.get(cell.config_hash, []), key=lambda r: r.info.start_time or 0)
        finished = [r for r in runs if r.info.status == "FINISHED"]
        path = checkpoint_path(root, suite_name, cell.config_hash)
        if finished:
            decisions[cell.config_hash] = Resume("skip", finished[-1])
        elif path.is_file():
            decisions[cell.config_hash] = Resume("continue", runs[-1] if runs else None, path)
        else:
            decisions[cell.config_hash] = Resume("fresh", runs[-1] if runs else None)
    return decisions


def finished_metrics(run: Any) -> dict[str, float]:
    """A finished run's ``eval/*`` numbers, as a new run would report them."""
    return {k[5:]: v for k, v in run.data.metrics.items() if k.startswith("eval/")}


def continue_from(state: Any, schedules: list[Any], resume: Resume, config_hash: str) -> None:
    """Restore ``state`` and ``schedules`` from the cell's checkpoint (it must be this config's).

    The new run's tags and the earlier run's copied curves: :meth:`harness.cell.record.CellRecord.resumed`.
    """
    from harness.errors import HarnessError
    from harness.recovery import checkpoint

    assert resume.checkpoint is not None
    payload = checkpoint.load(resume.checkpoint)
    if payload["config_hash"] != config_hash:
        raise HarnessError(f"checkpoint {resume.checkpoint} belongs to config {payload['config_hash']}, "
                           f"not {config_hash}")
    checkpoint.restore(state, schedules, payload)
