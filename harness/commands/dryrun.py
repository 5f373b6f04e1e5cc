"""``--dry-run`` of ``harness run`` and ``harness tune``: the cells a command would run, counted, none run.

Counts come from the same selection the command uses (profile, ``--set``, ``--seeds``,
``-q``, ``--bits``, ``--shard``), so a suite's stated size can be checked, not estimated.
"""

from __future__ import annotations

from typing import Any

from harness.report.table import markdown


def cell_table(cells: list[Any]) -> str:
    """One row per method: codebook sizes, dims, seeds and its number of cells."""
    rows: dict[str, list[Any]] = {}
    for cell in cells:
        rows.setdefault(cell.method, []).append(cell)
    return markdown(["method", "K", "dim", "seeds", "cells"],
                    [[m, ", ".join(str(k) for k in sorted({c.codebook_size for c in cs})),
                      ", ".join(str(d) for d in sorted({c.dim for c in cs})), len({c.seed for c in cs}), len(cs)]
                     for m, cs in rows.items()])


def print_run(host: Any, suite: Any, methods: list[str] | None, options: Any) -> int:
    """The cells, checked as the run checks them but with parameters read from the plugins' source
    (no torch, unless ``--bits`` builds quantizers to ask their rate)."""
    from harness.run.selection import select_cells

    cells = select_cells(host, suite, methods, options.shard, options.bits, load=False)
    print(cell_table(cells))
    print(f"\n{len(cells)} cells of suite {suite.name!r} (profile {suite.profile!r}); nothing was run")
    return 0


def print_tune(host: Any, suite: Any, methods: list[str] | None, options: Any) -> int:
    from harness.run.selection import select_cells, select_shard
    from harness.run.tune import check_tuning, trial_groups

    cells = select_cells(host, suite, methods, bits=options.bits)
    tuning = check_tuning(host, suite, cells)
    trials = select_shard([c for g in trial_groups(host, suite, tuning, cells) for c in g.cells], options.shard)
    print(cell_table(cells))
    print(f"\n{len(trials)} trials ({tuning.budget} per configuration, {tuning.direction} {tuning.metric} on "
          f"the {tuning.split!r} split), then {len(select_shard(cells, options.shard))} cells at the chosen "
          f"settings, of suite {suite.name!r} (profile {suite.profile!r}); nothing was run")
    return 0
