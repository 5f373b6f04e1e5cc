"""The suites' parent runs, handed from the xdist controller to its workers through a file.

Creating a parent run imports torch, the plugins and MLflow and may create the
store's schema: about 10 s on two cores. Done inside ``pytest_configure_node`` it
holds back every worker's start by that much, since xdist starts a worker only after
that hook returns. The controller instead creates the parents on a thread (a
:class:`ParentHandoff` starts it) while the workers import and collect, and writes them,
or the error that stopped it, to a JSON file named in ``workerinput``; a worker reads
it before its first cell (:func:`wait_for_parents`). Workers therefore share the
controller's file system, as the local workers of ``-n`` do.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

POLL_SECONDS = 0.1


class HandoffError(RuntimeError):
    """The controller could not create the parent runs; the message says why."""


class ParentHandoff:
    """Controller side: creates the parent runs on a thread and publishes them."""

    def __init__(self, create: Callable[[], dict[str, str]]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="harness-xdist-"))
        self.path = self.folder / "parents.json"
        self._result: dict[str, str] | None = None
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, args=(create,), name="harness-parents", daemon=True)
        self._thread.start()

    def _run(self, create: Callable[[], dict[str, str]]) -> None:
        try:
            self._result = create()
            payload: dict[str, object] = {"parents": self._result}
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the waiting workers
            self._error = str(exc) or type(exc).__name__
            payload = {"error": self._error}
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(payload))
        os.replace(partial, self.path)  # a worker never reads half a file

    @property
    def error(self) -> str | None:
        """Why the parent runs could not be created (None while running or on success)."""
        return self._error

    def result(self) -> dict[str, str]:
        """The parent runs, once created (waits for the thread); raises :class:`HandoffError`."""
        self._thread.join()
        if self._error is not None:
            raise HandoffError(self._error)
        assert self._result is not None
        return self._result

    def close(self) -> None:
        self._thread.join()
        shutil.rmtree(self.folder, ignore_errors=True)


def wait_for_parents(path: str | Path, timeout: float) -> dict[str, str]:
    """Worker side: the parent runs the controller published at ``path``."""
    path, deadline = Path(path), time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise HandoffError(f"the controller did not create the suite's parent run within {timeout:g}s "
                               f"({path} never appeared)")
        time.sleep(POLL_SECONDS)
    payload = json.loads(path.read_text())
    if "error" in payload:
        raise HandoffError(f"the controller could not create the suite's parent run: {payload['error']}")
    return dict(payload["parents"])
