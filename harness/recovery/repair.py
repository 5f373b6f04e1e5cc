"""``harness runs repair``: close every RUNNING run whose process is gone, as KILLED.

A process killed by SIGKILL, the OOM killer or a power cut cannot end its runs;
MLflow then shows them RUNNING for ever and nobody can tell them from live
ones. Every run the harness starts names its process (the ``harness.pid``,
``harness.hostname`` and ``harness.pid_start`` tags, :func:`harness.recovery.signals.identity`),
so this command, like ``harness run --resume``, can tell: a run whose process
is gone is ended KILLED (tagged ``harness.repaired``), whether or not its cell
left a checkpoint (``--resume`` continues from one). A run whose process still
runs, that was started on another host, or that the harness did not create (no
``harness.kind`` tag: another program's) is left alone and listed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from harness.recovery.signals import process_alive
from harness.report.table import markdown
from harness.tracking import Tracker


@dataclass(frozen=True)
class Repair:
    """One RUNNING run found, and what was done about it."""

    experiment: str
    run_id: str
    name: str
    kind: str
    action: str  # "closed KILLED", "left: alive", "left: on <host>"
    owner: str


def running_runs(tracker: Tracker, experiments: list[str] | None = None) -> list[tuple[str, Any]]:
    """Every RUNNING run of ``experiments`` (default: every experiment in the store)."""
    if experiments is None:
        experiments = tracker.experiment_names()
    return [(name, run) for name in experiments
            for run in tracker.runs(name, "attributes.status = 'RUNNING'")]


def repair(tracker: Tracker, experiments: list[str] | None = None, dry_run: bool = False) -> list[Repair]:
    """Close each RUNNING run whose process is gone (``dry_run``: only say which)."""
    done = []
    for experiment, run in running_runs(tracker, experiments):
        tags = run.data.tags
        owner = f"pid {tags.get('harness.pid', '?')} on {tags.get('harness.hostname', '?')}"
        alive = process_alive(tags)
        if "harness.kind" not in tags:  # another program's run: never the harness's to close
            action = "left: not a harness run"
        elif alive is None:
            action = f"left: on {tags.get('harness.hostname')}"
        elif alive:
            action = "left: alive"
        else:
            action = "would close KILLED" if dry_run else "closed KILLED"
            if not dry_run:
                close(tracker, run.info.run_id, owner if "harness.pid" in tags else "no process recorded")
        done.append(Repair(experiment, run.info.run_id, run.info.run_name or "", tags.get("harness.kind", ""),
                           action, owner if "harness.pid" in tags else "not recorded"))
    return done


def close(tracker: Tracker, run_id: str, owner: str) -> None:
    why = f"its process ({owner}) is gone; closed KILLED by harness runs repair"
    tracker.set_tags(run_id, {"harness.repaired": why, "harness.error": why})
    tracker.end_run(run_id, "KILLED")


# -- the command ----------------------------------------------------------------------------

def cmd_repair(args: argparse.Namespace) -> int:
    tracker = Tracker(args.tracking_uri)
    tracker.check()
    done = repair(tracker, args.suite, args.dry_run)
    if not done:
        print(f"no RUNNING run in {tracker.uri}")
        return 0
    print(markdown(["experiment", "run", "kind", "process", "action"],
                   [[r.experiment, f"{r.name} ({r.run_id})", r.kind, r.owner, r.action] for r in done]))
    closed = sum(r.action == "closed KILLED" for r in done)
    print(f"\n{closed} closed, {len(done) - closed} left", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    """``harness runs repair`` (called by :func:`harness.commands.cli.build_parser`)."""
    p = sub.add_parser("runs", help="look after recorded runs (repair: close runs whose process died)")
    runs_sub = p.add_subparsers(dest="action", required=True)
    r = runs_sub.add_parser("repair", help="end KILLED every RUNNING run whose process is gone")
    r.add_argument("--tracking-uri")
    r.add_argument("--suite", action="append", metavar="NAME",
                   help="only this suite's experiment (repeatable; default every experiment)")
    r.add_argument("--dry-run", action="store_true", help="only list what would be closed")
    r.set_defaults(func=cmd_repair)
