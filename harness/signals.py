"""Signals and process identity for the suite lifecycle and its workers.

* :func:`deferred` blocks SIGINT, SIGTERM and SIGALRM for the duration of one
  store call, so a Ctrl-C never lands inside an SQLite transaction (an abandoned
  transaction holds the write lock: every later write of that process then
  loops on "database is locked"). The signal is delivered when the call returns.
* :func:`identity` and :func:`process_alive` let ``--resume`` tell a RUNNING run
  whose process died (SIGKILL, OOM, power cut) from one that is still running.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

DEFERRED = {signal.SIGINT, signal.SIGTERM, signal.SIGALRM}


@contextmanager
def deferred(signals: set[int] = DEFERRED) -> Iterator[None]:  # type: ignore[assignment]
    """Hold ``signals`` pending inside the block; they arrive (once) when it ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class DeferredClient:
    """Wraps an ``MlflowClient``: every method call runs with signals deferred."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
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
