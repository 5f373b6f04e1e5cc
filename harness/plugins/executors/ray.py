"""``ray``: one Ray task per cell, on an existing cluster (``address``) or a local one.

Each task runs :func:`~harness.contracts.run_cell` on a :class:`~harness.contracts.CellSpec`
in a Ray worker, with ``num_cpus`` / ``num_gpus`` reserved per cell, and records into
the tracking URI (a ``harness server``; ``sqlite:///`` only with ``allow_sqlite=true``
on a shared file system). Without ``address`` a local cluster is started for the
suite and stopped with :func:`ray.shutdown` at its end (never ``ray stop``, which
kills Ray processes machine-wide by name); token authentication is off for it
(``RAY_AUTH_MODE=disabled``, else Ray writes a token under the home folder).

Failure semantics:

* retries are off (``max_retries=0``, settable): a worker that dies (``os._exit``,
  the OOM killer, a lost node) is recorded FAILED by
  :func:`~harness.contracts.record_lost` with Ray's reason (``WorkerCrashedError: ...``);
* Ctrl-C in the submitting process cancels every task with :func:`ray.cancel`, which
  interrupts running ones with SIGINT: the cell's guard stops at the next step,
  checkpoints and records KILLED; after ``CANCEL_WAIT_S`` the rest are force-cancelled
  and recorded KILLED. ``--resume`` continues them from their checkpoints.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

from harness.contracts import CellOutcome, CellSpec, Executor, ProcessTracker, lost_outcome
from harness.errors import UsageError

CANCEL_WAIT_S = 60.0
WAIT_S = 1.0


class RayExecutor(Executor):
    """Cells as Ray tasks; ``num_cpus``/``num_gpus`` are each cell's reservation."""

    name: ClassVar[str] = "ray"
    remote: ClassVar[bool] = True
    option_types: ClassVar[dict[str, type]] = {"address": str, "num_cpus": float, "num_gpus": float,
                                               "max_retries": int, "cluster_cpus": int}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.num_cpus = float(options.get("num_cpus", 1.0))
        self.num_gpus = float(options.get("num_gpus", 0.0))
        self.max_retries = int(options.get("max_retries", 0))
        if self.num_cpus < 0 or self.num_gpus < 0 or self.max_retries < 0 or options.get("cluster_cpus", 1) < 1:
            raise UsageError("executor ray: num_cpus, num_gpus and max_retries must be >= 0, cluster_cpus >= 1")
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError("the ray executor needs Ray: pip install 'vq-harness[ray]'") from None

    def run(self, specs: list[CellSpec], on_outcome: Callable[[CellOutcome], None]) -> None:
        if not specs:
            return
        import ray

        owned = self._connect(ray)
        try:
            self._run(ray, specs, on_outcome)
        finally:
            if owned:
                shutdown(ray)

    def _connect(self, ray: Any) -> bool:
        """Join ``address`` or start a local cluster; True when this executor must shut it down."""
        if ray.is_initialized():
            return False
        address = self.options.get("address") or "local"
        kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "logging_level": "WARNING"}
        if address == "local":
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            kwargs["num_cpus"] = int(self.options.get("cluster_cpus") or os.cpu_count() or 1)
        ray.init(**kwargs)
        return True

    def _run(self, ray: Any, specs: list[CellSpec], on_outcome: Callable[[CellOutcome], None]) -> None:
        from harness.contracts import checkpoint_root

        threads = str(max(1, int(self.num_cpus)))
        env = {"HARNESS_CHECKPOINT_DIR": str(checkpoint_root(specs[0].tracking_uri)), "OMP_NUM_THREADS": threads}
        task = ray.remote(ray_cell)
        options = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "max_retries": self.max_retries,
                   "retry_exceptions": False, "runtime_env": {"env_vars": env}}
        pending = {task.options(name=spec.run_name, **options).remote(spec): spec for spec in specs}
        print(f"harness: submitted {len(pending)} Ray tasks (one per cell, {self.num_cpus:g} CPU, "
              f"{self.num_gpus:g} GPU each)", file=sys.stderr)
        tracker = ProcessTracker(specs[0].tracking_uri)
        try:
            while pending:
                self._collect(ray, pending, tracker, on_outcome)
        except KeyboardInterrupt:
            self._cancel(ray, pending, tracker, on_outcome)
            raise

    def _collect(self, ray: Any, pending: dict[Any, CellSpec], tracker: Any,
                 on_outcome: Callable[[CellOutcome], None], timeout: float = WAIT_S) -> None:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        for ref in ready:
            on_outcome(task_outcome(ray, ref, pending.pop(ref), tracker))

    def _cancel(self, ray: Any, pending: dict[Any, CellSpec], tracker: Any,
                on_outcome: Callable[[CellOutcome], None]) -> None:
        """Ctrl-C: interrupt every task (SIGINT: checkpoint, KILLED), then force the stragglers."""
        import time

        from harness.contracts import deferred

        for ref in pending:
            ray.cancel(ref, force=False)
        deadline = time.monotonic() + CANCEL_WAIT_S
        try:
            while pending and time.monotonic() < deadline:
                self._collect(ray, pending, tracker, on_outcome)
        except KeyboardInterrupt:  # interrupted twice: stop waiting
            pass
        with deferred():
            for ref, spec in pending.items():
                ray.cancel(ref, force=True)
                reason = "Ray task force-cancelled (ray.cancel) when the submitting process was interrupted"
                on_outcome(_lost(spec, "KILLED", reason, ref, tracker))
        pending.clear()


def shutdown(ray: Any) -> None:
    """:func:`ray.shutdown` with no garbage collection while it runs.

    Ray shuts the driver's core worker down before it drops the Python handle to it; an
    ``ObjectRef`` freed in between calls into the stopped worker, and Ray ends the whole
    process (``quick_exit``) before the suite prints its summary or closes its runs. Another
    thread of this process (the figure drawer) can trigger that collection at any time, so
    the garbage is collected first, while the worker is up, and collection waits until the
    shutdown has returned.
    """
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        ray.shutdown()
    finally:
        if enabled:
            gc.enable()


def task_outcome(ray: Any, ref: Any, spec: CellSpec, tracker: Any) -> CellOutcome:
    """The cell's outcome from its ended task; a task without a result is recorded lost (Ray's reason)."""
    errors = ray.exceptions
    try:
        outcome = ray.get(ref)
    except errors.TaskCancelledError as exc:
        return _lost(spec, "KILLED", f"TaskCancelledError: {_first_line(exc)}", ref, tracker)
    except errors.RayTaskError as exc:  # run_cell raised outside the cell's own handling
        cause = getattr(exc, "cause", None) or exc
        return _lost(spec, "FAILED", f"{type(cause).__name__}: {_first_line(cause)}", ref, tracker)
    except errors.RayError as exc:  # WorkerCrashedError, OutOfMemoryError, NodeDiedError, ...
        return _lost(spec, "FAILED", f"{type(exc).__name__}: {_first_line(exc)}", ref, tracker)
    _tag(tracker, outcome.run_id, ref)
    return outcome


def _lost(spec: CellSpec, status: str, reason: str, ref: Any, tracker: Any) -> CellOutcome:
    return lost_outcome(spec, status, reason, log_path=_logs_dir(), tags=_tags(ref))


def _tags(ref: Any) -> dict[str, str]:
    """Where the task ran and logged, for the cell's run."""
    tags = {"harness.ray.task_id": ref.task_id().hex()}
    logs = _logs_dir()
    if logs:
        tags["harness.log"] = logs
    return tags


def _tag(tracker: Any, run_id: str | None, ref: Any) -> None:
    if run_id:
        tracker.set_tags(run_id, _tags(ref))


def _logs_dir() -> str | None:
    """The Ray session's log folder (worker-*.out/err, python-core-worker-*.log), when known here."""
    try:
        from ray._private.worker import global_worker

        return global_worker.node.get_logs_dir_path()
    except Exception:  # noqa: BLE001 - a private API; the tag is a convenience
        return None


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:2000] if lines else type(exc).__name__


def ray_cell(spec: CellSpec) -> CellOutcome:
    """One cell in a Ray worker. SIGINT (``ray.cancel``) reaches the cell's guard: checkpoint, KILLED."""
    import torch

    from harness.contracts import run_cell

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    spec = replace(spec, options={**spec.options, "ignore_sigint": False})
    try:
        return run_cell(spec)
    except KeyboardInterrupt as exc:
        return getattr(exc, "outcome", None) or CellOutcome(spec.cell_hash, "KILLED", error="interrupted")
