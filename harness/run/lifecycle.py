"""The one suite-run lifecycle: select and plan cells, resume decisions, parent run, dispatch to an
executor, collect outcomes, claims, close every run.

``harness run`` (with ``--shard``, ``--resume``, ``--jobs``, ``--executor``) and
``pytest --harness-suite`` (harness.testing.pytest_plugin) go through these
functions; where a cell runs is the executor's business (harness.run.executors), and
a failed cell never stops the suite. When the suite ends, for whatever reason,
no run under its parent is left RUNNING (:func:`close_suite`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness import __version__
from harness.cell import distributed
from harness.cell.provenance import suite_tags
from harness.cell.record import close_orphan, tuning_role
from harness.cell.runner import CellResult, resolve_device
from harness.errors import UsageError
from harness.host import Host, get_host
from harness.recovery import diskfull
from harness.recovery.interrupt import InterruptGuard
from harness.recovery.resume import Resume
from harness.recovery.signals import deferred
from harness.run import preflight
from harness.run.executors import (
    CellOutcome,
    Executor,
    ProcessTracker,
    build_executor,
    check_tracking_uri,
)
from harness.run.figures import FigureDrawer
from harness.run.options import RunOptions, executor_choice
from harness.run.rerun import check_rerun
from harness.run.selection import parse_shard, select_cells, select_shard
from harness.suite import Cell, Suite
from harness.suite.claims import ClaimResult, check_claims
from harness.tracking import Tracker, git_commit, guarded, tags_for

__all__ = ["CellResult", "RunOptions", "SuiteResult", "choose_executor", "close_suite", "parse_shard",
           "plan_cells", "record_claims", "resolve_device", "run_suite", "select_cells", "select_shard",
           "start_parent"]


@dataclass
class SuiteResult:
    suite: Suite
    cells: list[CellResult]
    claims: list[ClaimResult]
    parent_run_id: str | None = None

    @property
    def failed(self) -> list[CellResult]:
        return [c for c in self.cells if c.status not in ("FINISHED", "SKIPPED")]

    @property
    def failed_claims(self) -> list[ClaimResult]:
        return [c for c in self.claims if c.passed is False]


# -- before anything is recorded -----------------------------------------------------------------

def choose_executor(host: Host, suite: Suite, options: RunOptions, uri: str,
                    default: str | None = None, torchrun: bool = False) -> Executor:
    """The executor the layers name (harness.run.options), built and checked against the store."""
    choice = executor_choice(suite.data.get("executor"), options, *(default,) if default else ())
    if torchrun:  # every rank trains in its own process already
        if options.resume or (options.jobs or 1) > 1 or choice[0] not in ("local", "processes"):
            raise UsageError("under torchrun cells run in the ranks: no --resume, --jobs or --executor")
        choice = ("local", {})
    executor = build_executor(host, *choice)
    executor.host = host  # an in-process executor builds cells with the suite's own plugins
    check_tracking_uri(executor, uri)
    return executor


def open_tracker(uri: str | None) -> Tracker:
    """The control process's store (reached once, so a dead server fails within seconds)."""
    tracker: Any = ProcessTracker(uri) if distributed.is_main() else distributed.NullTracker(uri)
    tracker.check()
    return tracker


# -- the parent run ----------------------------------------------------------------------------------

def start_parent(tracker: Tracker, host: Host, suite: Suite, cells: list[Cell], methods: list[str] | None,
                 options: RunOptions, executor: str, extra: tuple[tuple[str, Any], ...] = ()) -> str:
    """The suite's parent run, tagged with what was asked (every cell is nested under it)."""
    tags = tags_for([
        ("kind", "suite"), ("suite", suite.name), ("suite_version", suite.version),
        ("profile", suite.profile), ("version", __version__), ("git_commit", git_commit()),
        ("device", str(distributed.local_device(resolve_device(options.device)))), ("cells", len(cells)),
        ("shard", "/".join(map(str, options.shard)) if options.shard else "1/1"),
        ("executor", executor), *extra,
    ])
    tags.update(suite_tags(host, suite))  # primary metric, directions (harness.cell.provenance)
    parent = tracker.start_run(suite.name, f"{suite.name}-{suite.profile}", tags)
    tracker.log_params(parent, {"suite.path": str(suite.path), "suite.profile": suite.profile,
                                "methods": ",".join(methods or []) or "all"})
    return parent


def plan_cells(tracker: Tracker, suite: Suite, cells: list[Cell], options: RunOptions, root: Path,
               host: Host | None = None) -> tuple[list[CellResult], list[tuple[Cell, Resume | None]]]:
    """With ``--resume``: dead runs are closed KILLED, finished cells become SKIPPED results,
    the rest carry how to continue."""
    if not options.resume:
        return [], [(cell, None) for cell in cells]
    from harness.recovery.resume import close_dead_runs, finished_metrics, plan

    for run in close_dead_runs(tracker, suite.name):
        print(f"harness: closed {run.name} ({run.run_id}) KILLED: its process is gone", file=sys.stderr)
    decisions = plan(tracker, suite.name, cells, root)
    if host is not None:  # plugin code changed since a cell's earlier run (harness.run.codechange)
        from harness.run import codechange

        codechange.apply(host, cells, decisions, options.resume_across_code_change)
    skipped, todo = [], []
    for cell in cells:
        decision = decisions[cell.config_hash]
        if decision.action == "skip":
            skipped.append(CellResult(cell, "SKIPPED", finished_metrics(decision.run),
                                      run_id=decision.previous_run_id))
        else:
            todo.append((cell, decision))
    return skipped, todo


def cell_options(options: RunOptions, executor: Executor) -> dict[str, Any]:
    """What every cell of this run is told (plain data for its spec)."""
    inline = executor.name == "local"
    return {"device": options.device, "data_root": str(options.data_root) if options.data_root else None,
            "progress": options.progress and inline and distributed.is_main(), "ignore_sigint": not inline}


# -- the whole run ----------------------------------------------------------------------------------

def run_suite(suite: Suite, methods: list[str] | None = None, options: RunOptions | None = None,
              host: Host | None = None) -> SuiteResult:
    """Run every cell of ``suite`` (this shard's) on the chosen executor, record them, check the claims."""
    options, host = options or RunOptions(), host or get_host()
    cells = select_cells(host, suite, methods, options.shard, options.bits)
    torchrun = distributed.init_from_env()  # every rank trains, rank 0 records (harness.cell.distributed)
    options = replace(options, progress=options.progress and distributed.is_main())
    uri = _resolve(options.tracking_uri)
    executor = choose_executor(host, suite, options, uri, torchrun=torchrun)
    tracker = open_tracker(uri)
    preflight.check(host, suite, cells, options, tracker)  # writable folders, data there: else exit 2
    if distributed.is_main():  # recorded cells this run would redo, or a --resume that matches none
        check_rerun(tracker, suite, cells, options.resume, uri)
    results: list[CellResult] = []
    with InterruptGuard():  # a signal here raises Interrupted (exit 130/143); cells handle their own
        try:
            parent = start_parent(tracker, host, suite, cells, methods, options, executor.name)
        except Exception as exc:
            if not diskfull.refused(tracker, None, exc):
                raise
            raise diskfull.store_full(tracker, suite, None, results, len(cells)) from None
        claims = run_cells(tracker, executor, suite, cells, parent, options, host, results)
    order = {c.config_hash: i for i, c in enumerate(cells)}
    results.sort(key=lambda r: order[r.cell.config_hash])
    distributed.finish()
    return SuiteResult(suite, results, claims, parent)


def run_cells(tracker: Tracker, executor: Executor, suite: Suite, cells: list[Cell], parent: str,
              options: RunOptions, host: Host, results: list[CellResult]) -> list[ClaimResult]:
    """Plan and dispatch the cells under ``parent``; however it ends, close every run. A store
    whose disk is full stops the suite with :class:`harness.recovery.diskfull.StoreFull`."""
    from harness.recovery.checkpoint import checkpoint_root

    status = "FAILED"
    try:
        skipped, todo = plan_cells(tracker, suite, cells, options, checkpoint_root(tracker.uri), host)
        results.extend(skipped)
        dispatch(executor, suite, todo, parent, tracker.uri, options, results, tracker)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        report_interrupted(results)
        raise
    except Exception as exc:
        if not diskfull.refused(tracker, parent, exc):
            raise
        status = "FULL"  # closing would fail the same way: store_full closes what it can
        raise diskfull.store_full(tracker, suite, parent, results, len(cells)) from None
    finally:
        if status != "FULL":
            with deferred():  # closing is never cut short by a second Ctrl-C
                claims = close_full_aware(tracker, suite, parent, results, status, len(cells))
    return claims


def close_full_aware(tracker: Tracker, suite: Suite, parent: str, results: list[CellResult], status: str,
                     total: int) -> list[ClaimResult]:
    """:func:`close_suite`, turning a store that fills up while closing into the one-line stop."""
    try:
        return close_suite(tracker, suite, parent, results, status)
    except Exception as exc:
        if not diskfull.refused(tracker, None, exc):
            raise
        raise diskfull.store_full(tracker, suite, parent, results, total) from None


def _resolve(uri: str | None) -> str:
    from harness.tracking import resolve_uri

    return resolve_uri(uri)


def dispatch(executor: Executor, suite: Suite, todo: list[tuple[Cell, Resume | None]], parent: str,
             uri: str, options: RunOptions, results: list[CellResult], tracker: Tracker | None = None) -> None:
    """Send the cells to the executor; each outcome becomes a :class:`CellResult` as it ends.

    With ``tracker``: a cell that failed for want of disk space stops the suite when the store
    itself cannot be written any more (:func:`harness.recovery.diskfull.refused`)."""
    from harness.run.specs import cell_specs

    if not todo:
        return
    by_hash = {cell.config_hash: cell for cell, _ in todo}
    specs = cell_specs(suite, todo, parent, uri, cell_options(options, executor))
    progress = _progress(options, suite, executor, len(specs))
    drawer = FigureDrawer(uri)

    def collect(outcome: CellOutcome) -> None:
        cell = by_hash[outcome.cell_hash]
        results.append(CellResult(cell, outcome.status, dict(outcome.metrics), dict(outcome.unavailable),
                                  error=outcome.error, run_id=outcome.run_id, seconds=outcome.seconds))
        if outcome.status == "FINISHED" and outcome.run_id and tuning_role(cell.config) != "trial":
            drawer.submit(outcome.run_id, cell.run_name)
        if progress is not None:
            progress.update(1)
            progress.set_postfix_str(f"{cell.run_name} {outcome.status}")
        if tracker is not None and outcome.status != "FINISHED" and diskfull.refused(tracker, parent, outcome.error):
            raise diskfull.FullStoreSeen(outcome.error or "")

    finished = False
    try:
        executor.run(specs, collect)
        finished = True
    finally:
        drawer.close(wait=finished)
        if progress is not None:
            progress.close()


def _progress(options: RunOptions, suite: Suite, executor: Executor, total: int) -> Any:
    if not options.progress or not distributed.is_main():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"{suite.name} ({suite.profile}, {executor.name})", unit="cell",
                dynamic_ncols=True)


def report_interrupted(results: list[CellResult]) -> None:
    """Say exactly what each interrupted cell saved (read back from its run and the disk)."""
    for r in results:
        if r.status == "KILLED" or "interrupted" in (r.error or ""):
            print(f"harness: {r.cell.run_name} {r.status}: {r.error or 'interrupted'}", file=sys.stderr)


# -- closing ------------------------------------------------------------------------------------------

def close_suite(tracker: Tracker, suite: Suite, parent: str, results: list[CellResult], status: str
                ) -> list[ClaimResult]:
    """Claims over the finished cells, then no run left RUNNING, then the parent closed."""
    done = [r.record() for r in results if r.status in ("FINISHED", "SKIPPED")]
    claims = check_claims(suite.claims, done) if distributed.is_main() else []
    record_claims(tracker, parent, claims)
    if status != "KILLED":  # an interrupted suite exits at once; its --resume draws what it skipped
        draw_figures(tracker, results)
    swept = close_orphans(tracker, suite.name, parent, "KILLED" if status == "KILLED" else "FAILED")
    failed = [r for r in results if r.status not in ("FINISHED", "SKIPPED")]
    tracker.set_tags(parent, {"harness.failed_cells": str(len(failed) + swept),
                              "harness.skipped_cells": str(sum(r.status == "SKIPPED" for r in results))})
    tracker.end_run(parent, "FAILED" if (failed or swept) and status == "FINISHED" else status)
    return claims


def draw_figures(tracker: Tracker, results: list[CellResult]) -> None:
    """The figures of cells skipped by ``--resume`` that were never drawn (an interrupted suite
    left them): :class:`harness.run.figures.FigureDrawer` drew this run's finished cells as they
    ended. Never a trial's (no page shows one). A figure that cannot be drawn is a warning."""
    from harness.cell.plots import draw_recorded  # matplotlib: only the suite's process draws

    if not distributed.is_main():
        return
    for r in results:
        if r.status == "SKIPPED" and r.run_id and tuning_role(r.cell.config) != "trial":
            guarded(f"drawing the figures of {r.cell.run_name}", lambda r=r: draw_recorded(tracker, r.run_id))


def close_orphans(tracker: Tracker, experiment: str, parent: str, status: str) -> int:
    """End every run under ``parent`` still RUNNING (its process died unrecorded); returns how many."""
    if not distributed.is_main():
        return 0
    left = tracker.runs(experiment, f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'")
    for run in left:
        close_orphan(tracker, run.info.run_id, status)
    return len(left)


def record_claims(tracker: Tracker, run_id: str, claims: list[ClaimResult]) -> None:
    records = [c.record() for c in claims]  # harness.suite.claims: status, expect, reason, held, error
    guarded("saving claims.json", lambda: tracker.log_json(run_id, records, "claims.json"))  # never aborts closing
    tracker.log_metrics(run_id, {f"claim/{c.claim.id}": c.observed for c in claims if c.observed is not None})
    tracker.set_tags(run_id, {f"harness.claim.{c.claim.id}": c.status for c in claims})
