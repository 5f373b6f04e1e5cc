"""``slurm``: one SLURM job (an element of one job array) per cell, submitted through submitit.

Each job unpickles a :class:`~harness.contracts.CellSpec` and calls
:func:`~harness.contracts.run_cell` on a compute node, recording into the
tracking URI (a ``harness server``; a ``sqlite:///`` store only with
``allow_sqlite=true`` on a shared file system). The submitting process polls
``sacct`` (through submitit; accounting through ``slurmdbd`` is required: without
it a job that dies without a result is never seen to end) and, as each job ends,
tags the cell's run with ``harness.slurm.job_id``, ``harness.log`` (stdout) and
``harness.slurm.stderr``.

Failure semantics:

* a job that dies without a result (``os._exit``, OOM kill, node failure, time
  limit, ``scancel``) is recorded by :func:`~harness.contracts.record_lost` with
  the state and exit code ``sacct`` gives and the tail of its error log:
  CANCELLED, TIMEOUT, PREEMPTED and DEADLINE are KILLED, the rest FAILED; it is
  recorded only once ``squeue`` has not listed it for ``SETTLE_S`` (a job being
  requeued can look FAILED in ``sacct`` for a moment);
* SIGTERM in the job (``scancel``, preemption) reaches the cell's interrupt guard:
  it stops at the next step, saves a checkpoint and records KILLED;
* the preemption/time-limit signal submitit asks for (``--signal=USR2@N``) does the
  same, then submitit requeues the job (:meth:`SlurmCell.checkpoint`); the requeued
  job (also one requeued by SLURM itself, ``SLURM_RESTART_COUNT`` > 0) continues
  the cell from its checkpoint in a new run tagged ``harness.resumed_from``;
* Ctrl-C in the submitting process cancels every job (``scancel``), waits up to
  ``CANCEL_WAIT_S`` for them to checkpoint and record KILLED, and records the
  rest KILLED itself.

A cell with ``tasks_per_cell`` > 1 (by default ``gpus_per_cell``) runs one task per
rank in its job; each joins the process group like under ``torchrun`` (DDP, rank 0
records; ``harness.contracts.init_ranks_from_env``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from harness.contracts import (
    CellOutcome,
    CellSpec,
    Executor,
    ProcessTracker,
    freeze_for_exit,
    lost_outcome,
    record_lost,
)
from harness.errors import UsageError

DEFAULT_TIME_MIN = 60
DEFAULT_FOLDER = "harness-slurm"
POLL_S = 5.0
CANCEL_WAIT_S = 60.0
SETTLE_S = 15.0  # a job ended without a result is recorded lost only after this long out of the queue
KILLED_STATES = ("CANCELLED", "TIMEOUT", "PREEMPTED", "DEADLINE")
ENDED_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "DEADLINE", "NODE_FAIL", "OUT_OF_MEMORY",
                "BOOT_FAIL")  # squeue lists an ended job a few minutes more; PREEMPTED may still requeue


class SlurmExecutor(Executor):
    """Cells as SLURM jobs (submitit); options are the ``sbatch`` request of one cell."""

    name: ClassVar[str] = "slurm"
    remote: ClassVar[bool] = True
    option_types: ClassVar[dict[str, type]] = {
        "partition": str, "time": int, "gpus_per_cell": int, "tasks_per_cell": int,
        "cpus_per_cell": int, "mem_gb": float, "account": str, "constraint": str,
        "sbatch": list, "setup": list, "folder": str, "max_requeues": int, "poll": float,
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.time = int(options.get("time", DEFAULT_TIME_MIN))
        self.gpus = int(options.get("gpus_per_cell", 0))
        self.tasks = int(options.get("tasks_per_cell") or max(1, self.gpus))
        self.cpus = int(options.get("cpus_per_cell", self.tasks))
        self.poll = float(options.get("poll", POLL_S))
        if self.time < 1 or self.gpus < 0 or self.tasks < 1 or self.cpus < self.tasks or self.poll <= 0:
            raise UsageError("executor slurm: time >= 1 (minutes), gpus_per_cell >= 0, tasks_per_cell >= 1, "
                             "cpus_per_cell >= tasks_per_cell and poll > 0")
        if options.get("mem_gb") is not None and float(options["mem_gb"]) <= 0:
            raise UsageError("executor slurm: mem_gb must be > 0")
        self.extra = sbatch_parameters(options.get("sbatch") or [])
        self._unheld_since: dict[str, float] = {}
        _require_submitit()

    # -- submitting ---------------------------------------------------------------------------------

    def parameters(self, suite: str, uri: str) -> dict[str, Any]:
        """submitit's ``SlurmExecutor`` parameters for every cell of this run."""
        o = self.options
        params: dict[str, Any] = {
            "time": self.time, "job_name": f"harness-{suite}", "ntasks_per_node": self.tasks, "nodes": 1,
            "cpus_per_task": max(1, self.cpus // self.tasks), "setup": self.setup_lines(uri),
            "signal_delay_s": min(90, max(30, self.time * 6)), "additional_parameters": self.extra,
        }
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        if o.get("mem_gb") is not None:
            params["mem"] = float(o["mem_gb"])  # submitit writes --mem=<N>GB
        params.update({k: o[k] for k in ("partition", "account", "constraint") if o.get(k)})
        return params

    def setup_lines(self, uri: str) -> list[str]:
        """The user's ``setup`` lines, then what every cell's job needs from this process."""
        from harness.contracts import checkpoint_root

        threads = max(1, self.cpus // self.tasks)
        return [*(self.options.get("setup") or []),
                f"export HARNESS_CHECKPOINT_DIR={_quote(str(checkpoint_root(uri)))}",
                f"export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}"]

    def run(self, specs: list[CellSpec], on_outcome: Callable[[CellOutcome], None]) -> None:
        if not specs:
            return
        import submitit

        folder = run_folder(self.options.get("folder"), specs[0].parent_run_id)
        executor = submitit.SlurmExecutor(folder=folder / "%j",
                                          max_num_timeout=int(self.options.get("max_requeues", 3)))
        executor.update_parameters(**self.parameters(Path(specs[0].suite).stem, specs[0].tracking_uri))
        with executor.batch():
            submitted = [(executor.submit(SlurmCell(), spec), spec) for spec in specs]
        pending = {job.job_id: (job, spec) for job, spec in submitted}
        print(f"harness: submitted {len(pending)} SLURM jobs ({submitted[0][0].job_id.split('_')[0]}, "
              f"one array element per cell); logs in {folder}", file=sys.stderr)
        tracker = ProcessTracker(specs[0].tracking_uri)
        try:
            while pending:
                self._collect(pending, tracker, on_outcome)
                if pending:
                    time.sleep(self.poll)
        except KeyboardInterrupt:
            self._cancel(pending, tracker, on_outcome)
            raise

    # -- collecting ---------------------------------------------------------------------------------

    def _collect(self, pending: dict[str, tuple[Any, CellSpec]], tracker: Any,
                 on_outcome: Callable[[CellOutcome], None]) -> None:
        """Outcomes of the jobs that ended since the last look (one ``sacct`` call for all)."""
        first = next(iter(pending.values()))[0]
        first.watcher.update()
        for job_id, (job, spec) in list(pending.items()):
            if job.done() and self._settled(job):
                del pending[job_id]
                on_outcome(job_outcome(job, spec, tracker))

    def _settled(self, job: Any) -> bool:
        """A job with a result has ended; one without has ended once SLURM's controller has not held
        it for ``SETTLE_S``: a requeue (preemption, or ``scontrol requeue`` racing the job's exit) can
        briefly leave it FAILED in ``sacct`` and the controller before it is PENDING again."""
        if Path(job.paths.result_pickle).exists():
            return True
        now = time.monotonic()
        if still_held(job):
            self._unheld_since.pop(job.job_id, None)
            return False
        return now - self._unheld_since.setdefault(job.job_id, now) >= SETTLE_S

    def _cancel(self, pending: dict[str, tuple[Any, CellSpec]], tracker: Any,
                on_outcome: Callable[[CellOutcome], None]) -> None:
        """Ctrl-C: ``scancel`` every job; each running cell checkpoints and records KILLED itself."""
        from harness.contracts import deferred

        for job, _spec in pending.values():
            job.cancel(check=False)
        deadline = time.monotonic() + CANCEL_WAIT_S
        try:
            while pending and time.monotonic() < deadline:
                self._collect(pending, tracker, on_outcome)
                time.sleep(1.0)
        except KeyboardInterrupt:  # interrupted twice: stop waiting for the jobs
            pass
        with deferred():
            for job, spec in pending.values():
                reason = f"SLURM job {job.job_id} cancelled (scancel) when the submitting process was interrupted"
                on_outcome(_lost(spec, "KILLED", reason, job, tracker))
        pending.clear()


def still_held(job: Any) -> bool:
    """Whether SLURM's controller still holds a job that ended without a result.

    submitit reads ``sacct``; ``slurmdbd`` lags the controller, so a job requeued on preemption can
    show its last attempt as FAILED for a moment and submitit then caches it as done. ``squeue``
    asks the controller itself: a job it still lists (requeued, pending, running) has no outcome yet.
    """
    if Path(job.paths.result_pickle).exists():
        return False
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(job.job_id), "-o", "%T"], capture_output=True,
                             text=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(out) and out[0] not in ENDED_STATES


def job_outcome(job: Any, spec: CellSpec, tracker: Any) -> CellOutcome:
    """The cell's outcome from its ended job; a job without a result is recorded lost (sacct's reason)."""
    try:
        outcome = job.results()[0]  # task 0: rank 0 of a multi-task cell
    except Exception as exc:  # noqa: BLE001 - submitit's UncompletedJobError / FailedJobError
        status, reason = lost_reason(job, exc)
        return _lost(spec, status, reason, job, tracker)
    if outcome.run_id:
        _tag(tracker, outcome.run_id, job)
    if outcome.status == "KILLED":
        state = sacct(job.job_id).get("State", "")
        outcome.error = f"{outcome.error or 'interrupted'} (SLURM job {job.job_id} {state})".strip()
    return outcome


def lost_reason(job: Any, exc: Exception) -> tuple[str, str]:
    """KILLED or FAILED, and why: the job's state and exit code from ``sacct``, its error log's tail."""
    info = sacct(job.job_id)
    state = info.get("State") or "UNKNOWN"
    status = "KILLED" if state.split()[0] in KILLED_STATES else "FAILED"
    if type(exc).__name__ == "FailedJobError":  # the job function raised outside the cell's handling
        text = str(exc).split("You can check full logs", 1)[0]  # submitit's message: the trace, then paths
        trace = [line for line in text.splitlines() if line.strip() and not line.startswith("-")]
        return "FAILED", f"SLURM job {job.job_id}: {trace[-1] if trace else type(exc).__name__}"
    tail = _tail(Path(job.paths.stderr), 3)
    return status, (f"SLURM job {job.job_id} {state} (exit code {info.get('ExitCode', '?')}, sacct)"
                    + (f": {tail}" if tail else ""))


def _lost(spec: CellSpec, status: str, reason: str, job: Any, tracker: Any) -> CellOutcome:
    return lost_outcome(spec, status, reason, log_path=str(job.paths.stdout), tags=_tags(job))


def _tags(job: Any) -> dict[str, str]:
    """The job and its logs, for the cell's run."""
    return {"harness.slurm.job_id": str(job.job_id), "harness.log": str(job.paths.stdout),
            "harness.slurm.stderr": str(job.paths.stderr)}


def _tag(tracker: Any, run_id: str | None, job: Any) -> None:
    if run_id:
        tracker.set_tags(run_id, _tags(job))


def sacct(job_id: str) -> dict[str, str]:
    """``State``, ``ExitCode`` and ``Reason`` of one job (or array element) from SLURM accounting."""
    try:
        out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", job_id, "-o", "State,ExitCode,Reason"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    lines = [line for line in out.splitlines() if line.strip()]
    if not lines:
        return {}
    return dict(zip(("State", "ExitCode", "Reason"), lines[-1].split("|"), strict=False))


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


# -- options ---------------------------------------------------------------------------------------------

def sbatch_parameters(lines: list[str]) -> dict[str, Any]:
    """``["--qos=high", "#SBATCH --exclusive"]`` -> ``{"qos": "high", "exclusive": True}``."""
    out: dict[str, Any] = {}
    for line in lines:
        text = line.strip().removeprefix("#SBATCH").strip()
        if not text.startswith("--") or " " in text.split("=", 1)[0]:
            raise UsageError(f"executor slurm: sbatch lines look like --key=value or --flag, got {line!r}")
        key, sep, value = text[2:].partition("=")
        out[key] = value if sep else True
    return out


def run_folder(base: str | None, parent_run_id: str) -> Path:
    """A fresh folder per suite run: SLURM job ids repeat when a cluster's state is wiped."""
    folder = Path(base or DEFAULT_FOLDER).resolve() / f"{time.strftime('%Y%m%d-%H%M%S')}-{parent_run_id[:8]}"
    folder.mkdir(parents=True, exist_ok=False)
    return folder


def _require_submitit() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UsageError("the slurm executor needs submitit: pip install 'vq-harness[slurm]'") from None
    if shutil.which("sbatch") is None:
        raise UsageError("the slurm executor submits with sbatch, which is not on PATH: run harness where "
                         "SLURM's commands work (a login node)")


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


# -- inside the job --------------------------------------------------------------------------------------

class SlurmCell:
    """What each job runs (pickled by submitit); ``checkpoint`` makes it requeueable (duck-typed
    ``submitit.helpers.Checkpointable``: this module must import without submitit)."""

    def __call__(self, spec: CellSpec, requeued: bool = False) -> CellOutcome:
        outcome = run_in_job(spec, requeued)
        freeze_for_exit()  # the job's process ends once submitit has saved the outcome
        return outcome

    def checkpoint(self, spec: CellSpec, requeued: bool = False) -> Any:
        """Called by submitit on the preemption/time-limit signal, after the cell saved its checkpoint."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, spec, True)


def run_in_job(spec: CellSpec, requeued: bool) -> CellOutcome:
    """Run one cell in this job (each rank of a multi-task cell); requeued: continue it."""
    from harness.contracts import finish_ranks, run_cell

    ranked = _join_ranks()
    try:
        if requeued or int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
            continued = continue_spec(spec)
            if isinstance(continued, CellOutcome):
                return continued
            spec = continued
        with preemption() as preempted:
            try:
                outcome = run_cell(spec)
            except KeyboardInterrupt as exc:
                outcome = getattr(exc, "outcome", None) or CellOutcome(spec.cell_hash, "KILLED",
                                                                        error="interrupted")
        if preempted and outcome.status == "KILLED":
            _requeue(preempted[0])
        return outcome
    finally:
        if ranked:
            finish_ranks()


def _join_ranks() -> bool:
    """A multi-task job: export torchrun's variables from SLURM's and join the process group."""
    if int(os.environ.get("SLURM_NTASKS") or 1) <= 1:
        return False
    from submitit.helpers import TorchDistributedEnvironment

    from harness.contracts import init_ranks_from_env

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return init_ranks_from_env()


@contextlib.contextmanager
def preemption() -> Iterator[list[Any]]:
    """submitit's preemption/time-limit signal (USR2) first stops the cell the way SIGTERM does (at the
    next step: checkpoint, KILLED); the caller then hands it to submitit's handler, which requeues.

    The signal becomes a SIGTERM to this process, so the cell's own handler takes it (postponed
    while a store call runs); before the cell has installed one, the cell stops at once.
    """
    sig = _preempt_signal()
    previous, before = signal.getsignal(sig), signal.getsignal(signal.SIGTERM)
    received: list[Any] = []

    def on_signal(signum: int, frame: Any) -> None:
        from harness.contracts import Interrupted

        received.append(previous)
        if signal.getsignal(signal.SIGTERM) is before:  # no cell handler yet (or any more)
            raise Interrupted(signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(sig, on_signal)
    try:
        yield received
    finally:
        signal.signal(sig, previous)


def _preempt_signal() -> signal.Signals:
    return signal.Signals["SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")]


def _requeue(handler: Any) -> None:
    """Let submitit's own handler checkpoint (:meth:`SlurmCell.checkpoint`), requeue and exit."""
    if callable(handler):
        handler(_preempt_signal(), None)


def continue_spec(spec: CellSpec) -> CellSpec | CellOutcome:
    """A requeued job: the cell's FINISHED outcome if it ended before, else the spec that continues it
    from its checkpoint (or restarts it, closing the dead run KILLED, when there is none)."""
    from harness.contracts import cell_checkpoint, finished_metrics, newest_cell_run

    tracker = ProcessTracker(spec.tracking_uri)
    run = newest_cell_run(tracker, spec)
    if run is not None and run.info.status == "FINISHED":
        return CellOutcome(spec.cell_hash, "FINISHED", run.info.run_id, finished_metrics(run))
    path = cell_checkpoint(spec)
    previous = run.info.run_id if run is not None else None
    if path.is_file():
        return replace(spec, resume={"action": "continue", "previous_run_id": previous, "checkpoint": str(path)})
    if run is not None and run.info.status in ("RUNNING", "SCHEDULED"):
        record_lost(spec, "KILLED", "requeued by SLURM before it saved a checkpoint: restarted")
    return replace(spec, resume=None)
