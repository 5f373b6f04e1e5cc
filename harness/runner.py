"""Runs a suite: cells one after another, each an MLflow run; a failed cell never stops the suite."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness import __version__, distributed
from harness.build import check_suite
from harness.cell import CellResult, CellRunner, resolve_device
from harness.claims import ClaimResult, check_claims
from harness.errors import UsageError
from harness.host import Host, get_host
from harness.options import RunOptions
from harness.provenance import suite_tags
from harness.resume import Resume
from harness.suite import Cell, Suite
from harness.tracking import Tracker, git_commit, tags_for

__all__ = ["CellResult", "CellRunner", "RunOptions", "SuiteResult", "parse_shard", "resolve_device",
           "run_suite", "select_shard"]


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


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: this process runs cells 2, 6, 10, ... (1-based)."""
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard expects I/N such as 1/4, got {text!r}") from None
    if not 1 <= i <= n:
        raise UsageError(f"--shard {text}: I must be between 1 and N")
    return i, n


def select_shard(cells: list[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    if shard is None:
        return cells
    i, n = shard
    return cells[i - 1 :: n]


def run_suite(
    suite: Suite,
    methods: list[str] | None = None,
    options: RunOptions | None = None,
    host: Host | None = None,
) -> SuiteResult:
    """Run every cell of ``suite`` (this shard's), record them, then check the claims."""
    options = options or RunOptions()
    host = host or get_host()
    cells = suite.cells(methods)
    check_suite(host, suite, cells)
    cells = select_shard(cells, options.shard)
    if distributed.init_from_env():  # under torchrun: every rank trains, rank 0 records
        if options.resume or options.jobs > 1:
            raise UsageError("--resume and --jobs are not supported under torchrun")
        options = replace(options, progress=options.progress and distributed.is_main())
    tracker = Tracker(options.tracking_uri) if distributed.is_main() else distributed.NullTracker(
        options.tracking_uri)
    tracker.check()
    runner = CellRunner(host, suite, tracker, options)
    parent_tags = tags_for([
        ("kind", "suite"), ("suite", suite.name), ("suite_version", suite.version),
        ("profile", suite.profile), ("version", __version__), ("git_commit", git_commit()),
        ("device", str(runner.device)), ("cells", len(cells)),
        ("shard", "/".join(map(str, options.shard)) if options.shard else "1/1"),
    ])
    parent_tags.update(suite_tags(host, suite))  # primary metric, directions (harness.provenance)
    parent = tracker.start_run(suite.name, f"{suite.name}-{suite.profile}", parent_tags)
    tracker.log_params(parent, {"suite.path": str(suite.path), "suite.profile": suite.profile,
                                "methods": ",".join(methods or []) or "all"})
    results, todo = plan_cells(tracker, suite, cells, options, runner.checkpoint_root)
    status = "FINISHED"
    try:
        with runner.guard:  # SIGINT/SIGTERM: checkpoint, KILLED, exit 130/143 (harness.interrupt)
            if options.jobs > 1:
                from harness.parallel import run_parallel

                results += run_parallel(suite, todo, options, parent)
            else:
                iterator: Any = todo
                if options.progress:
                    from tqdm.auto import tqdm

                    iterator = tqdm(todo, desc=f"{suite.name} ({suite.profile})", unit="cell",
                                    dynamic_ncols=True)
                for cell, resume in iterator:
                    results.append(runner.run(cell, parent=parent, resume=resume))
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        done = [r.record() for r in results if r.status in ("FINISHED", "SKIPPED")]
        claims = check_claims(suite.claims, done) if distributed.is_main() else []
        record_claims(tracker, parent, claims)
        failed = [r for r in results if r.status not in ("FINISHED", "SKIPPED")]
        tracker.set_tags(parent, {"harness.failed_cells": str(len(failed)),
                                  "harness.skipped_cells": str(sum(r.status == "SKIPPED" for r in results))})
        tracker.end_run(parent, "FAILED" if failed and status == "FINISHED" else status)
    order = {c.config_hash: i for i, c in enumerate(cells)}
    results.sort(key=lambda r: order[r.cell.config_hash])
    distributed.finish()
    return SuiteResult(suite, results, claims, parent)


def plan_cells(tracker: Tracker, suite: Suite, cells: list[Cell], options: RunOptions, root: Path
               ) -> tuple[list[CellResult], list[tuple[Cell, Resume | None]]]:
    """With ``--resume``: finished cells become SKIPPED results, the rest carry how to continue."""
    if not options.resume:
        return [], [(cell, None) for cell in cells]
    from harness.resume import finished_metrics, plan

    decisions = plan(tracker, suite.name, cells, root)
    skipped, todo = [], []
    for cell in cells:
        decision = decisions[cell.config_hash]
        if decision.action == "skip":
            skipped.append(CellResult(cell, "SKIPPED", finished_metrics(decision.run),
                                      run_id=decision.previous_run_id))
        else:
            todo.append((cell, decision))
    return skipped, todo


def record_claims(tracker: Tracker, run_id: str, claims: list[ClaimResult]) -> None:
    tracker.log_json(run_id, [
        {"id": c.claim.id, "text": c.claim.text, "check": c.claim.describe(), "status": c.status,
         "observed": c.observed, "n": c.n, "values": list(c.values)} for c in claims
    ], "claims.json")
    tracker.log_metrics(run_id, {f"claim/{c.claim.id}": c.observed for c in claims if c.observed is not None})
    tracker.set_tags(run_id, {f"harness.claim.{c.claim.id}": c.status for c in claims})
