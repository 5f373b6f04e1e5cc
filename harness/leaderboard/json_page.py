"""The board as JSON, for other tools: the numbers of every other form, with their uncertainty.

Rows carry per-metric mean, std, n, the 95% interval bounds and whether the row
is tied with the best of its rate group; each group carries its tie sets, top
pair, P(X > Y) and seeds needed; the board carries the mean ranks.
"""

from __future__ import annotations

import json
from typing import Any

from harness.leaderboard.build import Leaderboard, Row
from harness.leaderboard.collapse import collapse_text
from harness.leaderboard.stats import (
    ALPHA,
    CONFIDENCE,
    LIBRARY,
    POWER,
    BoardStats,
    GroupStats,
    board_stats,
    row_interval,
)


def _metric(stats: BoardStats, row: Row, column: str) -> dict[str, Any]:
    stat = row.metrics[column]
    bounds = row_interval(row, column)
    return {"mean": stat.mean, "std": stat.std, "n": stat.n, "nan": row.nan.get(column, 0),
            "ci_low": bounds[0] if bounds else None, "ci_high": bounds[1] if bounds else None,
            "tied_with_best": stats.tied(row, column)}


def _row(board: Leaderboard, stats: BoardStats, row: Row) -> dict[str, Any]:
    return {"method": row.method, "label": row.label, "quantizer": row.quantizer,
            "codebook_size": row.codebook_size, "dim": row.dim, "variant": row.variant,
            "n": row.n, "failed": row.failed, "status": row.status, "reported": row.reported,
            "source": row.source, "bits_per_token": row.bits_per_token,
            "bits_per_pixel": row.bits_per_pixel, "plugin_digest": row.digest,
            "rate_group": stats.group_of.get(id(row)),
            "seed_states": {str(s.seed): s.state for s in row.seeds.values()},
            "collapse": collapse_text(row),
            "metrics": {c: _metric(stats, row, c) for c in board.columns if c in row.metrics}}


def _group(group: GroupStats) -> dict[str, Any]:
    pair = [r.label for r in group.pair] if group.pair else None
    return {"tested": [r.label for r in group.tested], "untested": [r.label for r in group.untested],
            "tied_with_best": [r.label for r in group.tied] if len(group.tested) >= 2 else None,
            "top_pair": pair, "p_improvement": group.p_improvement,
            "top_pairs": [{"x": a.label, "y": b.label, "p_x_better": p} for a, b, p in group.top_pairs],
            "separated": group.separated if pair else None, "seeds_needed": group.seeds,
            "seeds_needed_alpha": group.level if pair else None}


def board_json(board: Leaderboard) -> dict[str, Any]:
    stats = board_stats(board)
    groups = []
    for label, _ in board.groups():
        columns = {c: _group(stats.groups[(label, c)]) for c in board.columns if (label, c) in stats.groups}
        groups.append({"label": label, "columns": columns})
    return {
        "suite": board.suite, "profile": board.profile, "version": board.version,
        "primary": board.primary, "higher_is_better": board.higher_is_better,
        "meta": board.meta,
        "statistics": {"library": LIBRARY, "interval": f"{CONFIDENCE:.0%} Student t over seeds",
                       "ties": f"two-sided Welch t-tests, Holm-corrected, alpha {ALPHA}",
                       "seeds_needed_power": POWER},
        "rows": [_row(board, stats, r) for r in board.rows],
        "groups": groups,
        "mean_ranks": {name: {"mean": r[0], "ci_low": r[1], "ci_high": r[2], "groups": r[3]}
                       for name, r in stats.ranks.items()},
    }


def to_json(board: Leaderboard) -> str:
    return json.dumps(board_json(board), indent=1, ensure_ascii=False, default=float) + "\n"
