"""Which cells a command runs: the suite's cells checked, at one rate (``--bits``), one shard's slice.

Shared by ``harness run``, its ``--dry-run``, ``harness tune`` and the pytest plugin's collection;
nothing here imports torch unless ``--bits`` builds the quantizers to ask their rate.
"""

from __future__ import annotations

from harness.cell.build import check_suite
from harness.errors import UsageError
from harness.host import Host
from harness.suite import Cell, Suite


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: this process runs cells 2, 6, 10, ... (1-based)."""
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard expects I/N such as 1/4, got {text!r}") from None
    if not 1 <= i <= n:
        raise UsageError(f"--shard {text}: I must be between 1 and N")
    return i, n


def select_shard(cells: list[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    if shard is None:
        return cells
    i, n = shard
    return cells[i - 1 :: n]


def select_cells(host: Host, suite: Suite, methods: list[str] | None,
                 shard: tuple[int, int] | None = None, bits: float | None = None, load: bool = True) -> list[Cell]:
    """The suite's cells (checked: every name and parameter exists), at rate ``bits`` if given
    (harness.run.rate), this shard's slice. ``load=False``: parameters are read from the plugins'
    source where it settles them (a dry run: no torch; :func:`harness.cell.build.check_suite`)."""
    from harness.run.rate import select_rate

    cells = suite.cells(methods)
    check_suite(host, suite, cells, load=load)
    if any((c.config["train"].get("timeout") or 0) < 0 for c in cells):
        raise suite.error("train.timeout must be >= 0 seconds (0: no limit)", ("train", "timeout"))
    return select_shard(select_rate(host, cells, bits), shard)
