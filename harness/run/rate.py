"""``--bits B``: keep the cells of one rate group (bits per token within the leaderboard's tolerance of B).

A suite's methods reach one rate with different codebook sizes (K = 256 for one
codebook, 2 stages of 16 for residual VQ, 240 levels for FSQ), so ``--set
matrix.codebook_size`` cannot name a rate; the quantizer itself can: each
configuration is built once (on the CPU, no training) and asked its
``bits_per_token``, the number the leaderboard groups rows by.
"""

from __future__ import annotations

from typing import Any

from harness.errors import UsageError
from harness.suite import Cell


def cell_bits(host: Any, cell: Cell) -> float:
    """The rate of the cell's quantizer, as the leaderboard will group it."""
    from harness.cell.build import build_quantizer, complete_config
    from harness.cell.provenance import bits_per_token

    return bits_per_token(build_quantizer(host, complete_config(host, cell)))


def select_rate(host: Any, cells: list[Cell], bits: float | None) -> list[Cell]:
    """The cells within the leaderboard's rate tolerance of ``bits`` (all of them when ``None``)."""
    if bits is None:
        return cells
    from harness.leaderboard.rows import RATE_TOLERANCE

    rates: dict[tuple[str, int, int], float] = {}
    for cell in cells:
        key = (cell.method, cell.codebook_size, cell.dim)
        if key not in rates:
            rates[key] = cell_bits(host, cell)
    kept = [c for c in cells if abs(rates[(c.method, c.codebook_size, c.dim)] - bits) <= RATE_TOLERANCE]
    if not kept:
        found = ", ".join(f"{b:g}" for b in sorted(set(rates.values())))
        raise UsageError(f"--bits {bits:g}: no cell of the selection runs at that rate (rates: {found})")
    return kept
