"""The executor seam, host side: run a :class:`CellSpec` anywhere, close a lost cell's run, build executors.

The suite lifecycle (:mod:`harness.run.lifecycle`) turns each cell into a :class:`CellSpec`
(:mod:`harness.contracts.executor`: plain, picklable data carrying the resolved suite and the
cell's config hash) and hands the list to an :class:`Executor`. Wherever the executor sends a spec
(this process, a worker process, a SLURM job, a Ray task), :func:`run_cell` rebuilds the cell from
the spec's data (never from the suite file), checks its hash, and records it into the same store.
An executor that loses a worker calls :func:`record_lost`, so no run is left RUNNING. Plugins
reach all of this through :mod:`harness.contracts`; the names here stay for plugins written
against the paths docs/hooks.md used to give.
"""

from __future__ import annotations

import math
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.contracts.executor import ALLOW_SQLITE, CellOutcome, CellSpec, CellTimeout, Executor
from harness.errors import UnknownNameError, UsageError
from harness.recovery.interrupt import Interrupted
from harness.recovery.signals import DeferredClient, deferred, describe_exit, guarded, identity
from harness.tracking import Tracker

# what an executor plugin calls, offered by harness.contracts (and here, under the paths docs/hooks.md
# once gave); ``deferred`` and ``describe_exit`` come from harness.recovery.signals
__all__ = ["ALLOW_SQLITE", "CellOutcome", "CellSpec", "CellTimeout", "Executor", "ProcessTracker",
           "Interrupted", "build_executor", "cell_checkpoint", "check_tracking_uri", "checkpoint_root", "deferred",
           "describe_exit", "finish_ranks", "finished_metrics", "init_ranks_from_env", "lost_outcome",
           "newest_cell_run", "record_lost", "run_cell", "saved_note", "set_heartbeat"]


# -- the tracker every process of a suite uses -------------------------------------------------

_heartbeat: Callable[[], None] | None = None


def set_heartbeat(beat: Callable[[], None] | None) -> None:
    """A worker process's watchdog clock: called on every write a cell makes (its progress)."""
    global _heartbeat
    _heartbeat = beat


def _beat() -> None:
    if _heartbeat is not None:
        _heartbeat()


class ProcessTracker(Tracker):
    """A :class:`Tracker` whose store calls defer signals and whose runs name their process.

    The ``harness.pid``/``harness.hostname`` tags let ``--resume`` close a RUNNING
    run whose process is dead; writes beat the worker's no-progress watchdog.
    """

    def __init__(self, uri: str | None = None) -> None:
        super().__init__(uri)
        self.wrap_client(lambda client: DeferredClient(client, on_call=_beat))

    def start_run(self, experiment: str, name: str, tags: dict[str, str], parent: str | None = None) -> str:
        return super().start_run(experiment, name, {**tags, **identity()}, parent)

    def log_metrics(self, run_id: str, values: dict[str, Any], step: int = 0) -> None:
        _beat()
        super().log_metrics(run_id, values, step)


# -- running one cell, anywhere ----------------------------------------------------------------

def load_cell(spec: CellSpec) -> tuple[Any, Any]:
    """The suite and the cell a spec carries, rebuilt from its data (the suite file is not read).

    The rebuilt cell's config hash must be the spec's: a mismatch means the data changed on the
    way (or another harness version built the spec), and training it would record another experiment.
    """
    from harness.errors import HarnessError
    from harness.suite import Suite

    try:
        suite = Suite.from_plain(spec.suite, spec.profile, spec.suite_data)
        cell = suite.cell(*spec.cell_key)
    except (KeyError, TypeError, ValueError) as exc:
        raise HarnessError(f"{spec.run_name}: its CellSpec carries no usable suite data ({type(exc).__name__}: "
                           f"{exc}); build specs with harness.run.specs.cell_specs") from None
    if cell.config_hash != spec.cell_hash:
        raise HarnessError(f"{spec.run_name}: the suite data in its CellSpec gives config hash {cell.config_hash}, "
                           f"not the spec's {spec.cell_hash}: the spec was changed after it was built (or built "
                           f"by another harness version); refusing to train a different experiment")
    return suite, cell


def run_options(spec: CellSpec) -> Any:
    from pathlib import Path

    from harness.run.options import RunOptions

    data_root = spec.options.get("data_root")
    return RunOptions(device=spec.options.get("device", "auto"), tracking_uri=spec.tracking_uri,
                      data_root=Path(data_root) if data_root else None,
                      progress=bool(spec.options.get("progress", False)))


def resume_from(tracker: Tracker, saved: dict | None) -> Any:
    """Rebuild :class:`harness.recovery.resume.Resume` from its plain form."""
    if not saved:
        return None
    from pathlib import Path

    from harness.recovery.resume import Resume

    previous = saved.get("previous_run_id")
    run = tracker.get_run(previous) if previous else None
    checkpoint = saved.get("checkpoint")
    return Resume(saved["action"], run, Path(checkpoint) if checkpoint else None)


@contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Raise :class:`CellTimeout` in the main thread after ``seconds`` (0: never)."""
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise CellTimeout(f"no result within train.timeout = {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, guarded(expire))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _prepare(spec: CellSpec, host: Any = None) -> tuple[Any, Any, Any]:
    """The cell, its tracker (a stand-in on torchrun ranks other than 0) and its runner.

    ``host``: the plugin host to build with (an in-process executor passes the suite's
    own); ``None`` builds it from the entry points, as a fresh process must.
    """
    from harness.cell import distributed
    from harness.cell.runner import CellRunner
    from harness.host import get_host

    if spec.options.get("threads"):  # this worker's share of the cores (train.threads still wins)
        import torch

        torch.set_num_threads(int(spec.options["threads"]))
    suite, cell = load_cell(spec)
    main = distributed.is_main()  # under torchrun only rank 0 records
    tracker: Any = ProcessTracker(spec.tracking_uri) if main else distributed.NullTracker(spec.tracking_uri)
    return cell, tracker, CellRunner(host or get_host(), suite, tracker, run_options(spec))


def run_cell(spec: CellSpec, host: Any = None) -> CellOutcome:
    """Build, train, evaluate and record one cell; runs in any process that can import harness.

    A signal (SIGINT/SIGTERM) raises :class:`harness.recovery.interrupt.Interrupted` with
    ``.outcome`` set (what was saved); ``sys.exit`` and ``train.timeout`` inside the
    cell end it FAILED with the reason.
    """
    from harness.cell import distributed

    start = time.perf_counter()
    cell, tracker, runner = _prepare(spec, host)
    main = distributed.is_main()
    try:
        with runner.guard, alarm(float(cell.config["train"].get("timeout") or 0)):
            if spec.options.get("ignore_sigint"):  # a worker: the control process decides
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            result = runner.run(cell, parent=spec.parent_run_id, resume=resume_from(tracker, spec.resume))
    except KeyboardInterrupt as exc:
        if main:
            exc.outcome = interrupted_outcome(spec, tracker, time.perf_counter() - start)  # type: ignore[attr-defined]
        raise
    except (SystemExit, CellTimeout) as exc:
        return _ended(tracker, spec, exc, time.perf_counter() - start)
    outcome = CellOutcome(spec.cell_hash, result.status, result.run_id, dict(result.metrics), result.error,
                          result.seconds, dict(result.unavailable))
    if runner.guard.requested:  # the signal came while the cell failed on its own: still honour it
        if main and outcome.status != "FINISHED":
            outcome.error = f"{outcome.error}; interrupted; {saved_note(spec)}"
        interrupted = Interrupted(runner.guard.signum or signal.SIGINT)
        interrupted.outcome = outcome  # type: ignore[attr-defined]
        raise interrupted
    return outcome


def _ended(tracker: Tracker, spec: CellSpec, exc: BaseException, seconds: float) -> CellOutcome:
    """``sys.exit`` in the cell, or its timeout outside the cell's own handling: FAILED, with why."""
    reason = (f"the cell called sys.exit({exc.code})" if isinstance(exc, SystemExit)
              else f"CellTimeout: {exc}")
    run_id = _close_lost(tracker, spec, "FAILED", reason, None)
    return CellOutcome(spec.cell_hash, "FAILED", run_id, error=reason, seconds=seconds)


def interrupted_outcome(spec: CellSpec, tracker: Tracker, seconds: float) -> CellOutcome:
    """A KILLED outcome whose ``error`` says exactly what was saved (read back, not assumed)."""
    run = _newest_cell_run(tracker, spec)
    step = run.data.tags.get("harness.checkpoint_step") if run is not None else None
    return CellOutcome(spec.cell_hash, "KILLED", run.info.run_id if run is not None else None,
                       error=f"interrupted; {saved_note(spec, step)}", seconds=seconds)


def cell_checkpoint(spec: CellSpec) -> Path:
    """Where the spec's cell keeps its checkpoint (whether or not one exists yet)."""
    from harness.recovery.checkpoint import checkpoint_path

    return checkpoint_path(checkpoint_root(spec.tracking_uri), spec.suite_name, spec.cell_hash)


def saved_note(spec: CellSpec, step: str | None = None) -> str:
    """What a stopped cell left on disk to continue from, checked on the disk."""
    path = cell_checkpoint(spec)
    if path.is_file() and step:
        return f"checkpoint saved at step {step} ({path})"
    if path.is_file():
        return f"no new checkpoint; an earlier one remains ({path}), --resume continues from it"
    return "no checkpoint saved: --resume runs this cell from the start"


# -- a cell whose worker died --------------------------------------------------------------------

def _newest_cell_run(tracker: Tracker, spec: CellSpec) -> Any:
    """The newest run of this cell under this parent run, or ``None``."""
    runs = tracker.child_runs(spec.parent_run_id, f"tags.`harness.config_hash` = '{spec.cell_hash}'")
    return max(runs, key=lambda r: r.info.start_time or 0) if runs else None


#: the newest run of a spec's cell under its parent run, or ``None`` (an executor's public name for it)
newest_cell_run = _newest_cell_run


def checkpoint_root(tracking_uri: str) -> Path:
    """Where a store's checkpoints live: an executor exports it (``HARNESS_CHECKPOINT_DIR``) to its workers."""
    from harness.recovery import checkpoint

    return checkpoint.checkpoint_root(tracking_uri)


def finished_metrics(run: Any) -> dict[str, float]:
    """A FINISHED run's ``eval/*`` numbers, as its outcome reports them (a requeued job that had ended)."""
    from harness.recovery import resume

    return resume.finished_metrics(run)


def init_ranks_from_env() -> bool:
    """Join torchrun's process group from the environment (a multi-task job); True when joined."""
    from harness.cell import distributed

    return distributed.init_from_env()


def finish_ranks() -> None:
    """Leave the process group :func:`init_ranks_from_env` joined."""
    from harness.cell import distributed

    distributed.finish()


def record_lost(spec: CellSpec, status: str, reason: str, log_path: str | None = None) -> str | None:
    """A cell whose worker died: find its run under the parent (by config hash tag) or create one,
    close it ``status`` (FAILED or KILLED) with tags ``harness.error`` = reason, ``harness.log`` = log_path.

    A run the worker already closed is left as it is. Returns the run id.
    """
    return _close_lost(ProcessTracker(spec.tracking_uri), spec, status, reason, log_path)


def lost_outcome(spec: CellSpec, status: str, reason: str, *, log_path: str | None = None,
                 tags: Mapping[str, str] | None = None) -> CellOutcome:
    """The outcome of a cell an executor lost, its run closed ``status`` with ``reason``, the log
    path and the executor's own ``tags`` (job or task id). Never raises: recording must not take
    the suite down, and the outcome still carries the reason to the summary."""
    run_id = None
    try:
        tracker = ProcessTracker(spec.tracking_uri)
        run_id = _close_lost(tracker, spec, status, reason, log_path, tags)
    except Exception as exc:  # noqa: BLE001 - the suite goes on; the summary still says why
        from harness.errors import one_line

        print(f"harness: could not record {spec.run_name} {status}: {one_line(exc)}", file=sys.stderr)
    return CellOutcome(spec.cell_hash, status, run_id, error=reason)


def _close_lost(tracker: Tracker, spec: CellSpec, status: str, reason: str, log_path: str | None,
                engine_tags: Mapping[str, str] | None = None) -> str:
    """The cell's newest run under its parent, closed ``status`` unless its worker closed it."""
    from harness.cell.record import close_lost

    run = _newest_cell_run(tracker, spec)
    if run is not None and run.info.status not in ("RUNNING", "SCHEDULED"):
        if engine_tags:
            tracker.set_tags(run.info.run_id, dict(engine_tags))
        return run.info.run_id
    run_id = run.info.run_id if run is not None else _start_lost_run(tracker, spec)
    close_lost(tracker, run_id, status, reason, log_path, engine_tags)
    return run_id


def _start_lost_run(tracker: Tracker, spec: CellSpec) -> str:
    """A run for a cell that died before creating its own, tagged like any cell where possible."""
    from harness.tracking import tags_for

    experiment = tracker.experiment_of(spec.parent_run_id)
    try:
        from harness.cell.record import cell_tags
        from harness.cell.runner import resolve_device
        from harness.host import get_host

        suite, cell = load_cell(spec)
        tags = cell_tags(get_host(), suite, cell, resolve_device(spec.options.get("device", "auto")))
    except Exception:  # noqa: BLE001 - the record matters more than its tags
        tags = tags_for([("kind", "cell"), ("config_hash", spec.cell_hash)])
        tags["harness.lost_traceback"] = traceback.format_exc()[-4000:]
    return tracker.start_run(experiment, spec.run_name, tags, parent=spec.parent_run_id)


# -- the plugin kind -------------------------------------------------------------------------------

def parse_option_value(executor: str, key: str, value: Any, kind: type) -> Any:
    """``"4"`` -> 4 for an int option; booleans accept true/false/1/0/yes/no; a list option takes a
    TOML list of strings, or one string (one item) from ``--executor-option``."""
    if kind is list:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise UsageError(f"executor {executor}: option {key} must be a list of strings, got {value!r}")
    if kind is float:  # nan and inf are never a setting (a NaN watchdog would switch it off)
        return finite_option(executor, key, value)
    if not isinstance(value, str) or kind is str:
        if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
            return value
        raise UsageError(f"executor {executor}: option {key} must be {kind.__name__}, got {value!r}")
    if kind is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
    else:
        try:
            return kind(value)
        except (TypeError, ValueError):
            pass
    raise UsageError(f"executor {executor}: option {key} must be {kind.__name__}, got {value!r}")


def finite_option(executor: str, key: str, value: Any) -> float:
    """A float option from TOML or ``--executor-option``: a finite number, else a usage error."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise UsageError(f"executor {executor}: option {key} must be a finite number, got {value!r}")
    return number


def build_executor(host: Any, name: str, options: Mapping[str, Any]) -> Executor:
    """The registered executor ``name`` with typed ``options``; unknown names: did-you-mean, exit 2."""
    cls = host.executors.get(name).obj
    types = dict(cls.option_types)
    if cls.remote:
        types.setdefault(ALLOW_SQLITE, bool)
    values = {}
    for key, value in options.items():
        if key not in types:
            raise UnknownNameError(f"option of executor {name!r}", key, types)
        values[key] = parse_option_value(name, key, value, types[key])
    return cls(**values)


def check_tracking_uri(executor: Executor, uri: str) -> None:
    """Other machines cannot reach a SQLite file on this one: refuse it unless forced."""
    local = uri.startswith("sqlite") or "://" not in uri
    if executor.remote and local and not executor.options.get(ALLOW_SQLITE):
        raise UsageError(
            f"executor {executor.name!r} runs cells on other machines, which cannot write the SQLite store "
            f"{uri}; start `harness server` (PostgreSQL-backed) and pass --tracking-uri http://..., or, if "
            f"every machine mounts the same file system, pass --executor-option {ALLOW_SQLITE}=true")
