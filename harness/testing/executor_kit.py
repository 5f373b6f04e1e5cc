"""The executor test kit: the contract every executor plugin keeps (docs/hooks.md).

``E(**options).run(specs, on_outcome)`` runs each cell spec somewhere and calls
``on_outcome`` once per spec, in the submitting process, as each ends. Run on the
tiny suite in a sandbox: every cell ends FINISHED with its run in the store, no
run is left RUNNING, and a second run records new cells (nothing cached).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.testing.kit import Checks, add_tests, case_of, check_declares, expect


@dataclass
class ExecutorCase:
    """One executor under test, its ``--executor-option`` values, and the sandbox it runs in."""

    executor: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    #: where the sandbox goes (``None``: a temporary folder removed afterwards)
    folder: Path | None = None

    @property
    def cls(self) -> type:
        from harness.testing.kit import lookup

        return lookup("executors", self.executor)

    def run(self, folder: Path) -> tuple[Any, list[Any]]:
        from harness.testing.sandbox import Sandbox

        sandbox = Sandbox(folder)
        result = sandbox.run(executor=self.executor, executor_options=dict(self.options))
        return result, sandbox.cells()

    def run_in_sandbox(self) -> tuple[Any, list[Any]]:
        if self.folder is not None:
            return self.run(self.folder)
        with tempfile.TemporaryDirectory() as folder:
            return self.run(Path(folder))


EXECUTOR_CHECKS = Checks()


@EXECUTOR_CHECKS("declares")
def check_executor_declares(case: ExecutorCase) -> None:
    """A name, a summary line, ``remote`` a bool, ``option_types`` a dict of option -> type."""
    check_declares("executors", case.cls, {"remote": bool, "option_types": dict})


@EXECUTOR_CHECKS("runs_every_cell")
def check_runs_every_cell(case: ExecutorCase) -> None:
    """Every cell of the tiny suite ends FINISHED, once, recorded in the store, none left RUNNING."""
    result, runs = case.run_in_sandbox()
    names = sorted(c.cell.run_name for c in result.cells)
    expect(len(names) == len(set(names)) == 2, f"{case.executor}: one result per cell expected, got {names}")
    bad = [(c.cell.run_name, c.status, c.error) for c in result.cells if c.status != "FINISHED"]
    expect(not bad, f"{case.executor}: cells did not finish: {bad}")
    expect(sorted(r.info.run_name for r in runs) == names,
           f"{case.executor}: the store holds {sorted(r.info.run_name for r in runs)}, the results {names}")
    expect({r.info.status for r in runs} == {"FINISHED"}, f"{case.executor}: runs left "
                                                          f"{sorted({r.info.status for r in runs})}")
    expect(all(c.run_id in {r.info.run_id for r in runs} for c in result.cells),
           f"{case.executor}: an outcome names a run that is not in the store")
    expect(all("utilization" in c.metrics for c in result.cells),
           f"{case.executor}: outcomes must carry the cell's metrics (claims are checked on them)")


class ExecutorConformance:
    """Subclass as ``Test<Something>`` and set ``executor`` (and ``options``): pytest runs every check."""

    executor: str | None = None

    def conformance_case(self) -> ExecutorCase:
        return case_of(self, ExecutorCase, "executor")


add_tests(ExecutorConformance, EXECUTOR_CHECKS)
