"""Signals and process identity for the suite lifecycle and its workers.

* :func:`deferred` holds the harness's signal handlers (:func:`guarded`: the
  interrupt guard, the cell timeout) for the duration of one store call, so a
  Ctrl-C never lands inside an SQLite transaction (an abandoned transaction holds
  the write lock: every later write of that process then loops on "database is
  locked"). The handler runs when the call returns.
* :func:`identity` and :func:`process_alive` let ``--resume`` tell a RUNNING run
  whose process died (SIGKILL, OOM, power cut) from one that is still running.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_depth = 0  # open deferred() blocks in the main thread (where Python runs signal handlers)
_pending: list[Callable[[], None]] = []


@contextmanager
def deferred() -> Iterator[None]:
    """Signal handlers installed through :func:`guarded` wait for the end of this block.

    Done in Python, not with ``pthread_sigmask``: a signal the main thread blocks is
    delivered to another thread (the metric writer), and Python then runs the handler
    in the main thread at once anyway. Other threads pass straight through.
    """
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending:
            waiting = list(_pending)
            _pending.clear()
            for fire in waiting:  # in arrival order; one that raises ends the block here
                fire()


def guarded(handler: Callable[[int, FrameType | None], Any]) -> Callable[[int, FrameType | None], Any]:
    """``handler``, postponed while a :func:`deferred` block is open."""

    def handle(signum: int, frame: FrameType | None) -> Any:
        if _depth:
            _pending.append(lambda: handler(signum, frame))
            return None
        return handler(signum, frame)

    return handle


class DeferredClient:
    """Wraps an ``MlflowClient``: every method call runs deferred, after ``on_call``."""

    def __init__(self, client: Any, on_call: Callable[[], None] | None = None) -> None:
        self._client, self._on_call = client, on_call

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._on_call is not None:
                self._on_call()
            with deferred():
                return attr(*args, **kwargs)

        return call


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def identity() -> dict[str, str]:
    """Tags naming this process, so another process can later tell whether it still runs."""
    return {"harness.hostname": socket.gethostname(), "harness.pid": str(os.getpid()),
            "harness.pid_start": start_time(os.getpid()) or ""}


def process_alive(tags: dict[str, str]) -> bool | None:
    """Whether the process that wrote a run (by its :func:`identity` tags) still runs.

    ``None`` when it cannot be told from here (another host); ``False`` when the
    run carries no identity (written before runs were tagged with it).
    """
    pid = tags.get("harness.pid")
    if not pid:
        return False
    if tags.get("harness.hostname") != socket.gethostname():
        return None
    now = start_time(int(pid))
    if now is None:
        return False
    return not tags.get("harness.pid_start") or tags["harness.pid_start"] == now


def describe_exit(code: int | None) -> str:
    """``-11`` -> ``killed by signal SIGSEGV``; ``3`` -> ``exited with code 3``."""
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"killed by signal {name}{hint}"
    return f"exited with code {code}"
