"""``harness run --jobs N``: cells in N worker processes, all recording into one store.

Workers are ``spawn``-ed (a fresh interpreter: no forked CUDA or SQLite state);
each builds its own plugin host, :class:`~harness.tracking.Tracker` and
:class:`~harness.cell.CellRunner`, takes cells from a queue and sends back
one :class:`~harness.cell.CellResult` per cell. A cell that crashes is a
FAILED result like in a serial run; a worker that dies (killed, out of memory)
turns its cell into a FAILED result naming the exit code.

Signals: workers ignore SIGINT (a terminal's Ctrl-C reaches the whole process
group); the parent handles SIGINT and SIGTERM and forwards SIGTERM to each
worker, whose own guard then checkpoints its cell and records it KILLED.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback
from typing import Any

from harness.interrupt import Interrupted

STOP = None
WORKER_EXIT_WAIT_S = 120.0


def _worker(suite: Any, options: Any, parent: str, tasks: Any, results: Any, threads: int) -> None:
    """One worker process: run cells until the task queue says stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    from harness.cell import CellResult, CellRunner
    from harness.host import get_host
    from harness.tracking import Tracker

    torch.set_num_threads(threads)
    runner = CellRunner(get_host(), suite, Tracker(options.tracking_uri), options)
    with runner.guard:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the guard took SIGINT; the parent decides
        while True:
            task = tasks.get()
            if task is STOP:
                return
            index, cell, resume = task
            try:
                result = runner.run(cell, parent=parent, resume=resume)
            except Interrupted:
                results.put((index, CellResult(cell, "KILLED", error="interrupted")))
                return
            except BaseException as exc:  # noqa: BLE001 - report, never hang the parent
                results.put((index, CellResult(cell, "FAILED", error=f"{type(exc).__name__}: {exc}\n"
                                               + traceback.format_exc())))
                return
            results.put((index, result))


def run_parallel(suite: Any, todo: list[tuple[Any, Any]], options: Any, parent: str) -> list[Any]:
    """Run ``todo`` (cell, resume) pairs in ``options.jobs`` processes; results in cell order.

    Must run inside the caller's :class:`InterruptGuard`: a signal raises
    :class:`Interrupted` here, the workers are told to stop, and their results
    (KILLED cells with checkpoints) are collected before it propagates.
    """
    from harness.cell import CellResult

    if not todo:
        return []
    jobs = min(options.jobs, len(todo))
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    for i, (cell, resume) in enumerate(todo):
        tasks.put((i, cell, resume))
    for _ in range(jobs):
        tasks.put(STOP)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    worker_options = _without_progress(options)
    workers = [ctx.Process(target=_worker, args=(suite, worker_options, parent, tasks, results, threads),
                           name=f"harness-worker-{i}", daemon=False) for i in range(jobs)]
    for w in workers:
        w.start()
    progress = _progress(options, suite, len(todo))
    done: dict[int, Any] = {}
    try:
        while len(done) < len(todo):
            try:
                index, result = results.get(timeout=1.0)
            except queue.Empty:
                if not any(w.is_alive() for w in workers):
                    _drain(results, done)
                    break
                continue
            done[index] = result
            if progress is not None:
                progress.update(1)
                progress.set_postfix_str(f"{result.cell.run_name} {result.status}")
    except KeyboardInterrupt:
        for w in workers:
            if w.is_alive() and w.pid is not None:
                os.kill(w.pid, signal.SIGTERM)
        _join(workers, results, done)
        raise
    finally:
        if progress is not None:
            progress.close()
    _join(workers, results, done)
    out = []
    for i, (cell, _resume) in enumerate(todo):
        if i in done:
            out.append(done[i])
        else:
            codes = ", ".join(f"{w.name} exit code {w.exitcode}" for w in workers if w.exitcode)
            out.append(CellResult(cell, "FAILED", error=f"worker process died ({codes or 'no result'})"))
    return out


def _join(workers: list[Any], results: Any, done: dict[int, Any]) -> None:
    """Wait (bounded) for the workers, collecting results they send meanwhile."""
    deadline = time.monotonic() + WORKER_EXIT_WAIT_S
    while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
        _drain(results, done, timeout=0.2)
    _drain(results, done)
    for w in workers:
        if w.is_alive():
            print(f"harness: {w.name} did not stop within {WORKER_EXIT_WAIT_S:.0f} s; killing it",
                  file=sys.stderr)
            w.kill()
        w.join(timeout=5)


def _drain(results: Any, done: dict[int, Any], timeout: float = 0.0) -> None:
    while True:
        try:
            index, result = results.get(timeout=timeout) if timeout else results.get_nowait()
        except queue.Empty:
            return
        done.setdefault(index, result)


def _without_progress(options: Any) -> Any:
    """Workers draw no per-step bars: N bars on one terminal are noise; the parent shows cells."""
    from dataclasses import replace

    return replace(options, progress=False)


def _progress(options: Any, suite: Any, total: int) -> Any:
    if not options.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"{suite.name} ({suite.profile}, {options.jobs} jobs)", unit="cell",
                dynamic_ncols=True)

