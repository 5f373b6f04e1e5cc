"""``processes``: cells in worker processes on this machine; the default (one worker), ``--jobs N``.

Each worker is a ``spawn``-ed interpreter (no forked CUDA or SQLite state) that
runs one cell at a time, sent over its own pipe, so the control process always
knows which cell a worker holds. That is what isolates a cell:

* a cell whose worker dies (``os._exit``, a segfault, the OOM killer) is recorded
  FAILED with the exit code or signal (:func:`harness.contracts.record_lost`), a
  fresh worker takes the next cell and the suite goes on;
* ``sys.exit`` inside a cell and ``train.timeout`` are handled in the worker
  (:func:`harness.contracts.run_cell`); a cell that ignores its timeout is killed
  ``TIMEOUT_GRACE_S`` later, and one that writes nothing to the store for
  ``watchdog`` seconds (metrics, tags: its progress) is killed as hung;
* a worker dies with its control process (``PR_SET_PDEATHSIG`` and a parent
  poll): a SIGKILLed ``harness run`` leaves no worker training and recording;
* what a cell starts ends with the cell: each worker leads its own session and process
  group, and after each cell it kills the group's processes the cell left running (a
  killed worker's group is killed by the control process);
* Ctrl-C: workers ignore SIGINT; the control process sends each busy worker
  SIGTERM, whose cell checkpoints and records KILLED; a second Ctrl-C kills them
  at once and records their cells KILLED without a checkpoint.

Each worker gets ``cores / jobs`` intra-op threads, so workers never oversubscribe the CPU.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, ClassVar

from harness.contracts import (
    CellOutcome,
    CellSpec,
    Executor,
    deferred,
    describe_exit,
    freeze_for_exit,
    lost_outcome,
    saved_note,
)

WATCHDOG_S = 3600.0  # no store write for this long: the cell is hung (default; 0 turns it off)
TIMEOUT_GRACE_S = 30.0  # past train.timeout, for a cell whose own alarm could not fire
STOP_WAIT_S = 120.0  # after Ctrl-C, how long busy workers get to checkpoint and record KILLED
POLL_S = 0.5


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_ranges(jobs: int, watchdog: float, threads: int) -> int:
    """Refuse options no run could use (a NaN watchdog is never reached: it would be off); return
    the intra-op threads per worker (0: this machine's cores shared among the jobs)."""
    from harness.errors import UsageError

    if jobs < 1:
        raise UsageError(f"executor processes: jobs must be >= 1, got {jobs}")
    if not math.isfinite(watchdog) or watchdog < 0:
        raise UsageError(f"executor processes: watchdog must be a finite number of seconds >= 0 "
                         f"(0: off), got {watchdog}")
    if not 0 <= threads <= cores():
        raise UsageError(f"executor processes: threads must be between 1 and the {cores()} cores this "
                         f"process may use (0 or unset: cores / jobs), got {threads}")
    return threads or max(1, cores() // jobs)


# -- the worker process -------------------------------------------------------------------------

def _die_with_parent(parent_pid: int) -> None:
    """Stop at once, recording nothing more, when the control process is gone."""
    import threading

    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(70)
            time.sleep(1.0)

    threading.Thread(target=watch, name="harness-parent-watch", daemon=True).start()


def _group_members() -> set[int]:
    """The other processes of this worker's process group (what its cells started), from ``/proc``."""
    me, group, out = os.getpid(), os.getpgrp(), set()
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, pgrp
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group:
            out.add(int(name))
    return out


def _end_cell_processes(before: set[int]) -> None:
    """Kill what the cell started and left running (a plugin's ``sleep``, a server, a pool): a cell's
    processes end with the cell. Direct children are reaped, so no zombie is left either."""
    left = _group_members() - before
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for pid in left:
        with contextlib.suppress(OSError):  # ChildProcessError: a grandchild, init reaps it
            os.waitpid(pid, 0)


def _worker(conn: Any, beat: Any, threads: int, parent_pid: int) -> None:
    """Run the cells sent over ``conn`` until told to stop (``None``) or signalled."""
    import faulthandler

    with contextlib.suppress(OSError):  # its own session and process group: what a cell starts is in it
        os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the control process decides
    _die_with_parent(parent_pid)
    faulthandler.enable()  # a segfault prints the Python stack to the worker's stderr
    import torch

    from harness.contracts import run_cell, set_heartbeat
    from harness.host import get_host

    torch.set_num_threads(threads)
    get_host()  # import every plugin now, before a cell's watchdog starts
    set_heartbeat(lambda: setattr(beat, "value", time.monotonic()))
    _serve(conn, beat, run_cell)
    freeze_for_exit()  # the worker ends here: 1 to 2 s of final garbage collection saved


def _serve(conn: Any, beat: Any, run_cell: Callable[[CellSpec], CellOutcome]) -> None:
    """Run each cell ``conn`` sends, until it sends ``None``, closes, or a signal stops the suite."""
    while True:
        try:
            spec = conn.recv()
        except EOFError:
            return
        if spec is None:
            return
        beat.value = time.monotonic()
        before = _group_members()
        try:
            conn.send(("outcome", run_cell(spec)))
        except KeyboardInterrupt as exc:  # SIGTERM from the control process: the cell is KILLED
            outcome = getattr(exc, "outcome", None) or CellOutcome(spec.cell_hash, "KILLED", error="interrupted")
            conn.send(("outcome", outcome))
            if getattr(exc, "signum", None) is not None:
                return  # a real signal: the suite is stopping
            # a KeyboardInterrupt the cell's own code raised: this worker stays for the next cell
        except Exception as exc:  # noqa: BLE001 - outside the cell's own handling (store, suite file)
            conn.send(("outcome", _lost(spec, "FAILED", f"{type(exc).__name__}: {exc}")))
        finally:
            _end_cell_processes(before)


def _lost(spec: CellSpec, status: str, reason: str) -> CellOutcome:
    """Close the cell's run with ``reason`` (guarded: the record must not take the suite down)."""
    return lost_outcome(spec, status, reason)


# -- the control process's side -------------------------------------------------------------------

@dataclass
class _Worker:
    process: Any
    conn: Any
    beat: Any
    spec: CellSpec | None = None
    started: float = 0.0

    def give(self, spec: CellSpec) -> None:
        self.spec, self.started = spec, time.monotonic()
        self.beat.value = float("inf")  # the watchdog starts when the worker takes the cell (after imports)
        with contextlib.suppress(OSError):  # died at start-up (BrokenPipeError): _fault records its exit
            self.conn.send(spec)

    def kill(self) -> None:
        """Kill the worker and whatever its cell started (the worker's process group, see _worker)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        with contextlib.suppress(OSError):  # ESRCH: the cell started nothing that is still alive
            os.killpg(self.process.pid, signal.SIGKILL)


class ProcessesExecutor(Executor):
    """Worker processes on this machine, `jobs` at once; a crashing or hung cell fails alone."""

    name: ClassVar[str] = "processes"
    option_types: ClassVar[dict[str, type]] = {"jobs": int, "watchdog": float, "threads": int}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.jobs = int(options.get("jobs", 1))
        self.watchdog = float(options.get("watchdog", WATCHDOG_S))
        self.threads = check_ranges(self.jobs, self.watchdog, int(options.get("threads") or 0))
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe()
        beat = self._ctx.Value("d", time.monotonic(), lock=False)
        process = self._ctx.Process(target=_worker, args=(child_conn, beat, self.threads, os.getpid()),
                                    name=f"harness-worker-{len(self._workers)}")
        process.start()
        child_conn.close()
        worker = _Worker(process, parent_conn, beat)
        self._workers.append(worker)
        return worker

    def run(self, specs: list[CellSpec], on_outcome: Callable[[CellOutcome], None]) -> None:
        todo = deque(specs)
        try:
            while todo or self._busy():
                self._assign(todo)
                self._collect(on_outcome)
        except KeyboardInterrupt:
            self._cancel(on_outcome)
            raise
        finally:
            self._close()

    def _busy(self) -> list[_Worker]:
        return [w for w in self._workers if w.spec is not None]

    def _assign(self, todo: deque[CellSpec]) -> None:
        idle = [w for w in self._workers if w.spec is None and w.process.is_alive()]
        while todo and (idle or len(self._workers) - len(self._dead()) < self.jobs):
            worker = idle.pop() if idle else self._spawn()
            worker.give(todo.popleft())

    def _dead(self) -> list[_Worker]:
        return [w for w in self._workers if not w.process.is_alive()]

    def _collect(self, on_outcome: Callable[[CellOutcome], None], status: str = "FAILED") -> None:
        """Outcomes that came in; cells whose worker died, timed out or hung: recorded ``status``."""
        busy = self._busy()
        wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=POLL_S)
        for worker in busy:
            outcome = self._receive(worker)
            if outcome is None:
                reason = self._fault(worker)
                if reason is None:
                    continue
                worker.kill()
                outcome = _lost(worker.spec, status, reason)  # type: ignore[arg-type]
            worker.spec = None
            on_outcome(outcome)

    def _receive(self, worker: _Worker) -> CellOutcome | None:
        try:
            if worker.conn.poll():
                return worker.conn.recv()[1]
        except (EOFError, OSError):
            pass
        return None

    def _fault(self, worker: _Worker) -> str | None:
        """Why the worker's cell is lost, or ``None`` while it is fine."""
        spec = worker.spec
        assert spec is not None
        if not worker.process.is_alive():
            return f"the worker process {describe_exit(worker.process.exitcode)} while running the cell"
        now = time.monotonic()
        timeout = float(spec.options.get("timeout") or 0)
        if timeout and now - worker.started > timeout + TIMEOUT_GRACE_S:
            return f"CellTimeout: no result within train.timeout = {timeout:g} s (worker killed)"
        if self.watchdog and now - worker.beat.value > self.watchdog:
            return f"no progress for {self.watchdog:g} s (no write to the tracking store): worker killed as hung"
        return None

    def _cancel(self, on_outcome: Callable[[CellOutcome], None]) -> None:
        """Ctrl-C: busy workers checkpoint and record KILLED; a second Ctrl-C kills them outright."""
        for worker in self._workers:
            if worker.spec is not None and worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        reason = f"did not stop within {STOP_WAIT_S:g} s of the interrupt: worker killed"
        try:
            while self._busy() and time.monotonic() < deadline:
                self._collect(on_outcome, status="KILLED")
        except KeyboardInterrupt:
            reason = "interrupted twice: worker killed"
        with deferred():
            for worker in self._busy():
                worker.kill()
                spec, worker.spec = worker.spec, None
                assert spec is not None
                on_outcome(_lost(spec, "KILLED", f"{reason}; {saved_note(spec)}"))

    def _close(self) -> None:
        """No worker outlives the suite."""
        for worker in self._workers:
            if worker.process.is_alive() and worker.spec is None:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
        deadline = time.monotonic() + 10.0
        for worker in self._workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            worker.kill()
            worker.conn.close()
        self._workers.clear()
