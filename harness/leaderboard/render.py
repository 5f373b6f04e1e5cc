"""Leaderboard output: Markdown (also the terminal form), CSV and a self-contained HTML page.

The HTML page (:mod:`harness.leaderboard.html_page`) carries everything inline
(CSS, plots as base64 PNG data URIs, no scripts, no fonts): it opens from a
file, an MLflow artifact view or an air-gapped machine alike.
"""

from __future__ import annotations

from harness.leaderboard.build import Leaderboard, Row
from harness.leaderboard.collapse import collapse_text
from harness.leaderboard.html_page import to_html
from harness.leaderboard.json_page import to_json
from harness.leaderboard.stats import (
    INTERVAL_NOTE,
    RANK_NOTE,
    TIE_NOTE,
    board_stats,
    group_sentence,
    rank_text,
    row_interval,
    tie_word,
)
from harness.leaderboard.text import (
    META,
    cell_text,
    digest_text,
    headers,
    is_best,
    meta_value,
    rate_cells,
    split_columns,
    stack_lines,
    staged,
    status_text,
)
from harness.report.table import csv_table, markdown

__all__ = ["RENDERERS", "to_csv", "to_html", "to_json", "to_markdown"]


def _md_row(board: Leaderboard, row: Row, columns: list[str]) -> list[str]:
    cells = []
    for column in columns:
        text = cell_text(board, row, column)
        cells.append(f"**{text}**" if is_best(board, row, column) else text)
    code = digest_text(row)
    return [row.label, row.codebook_size, row.dim, *rate_cells(board, row), row.n if not row.reported else "–",
            *cells, status_text(row, board), f"`{code}`" if code else ""]


def _md_table(board: Leaderboard, rows: list[Row], columns: list[str]) -> str:
    return markdown(headers(board, columns), [_md_row(board, r, columns) for r in rows])


def _md_tables(board: Leaderboard, columns: list[str], stage_columns: bool = False) -> str:
    """One table per rate group (a heading each when there are several), then the papers' rows."""
    groups = board.groups()
    parts = []
    for label, rows in groups:
        rows = staged(board, rows, columns) if stage_columns else rows
        if not rows:
            continue
        heading = f"#### {label}\n\n" if len(groups) > 1 else ""
        parts.append(heading + _md_table(board, rows, columns) + _md_group_stats(board, rows, stage_columns))
    reported = staged(board, board.reported, columns) if stage_columns else board.reported
    if reported:
        heading = "#### Reported by the papers (not measured here; never marked best)\n\n" if parts else ""
        parts.append(heading + _md_table(board, reported, columns))
    return "\n\n".join(parts)


def _md_group_stats(board: Leaderboard, rows: list[Row], stage_columns: bool) -> str:
    """The group's tie set, untested rows and top pair on the primary metric, under its table."""
    group = None if stage_columns or not rows else board_stats(board).group(rows[0], board.primary)
    return f"\n\n{group_sentence(group)}" if group is not None else ""


def _md_ranks(board: Leaderboard) -> str:
    ranks = board_stats(board).ranks
    if not ranks:
        return ""
    return (f"\n\n### Mean rank over rate groups (`{board.primary}`)\n\n" + RANK_NOTE + "\n\n"
            + markdown(["method", "mean rank [95% CI]"], [[name, rank_text(r)] for name, r in ranks.items()]))


def _md_header(board: Leaderboard) -> str:
    title = f"## {board.suite} (profile {board.profile}, suite version {board.version or '–'})\n\n"
    if board.meta.get("description"):
        title += board.meta["description"] + "\n\n"
    if board.meta.get("no_runs"):
        title += f"**No run recorded yet**: {board.meta['no_runs']}.\n\n"
    meta = [f"{label}: `{meta_value(board, key)}`" for label, key in META[3:-1] if meta_value(board, key)]
    if meta:
        title += "; ".join(meta) + ".\n\n"
    stacks = stack_lines(board)
    if stacks:
        title += "Metric stacks (what produced each number):\n\n" + "\n".join(
            f"- `{metric}`: {stack}" for metric, stack in stacks) + "\n\n"
    return title


def _md_foot(board: Leaderboard) -> str:
    foot = (f"\n\n{INTERVAL_NOTE} ↑ higher is better, ↓ lower is better; "
            f"rows are grouped by rate (bits per token). {TIE_NOTE} "
            f"Sorted by `{board.primary}` within a group; `plugin code` is the "
            "digest of the plugin's source files and the harness version (cells of older code are never "
            "averaged in); rows marked `reported` are the papers' numbers, not measured here, and "
            "never marked best.")
    notes = [f"- `{c}` unavailable: {reason}" for r in board.rows for c, reason in r.unavailable.items()]
    if notes:
        foot += "\n\n" + "\n".join(sorted(set(notes)))
    return foot


def to_markdown(board: Leaderboard) -> str:
    main, stages = split_columns(board)
    text = _md_header(board) + _md_tables(board, main) + _md_foot(board) + _md_ranks(board)
    if stages:
        text += "\n\n### Per-stage metrics (multi-stage quantizers)\n\n" + _md_tables(board, stages, True)
    if board.claims is not None:
        text += ("\n\n### Claims\n\n" + board.claims.describe() + "holds / FAILS for asserted claims, "
                 "reported for findings the suite only measures.\n\n"
                 + markdown(["claim", "status", "observed", "n", "check", "text"],
                            [[c.id, c.status, "" if c.observed is None else f"{c.observed:.4g}", str(c.n),
                              c.check, c.text] for c in board.claims.claims]))
    if board.figures:
        text += ("\n\nPlots (rate-distortion, utilization over training, metrics against K, latent "
                 "snapshots): see the HTML page.")
    return text + "\n"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def to_csv(board: Leaderboard) -> str:
    head = ["method", "quantizer", "codebook_size", "dim", "n", "failed", "status", "source", "variant",
            "bits_per_token", "bits_per_pixel", "tokens_per_item", "pixels_per_item", "plugin_digest",
            "older_digest_cells", "seed_states"]
    for c in board.columns:
        head += [f"{c}_mean", f"{c}_std", f"{c}_nan", f"{c}_ci_low", f"{c}_ci_high", f"{c}_tied_with_best"]
    head += ["rate_group", "recipe", "tuned_values", "tuned_budget", "tuned_cost_s"]  # recipe: tuned, shared
    head.append("collapse")  # harness.leaderboard.collapse: "" or "collapsed: 4% of codes used"
    rows = []
    for r in board.rows:
        states = " ".join(f"{s.seed}:{s.state}" for s in r.seeds.values())
        line = [r.method, r.quantizer, r.codebook_size, r.dim, r.n, r.failed, r.status, r.source, r.variant,
                _num(r.bits_per_token), _num(r.bits_per_pixel), r.tokens_per_item or "",
                r.pixels_per_item or "", r.digest, r.left_out, states]
        for c in board.columns:
            stat = r.metrics.get(c)
            line += [f"{stat.mean:.6g}", f"{stat.std:.6g}"] if stat else ["", ""]
            line.append(r.nan.get(c, 0))
            bounds = row_interval(r, c)
            line += [_num(bounds[0]), _num(bounds[1])] if bounds else ["", ""]
            line.append(tie_word(board_stats(board), r, c))
        rows.append(line + [board_stats(board).group_of.get(id(r), ""), r.tuning, r.tuned_values,
                            r.tuned_budget or "", _num(r.tuned_cost_s), collapse_text(r)])
    return csv_table(head, rows)


RENDERERS = {"md": to_markdown, "csv": to_csv, "html": to_html, "json": to_json}
