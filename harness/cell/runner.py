"""One cell: build, train, evaluate and record it into one MLflow run.

The suite lifecycle (:mod:`harness.run.lifecycle`) decides which cells run and where;
this module is what runs a single cell wherever it is sent. What the run holds is
said, and written, in :mod:`harness.cell.record`.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from harness.cell import distributed, stages
from harness.cell.record import CellRecord
from harness.errors import UsageError
from harness.host import Host
from harness.recovery.checkpoint import checkpoint_root
from harness.recovery.interrupt import InterruptGuard
from harness.recovery.resume import Resume
from harness.suite import Cell, Suite
from harness.tracking import Tracker

if TYPE_CHECKING:  # what was asked (harness.run.options): read here, decided above the cell
    from harness.run.options import RunOptions


@dataclass
class CellResult:
    cell: Cell
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    run_id: str | None = None
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        return {"key": self.cell.key, "metrics": self.metrics, "status": self.status}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


@contextmanager
def intra_op_threads(threads: int, device: torch.device) -> Iterator[None]:
    """Run a cell with ``train.threads`` CPU threads (0: PyTorch's default), then restore.

    The toy suites set 1: their 2D batches gain nothing from a thread pool, and
    on a busy machine (pytest-xdist workers, ``--jobs``) idle pool threads spin
    and slow every step many times over.
    """
    previous = torch.get_num_threads()
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class CellRunner:
    """Trains and evaluates one cell into one MLflow run."""

    def __init__(self, host: Host, suite: Suite, tracker: Tracker, options: RunOptions) -> None:
        self.host, self.suite, self.tracker, self.options = host, suite, tracker, options
        self.device = distributed.local_device(resolve_device(options.device))
        self.guard = InterruptGuard()  # run_suite enters it; unentered it never fires
        self.checkpoint_root = checkpoint_root(tracker.uri)

    def run(self, cell: Cell, parent: str | None = None, resume: Resume | None = None) -> CellResult:
        start = time.perf_counter()
        record = CellRecord.open(self.tracker, self.host, self.suite, cell, self.device, parent)
        run_id = record.run_id
        if resume is not None:  # --resume: another --resume on this store may hold the cell
            taken = self._claimed(cell, run_id, start)
            if taken is not None:
                return taken
        try:
            with intra_op_threads(cell.config["train"].get("threads", 0), self.device):
                result = self._train_and_evaluate(cell, record, resume)
        except KeyboardInterrupt:
            record.killed()
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            record.failed(error, traceback.format_exc())
            return CellResult(cell, "FAILED", error=error, run_id=run_id, seconds=time.perf_counter() - start)
        record.finished()
        result.run_id, result.seconds = run_id, time.perf_counter() - start
        return result

    def _claimed(self, cell: Cell, run_id: str, start: float) -> CellResult | None:
        """``None`` when this process may train the cell; else it gives way (harness.recovery.claim)."""
        import sys

        from harness.recovery import claim
        from harness.recovery.resume import finished_metrics

        other = claim.rival(self.tracker, self.suite.name, cell.config_hash, run_id)
        if other is None:
            return None
        claim.give_way(self.tracker, run_id)
        note = claim.describe(other)
        print(f"harness: {cell.run_name} SKIPPED: {note}", file=sys.stderr)
        metrics = finished_metrics(other) if other.info.status == "FINISHED" else {}
        return CellResult(cell, "SKIPPED", metrics, error=note, run_id=other.info.run_id,
                          seconds=time.perf_counter() - start)

    def _train_and_evaluate(self, cell: Cell, record: CellRecord, resume: Resume | None = None) -> CellResult:
        """build -> train -> evaluate -> record (:mod:`harness.cell.stages`)."""
        built = stages.build(self, cell, record)
        stages.resume_into(self, built, resume)
        stages.train(self, built)
        if not distributed.is_main():  # rank 0 checkpoints, evaluates and records
            self.guard.raise_if_requested()
            return CellResult(cell, "FINISHED")
        stages.keep_trained_state(self, built)
        result = stages.evaluate(self, built)
        stages.record(self, built, result)
        return CellResult(cell, "FINISHED", result.values, result.unavailable)
