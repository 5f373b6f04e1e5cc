"""How long each suite item took in earlier sessions, kept in pytest's cache.

:class:`DurationRecorder` writes the call duration of each suite cell that ran (passed
or failed; claims only wait, so they are left out) under ``vq-harness/durations`` at
the end of a session (in the xdist controller, which sees
every worker's reports, or in the only process); :func:`priority` turns them into
the order in which :mod:`harness.testing.scheduling` hands items to xdist workers.
Without pytest's cache (``-p no:cacheprovider``) nothing is kept and the order is
collection order.
"""

from __future__ import annotations

import pytest

#: pytest cache key: {item node id: seconds its call took when it last ran}
DURATIONS_KEY = "vq-harness/durations"
SUITE_PREFIX = "harness:"  # node ids of suite items: harness:<suite>::<cell> or ::claim:<id>
CLAIM_MARK = "::claim:"


def is_suite_item(nodeid: str) -> bool:
    return nodeid.startswith(SUITE_PREFIX)


def is_claim(nodeid: str) -> bool:
    return is_suite_item(nodeid) and CLAIM_MARK in nodeid


def recorded_durations(config: pytest.Config) -> dict[str, float]:
    """Seconds per node id from earlier sessions ({} without pytest's cache)."""
    cache = getattr(config, "cache", None)
    if cache is None:
        return {}
    stored = cache.get(DURATIONS_KEY, {})
    return {k: float(v) for k, v in stored.items() if isinstance(v, (int, float))} if isinstance(stored, dict) else {}


def priority(collection: list[str], durations: dict[str, float]) -> list[int]:
    """Collection indices in hand-out order: unknown items, then longest first, claims last."""
    def key(index: int) -> tuple[bool, bool, float, int]:
        nodeid = collection[index]
        seconds = durations.get(nodeid)
        return is_claim(nodeid), seconds is not None, -(seconds or 0.0), index

    return sorted(range(len(collection)), key=key)


class DurationRecorder:
    """Remembers each suite cell's call duration in pytest's cache (controller or ``-n 0`` only)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.seen: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nodeid = report.nodeid  # a claim's duration is its wait for other workers: not its cost
        if report.when == "call" and not report.skipped and is_suite_item(nodeid) and not is_claim(nodeid):
            self.seen[nodeid] = round(report.duration, 3)

    def pytest_sessionfinish(self) -> None:
        cache = getattr(self.config, "cache", None)
        if cache is not None and self.seen:
            cache.set(DURATIONS_KEY, {**recorded_durations(self.config), **self.seen})
