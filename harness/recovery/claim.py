"""One cell, one trainer: two ``--resume`` on the same store must not both train a cell
(issue 21, item 22).

Both plan before either starts a cell, so the plan alone cannot tell. The cell's own
RUNNING run is the claim: right after a resumed cell starts its run, it looks for
other runs of the same cell (``harness.config_hash``) and gives way when

- one FINISHED meanwhile (under ``--resume`` a cell with a finished run is never
  started, so that run was finished by another process since the plan), or
- one is RUNNING under a process that is alive on this host and started first
  (earliest start time, then run id: both processes agree on the one winner).

The losing run is deleted (it was only a claim, with nothing trained), so a later
``--resume`` still continues the winner's checkpoint from the winner's run.
"""

from __future__ import annotations

from typing import Any

from harness.recovery.signals import process_alive
from harness.tracking import Tracker


def rival(tracker: Tracker, experiment: str, config_hash: str, own_run_id: str) -> Any | None:
    """The run of the same cell this one must give way to, or ``None`` to go on."""
    runs = tracker.runs(experiment, f"tags.`harness.config_hash` = '{config_hash}' "
                                    "and tags.`harness.kind` = 'cell'")
    others = [r for r in runs if r.info.run_id != own_run_id]
    finished = [r for r in others if r.info.status == "FINISHED"]
    if finished:
        return max(finished, key=lambda r: r.info.start_time or 0)
    own = next((r for r in runs if r.info.run_id == own_run_id), None)
    if own is None:
        return None

    def order(r: Any) -> tuple[int, str]:
        return (r.info.start_time or 0, r.info.run_id)

    earlier = [r for r in others if r.info.status == "RUNNING" and order(r) < order(own)
               and process_alive(r.data.tags)]
    return min(earlier, key=order) if earlier else None


def describe(run: Any) -> str:
    """Who holds the cell, in words."""
    tags = run.data.tags
    owner = f"pid {tags.get('harness.pid', '?')} on {tags.get('harness.hostname', '?')}"
    if run.info.status == "FINISHED":
        return f"another process ({owner}) finished this cell meanwhile as run {run.info.run_id}"
    return f"another process ({owner}) is training this cell as run {run.info.run_id}"


def give_way(tracker: Tracker, own_run_id: str) -> None:
    """Drop this process's claim run (nothing was trained in it)."""
    tracker.delete_run(own_run_id)
