"""How a suite session hands work to pytest-xdist workers.

The controller creates the parent runs on a thread while the workers start
(harness.testing.handoff), and hands out the longest cells first from the durations
earlier sessions recorded in pytest's cache (harness.testing.durations and
harness.testing.scheduling). The scheduler is driven here with stand-in worker nodes,
the way pytest-xdist's own tests drive theirs; the two-worker session of
test_pytest_plugin.py runs it for real.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.testing.durations import DURATIONS_KEY, DurationRecorder, priority, recorded_durations
from harness.testing.handoff import HandoffError, ParentHandoff, wait_for_parents
from harness.testing.sandbox import TINY_SUITE

pytest_plugins = ["pytester"]

CELLS = ["harness:s::vq-s0", "harness:s::drifting-s0", "harness:s::vq-s1", "harness:s::drifting-s1"]
CLAIM = "harness:s::claim:c"


# -- the hand-out order -------------------------------------------------------------------------

def test_unknown_cells_first_in_collection_order_then_longest_first_claims_last():
    collection = [*CELLS, CLAIM, "tests/test_x.py::test_y"]
    durations = {"harness:s::drifting-s0": 16.0, "harness:s::vq-s0": 9.0, CLAIM: 99.0}
    order = [collection[i] for i in priority(collection, durations)]
    assert order == ["harness:s::vq-s1", "harness:s::drifting-s1", "tests/test_x.py::test_y",
                     "harness:s::drifting-s0", "harness:s::vq-s0", CLAIM]


def test_without_history_the_order_is_collection_order_with_claims_last():
    collection = [CELLS[0], CLAIM, *CELLS[1:]]
    assert [collection[i] for i in priority(collection, {})] == [*CELLS, CLAIM]


class _Cache(dict):
    def get(self, key, default):  # type: ignore[override]
        return super().get(key, default)

    def set(self, key, value):
        self[key] = json.loads(json.dumps(value))  # what pytest's cache keeps: JSON


def _report(nodeid: str, seconds: float, when: str = "call", outcome: str = "passed") -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid, duration=seconds, when=when, skipped=outcome == "skipped")


def test_the_recorder_keeps_each_cells_call_duration_and_merges_with_earlier_sessions():
    config = SimpleNamespace(cache=_Cache({DURATIONS_KEY: {"harness:s::vq-s1": 8.0, "harness:s::vq-s0": 1.0}}))
    recorder = DurationRecorder(config)  # type: ignore[arg-type]
    for report in (_report("harness:s::vq-s0", 9.25), _report("harness:s::drifting-s0", 16.5, outcome="failed"),
                   _report("harness:s::drifting-s1", 0.1, outcome="skipped"), _report(CLAIM, 60.0),
                   _report("harness:s::vq-s0", 0.5, when="setup"), _report("tests/test_x.py::test_y", 3.0)):
        recorder.pytest_runtest_logreport(report)  # type: ignore[arg-type]
    recorder.pytest_sessionfinish()
    assert recorded_durations(config) == {  # type: ignore[arg-type]
        "harness:s::vq-s1": 8.0, "harness:s::vq-s0": 9.25, "harness:s::drifting-s0": 16.5}


def test_no_cache_no_history():
    assert recorded_durations(SimpleNamespace(cache=None)) == {}  # type: ignore[arg-type]
    assert recorded_durations(SimpleNamespace(cache=_Cache({DURATIONS_KEY: ["not", "a", "dict"]}))) == {}  # type: ignore[arg-type]


# -- the scheduler, with stand-in worker nodes --------------------------------------------------

class _Node:
    """What xdist's schedulers use of a worker controller."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(indices)

    def send_runtest_all(self) -> None:
        raise AssertionError("the scheduler hands items out one by one")

    def shutdown(self) -> None:
        self.shutting_down = True


def _scheduler(pytester: pytest.Pytester, collection: list[str], durations: dict[str, float]):
    pytest.importorskip("xdist")
    from harness.testing.scheduling import LongestFirstScheduling

    config = pytester.parseconfig("--tx=2*popen")
    config.cache = _Cache({DURATIONS_KEY: durations})  # type: ignore[attr-defined]
    sched = LongestFirstScheduling(config)
    nodes = [_Node("gw0"), _Node("gw1")]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, collection)
    sched.schedule()
    return sched, nodes


def test_each_worker_holds_two_items_and_gets_the_longest_next(pytester: pytest.Pytester):
    cells = [f"harness:s::c{i}" for i in range(8)]
    collection = [*cells, CLAIM]
    durations = {c: float(i) for i, c in enumerate(cells)}  # c7 is the longest
    sched, (a, b) = _scheduler(pytester, collection, durations)
    names = lambda node: [collection[i] for i in node.sent]  # noqa: E731
    assert names(a) == ["harness:s::c7", "harness:s::c6"] and names(b) == ["harness:s::c5", "harness:s::c4"]

    sched.mark_test_complete(b, b.sent[0])  # b finished c5 first: it gets the longest left
    assert names(b)[2:] == ["harness:s::c3"] and len(a.sent) == 2
    for expected, node in (("harness:s::c2", a), ("harness:s::c1", b), ("harness:s::c0", a), (CLAIM, b)):
        sched.mark_test_complete(node, sched.node2pending[node][0])
        assert names(node)[-1] == expected
    assert not sched.pending
    sched.mark_test_complete(a, sched.node2pending[a][0])
    assert a.shutting_down  # nothing left to hand out: a runs what it holds and stops


def test_a_session_with_other_tests_keeps_xdists_batches(pytester: pytest.Pytester):
    collection = [*CELLS, *(f"tests/test_x.py::test_{i}" for i in range(12))]
    sched, (a, b) = _scheduler(pytester, collection, {})
    assert sched.maxschedchunk == len(collection)  # xdist's default: only the order changed
    assert [collection[i] for i in a.sent] == CELLS[:2] and [collection[i] for i in b.sent] == CELLS[2:]


# -- the parent runs, handed from the controller to the workers ---------------------------------

def test_the_handoff_publishes_the_parents_for_the_workers():
    handoff = ParentHandoff(lambda: {"toy2d": "abc123"})
    try:
        assert handoff.result() == {"toy2d": "abc123"} and handoff.error is None
        assert wait_for_parents(handoff.path, timeout=5) == {"toy2d": "abc123"}
    finally:
        handoff.close()
    assert not handoff.folder.exists()


def test_a_failure_to_create_them_reaches_every_worker():
    def create() -> dict[str, str]:
        raise pytest.UsageError("--harness-tracking-uri: cannot reach http://127.0.0.1:9")

    handoff = ParentHandoff(create)
    try:
        with pytest.raises(HandoffError, match="cannot reach"):
            handoff.result()
        with pytest.raises(HandoffError, match="could not create the suite's parent run: --harness-tracking-uri"):
            wait_for_parents(handoff.path, timeout=5)
    finally:
        handoff.close()


def test_a_worker_waits_for_the_parents_only_so_long(tmp_path: Path):
    with pytest.raises(HandoffError, match="within 0.2s"):
        wait_for_parents(tmp_path / "parents.json", timeout=0.2)


def test_a_store_the_controller_cannot_open_fails_the_cells_with_its_reason(tmp_path: Path):
    """Under xdist the parent is created after the workers start; its error still stops the session."""
    (tmp_path / "tiny.toml").write_text(TINY_SUITE)
    (tmp_path / "store").write_text("a file where the store's folder should be")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-n", "2",
         "--harness-suite", "tiny.toml", "--harness-tracking-uri", f"sqlite:///{tmp_path / 'store' / 'm.db'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == pytest.ExitCode.USAGE_ERROR, out.stdout[-3000:] + out.stderr[-2000:]
    assert "3 failed" in out.stdout  # both cells and the claim, which reads them under the parent
    assert out.stdout.count("could not create the suite's parent run") >= 3, out.stdout[-3000:]


def test_a_bad_executor_still_stops_the_session_before_any_cell(tmp_path: Path):
    """The cheap checks stay on the controller's main thread: a usage error at once, as without xdist."""
    (tmp_path / "tiny.toml").write_text(TINY_SUITE)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-n", "2",
         "--harness-suite", "tiny.toml", "--harness-executor", "procesess",
         "--harness-tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == pytest.ExitCode.USAGE_ERROR, out.stdout[-3000:] + out.stderr[-2000:]
    assert "did you mean 'processes'" in out.stdout + out.stderr
    assert not (tmp_path / "m.db").exists()  # no parent run was created
