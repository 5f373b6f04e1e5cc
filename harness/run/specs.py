"""Cells as :class:`~harness.contracts.executor.CellSpec`: the resolved suite travels as data.

The suite was parsed and validated once, where it was loaded; each spec carries its plain form
(:meth:`harness.suite.Suite.plain`), the cell's place in the matrix and its config hash, so a
worker anywhere rebuilds exactly this cell without reading the suite file, and refuses data that
no longer gives that hash (:func:`harness.run.executors.load_cell`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.contracts.executor import CellSpec
from harness.suite import Cell, Suite


def cell_specs(suite: Suite, todo: list[tuple[Cell, Any]], parent: str, uri: str,
               options: dict[str, Any]) -> list[CellSpec]:
    """One spec per ``(cell, resume decision)``, all sharing one plain copy of the suite."""
    path, plain = str(Path(suite.path).resolve()), suite.plain()
    return [CellSpec(path, suite.profile, plain, (cell.method, cell.codebook_size, cell.dim, cell.seed),
                     cell.config_hash, cell.run_name, parent, uri,
                     {**options, "timeout": float(cell.config["train"].get("timeout") or 0)},
                     resume.plain() if resume is not None else None)
            for cell, resume in todo]
