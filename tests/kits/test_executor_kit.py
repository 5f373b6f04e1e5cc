"""The executor kit passes the registered executors that run here and fails executors that break
the contract; the ``harness_sandbox`` fixture runs the tiny suite into its own store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.host import get_host
from harness.plugins.executors.local import LocalExecutor
from harness.registry import Source
from harness.testing import EXECUTOR_CHECKS, ExecutorCase, ExecutorConformance


def _params() -> list[object]:
    out = []
    for entry in get_host().executors.entries():
        for check in EXECUTOR_CHECKS:
            marks = []
            if check != "declares" and entry.obj.remote:
                marks = [pytest.mark.skip(reason="sends cells to a cluster; tests/executors covers it with stand-ins")]
            out.append(pytest.param(entry.name, check, marks=marks, id=f"{entry.name}-{check}"))
    return out


@pytest.mark.parametrize(("name", "check"), _params())
def test_every_registered_executor(name: str, check: str, tmp_path: Path) -> None:
    EXECUTOR_CHECKS[check](ExecutorCase(executor=name, folder=tmp_path))


class TestProcessesAsAPluginWouldTestIt(ExecutorConformance):
    executor = "processes"
    options = {"jobs": 2}


# -- executors that break the contract ----------------------------------------------------------

class _DropsTheLast(LocalExecutor):
    """Runs every cell but the last."""

    name = "kit-drops-the-last"

    def run(self, specs: list, on_outcome: Callable) -> None:
        super().run(specs[:-1], on_outcome)


class _Twice(LocalExecutor):
    """Reports every outcome twice."""

    name = "kit-twice"

    def run(self, specs: list, on_outcome: Callable) -> None:
        super().run(specs, lambda outcome: (on_outcome(outcome), on_outcome(outcome)))


@pytest.fixture
def broken_executors() -> Iterator[None]:
    """The broken executors, registered in this process's host (rebuilt afterwards)."""
    get_host.cache_clear()
    for cls in (_DropsTheLast, _Twice):
        get_host().executors.add(cls.name, cls, Source("kit-tests", "local", ""))
    yield
    get_host.cache_clear()


@pytest.mark.parametrize("plugin", [_DropsTheLast, _Twice])
def test_the_kit_fails_a_broken_executor(plugin: type, broken_executors: None, tmp_path: Path) -> None:
    # the sound executor they derive from passes: test_every_registered_executor[local-runs_every_cell]
    with pytest.raises(AssertionError, match=f"{plugin.name}: one result per cell expected"):
        EXECUTOR_CHECKS["runs_every_cell"](ExecutorCase(executor=plugin.name, folder=tmp_path / "broken"))


def test_the_sandbox_runs_the_tiny_suite_into_its_own_store(harness_sandbox) -> None:
    result = harness_sandbox.run(executor="local")
    assert sorted(c.status for c in result.cells) == ["FINISHED", "FINISHED"]
    assert [c.status for c in result.claims] == ["holds"]
    assert (harness_sandbox.folder / "mlflow.db").is_file()
    assert sorted(r.info.run_name for r in harness_sandbox.cells()) == ["drifting-K4-d2-s0", "vq-K4-d2-s0"]
    assert not (Path.cwd() / "mlflow.db").exists() or Path.cwd() == harness_sandbox.folder
    smoke = harness_sandbox.run(profile="smoke", methods=["vq"], executor="local")
    assert [c.cell.run_name for c in smoke.cells] == ["vq-K4-d2-s0"] and smoke.cells[0].status == "FINISHED"
