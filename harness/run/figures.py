"""Each finished cell's figures, drawn by the suite's process while the next cells train.

A worker saves what its figures need (:mod:`harness.cell.figure_data`); drawing them
(matplotlib, about 0.1 to 0.5 s a cell) happens here, on one background thread of the
process that runs the suite, as each cell's outcome comes in. The dispatch loop hands the
freed worker its next cell at once, and the drawing overlaps the cells still training
instead of adding a serial tail after the last one. What this thread never reached (an
interrupted suite, a cell skipped by ``--resume``) is drawn when the suite closes
(:func:`harness.run.lifecycle.draw_figures`), where a drawn cell costs one listing.
"""

from __future__ import annotations

import queue
import threading

from harness.tracking import Tracker, guarded

_STOP = None


class FigureDrawer:
    """A queue of run ids and one daemon thread that draws each with its own :class:`Tracker`."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, run_id: str, name: str) -> None:
        """Draw ``run_id``'s figures soon (the thread starts with the first cell)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="harness-figures", daemon=True)
            self._thread.start()
        self._queue.put((run_id, name))

    def close(self, wait: bool = True) -> None:
        """Finish the queue (``wait``), or drop what is left (an interrupt: the close draws it)."""
        if self._thread is None:
            return
        if not wait:
            while not self._queue.empty():
                self._queue.get_nowait()
        self._queue.put(_STOP)
        self._thread.join()

    def _drain(self) -> None:
        from harness.cell.plots import draw_recorded  # matplotlib: imported on this thread only

        tracker = Tracker(self.uri)
        while (item := self._queue.get()) is not _STOP:
            run_id, name = item
            guarded(f"drawing the figures of {name}", lambda r=run_id: draw_recorded(tracker, r))
