"""Longest cells first on pytest-xdist workers, from the durations of earlier sessions.

xdist's default ``load`` scheduling hands items out in collection order and keeps up
to several queued on each worker. A suite whose cells differ in cost (a drifting cell
costs about twice a vq cell on toy2d) then ends with one worker running the cells
queued on it while the other waits. Under ``--harness-suite`` the controller uses
:class:`LongestFirstScheduling` instead: xdist's ``LoadScheduling`` with two changes.

* When the session holds only suite items, each worker holds two: the one it runs and
  the next (an xdist worker needs its next item before it starts one), so no worker
  queues a cell another could take.
* The item handed out next is the longest by the durations earlier sessions recorded
  (:mod:`harness.testing.durations`); items with no recorded duration go first, in
  collection order (they may be long, and the next session knows them); claims go
  last (a claim waits for cells on other workers).

With no history the order is collection order. ``--dist`` other than ``load`` is
respected; ``-p no:harness-scheduler`` gives xdist's own ``load`` scheduling back.
This module imports xdist: the pytest plugin loads it only when xdist is installed.
"""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadScheduling

from harness.testing.durations import is_suite_item, priority, recorded_durations


class LongestFirstScheduling(LoadScheduling):
    """``LoadScheduling`` whose pending items are kept in :func:`priority` order."""

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)
        self._rank: dict[int, int] = {}  # collection index -> place in the hand-out order

    def schedule(self) -> None:
        if self.collection is None:  # the first call: every worker's collection is in
            collection = next(iter(self.node2collection.values()))
            self._rank = {index: rank for rank, index in
                          enumerate(priority(collection, recorded_durations(self.config)))}
            if collection and all(is_suite_item(nodeid) for nodeid in collection):
                self.maxschedchunk = 1  # the running item and the next one, nothing queued behind
        super().schedule()

    def _send_tests(self, node: Any, num: int) -> None:
        if self._rank:  # linear on the already ordered list; puts back re-queued items too
            self.pending.sort(key=self._rank.__getitem__)
        super()._send_tests(node, num)


class SchedulerPlugin:
    """Registered as ``harness-scheduler`` on the xdist controller of a suite session."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> LoadScheduling | None:
        if config.getvalue("dist") != "load":
            return None
        return LongestFirstScheduling(config, log)
