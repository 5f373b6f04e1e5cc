"""SIGINT and SIGTERM during ``harness run``: stop at a step boundary, checkpoint, record KILLED.

The first signal asks the training loop to stop after the current step (it
sets ``state.stop``); the runner then saves a checkpoint, ends the cell's run
KILLED and raises :class:`Interrupted`, which ends the suite's parent run KILLED
and the command with 130 (SIGINT) or 143 (SIGTERM). Outside the training loop
(building data, evaluating) there is no step to finish, so the first signal
raises at once. A second signal always raises at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from harness.recovery.signals import guarded

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; ``exit_code`` is the shell's ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class InterruptGuard:
    """Installs the handlers for its ``with`` block (main thread only; elsewhere a no-op)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.forced = False  # raised inside a step: the state may be half updated
        self._state: Any = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:  # held while a store call runs (harness.recovery.signals.deferred)
                self._previous[sig] = signal.signal(sig, guarded(self._handle))
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None and self._state is not None:
            self.signum = signum
            self._state.stop = True
            return
        self.signum = self.signum or signum
        self.forced = self._state is not None
        raise Interrupted(self.signum)

    def watch(self, state: Any) -> None:
        """From now on the first signal stops ``state``'s training loop between steps."""
        self._state = state

    def unwatch(self) -> None:
        self._state = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def raise_if_requested(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)
