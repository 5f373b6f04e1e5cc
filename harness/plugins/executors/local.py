"""``local``: every cell in this process, one after another (debugging, torchrun, pdb)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from harness.contracts import CellOutcome, CellSpec, Executor, run_cell


class LocalExecutor(Executor):
    """In this process, one cell after another: no isolation (a crashing plugin ends the suite)."""

    name: ClassVar[str] = "local"
    option_types: ClassVar[dict[str, type]] = {}

    def run(self, specs: list[CellSpec], on_outcome: Callable[[CellOutcome], None]) -> None:
        for spec in specs:
            try:
                outcome = run_cell(spec, self.host)
            except KeyboardInterrupt as exc:
                outcome_of: Any = getattr(exc, "outcome", None)
                if outcome_of is not None:
                    on_outcome(outcome_of)
                raise
            on_outcome(outcome)
