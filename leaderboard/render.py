"""Leaderboard output: Markdown (also the terminal form), CSV and a self-contained HTML page."""

from __future__ import annotations

import html

from harness.leaderboard.build import Leaderboard, Row
from harness.table import csv_table, markdown

ARROW = {True: "↑", False: "↓"}


def _cells(board: Leaderboard, row: Row, mark_best: bool) -> list[str]:
    out = []
    for column in board.columns:
        if column in row.metrics:
            text = row.metrics[column].format()
            best = board.best(column)
            if mark_best and not row.reported and best is not None and row.metrics[column].mean == best:
                text = f"**{text}**"
            out.append(text)
        elif column in row.unavailable:
            out.append("unavailable")
        else:
            out.append("failed" if row.n == 0 and not row.reported else "–")
    return out


def headers(board: Leaderboard) -> list[str]:
    return ["method", "K", "dim", "n", *[f"{c} {ARROW[board.higher_is_better[c]]}" for c in board.columns], "status"]


def to_markdown(board: Leaderboard) -> str:
    rows = [[r.method, r.codebook_size, r.dim, r.n if not r.reported else "–", *_cells(board, r, True),
             r.status if not r.reported else f"reported: {r.source}"] for r in board.rows]
    title = f"## {board.suite} (profile {board.profile}, suite version {board.version})\n\n"
    notes = [f"- `{c}` unavailable: {reason}" for r in board.rows for c, reason in r.unavailable.items()]
    foot = ("\n\nmean ± std over seeds (n = finished seeds); best measured value in bold; "
            f"sorted by `{board.primary}`.")
    if notes:
        foot += "\n\n" + "\n".join(sorted(set(notes)))
    return title + markdown(headers(board), rows) + foot + "\n"


def to_csv(board: Leaderboard) -> str:
    head = ["method", "quantizer", "codebook_size", "dim", "n", "failed", "status", "source"]
    for c in board.columns:
        head += [f"{c}_mean", f"{c}_std"]
    rows = []
    for r in board.rows:
        line = [r.method, r.quantizer, r.codebook_size, r.dim, r.n, r.failed, r.status, r.source]
        for c in board.columns:
            stat = r.metrics.get(c)
            line += [f"{stat.mean:.6g}", f"{stat.std:.6g}"] if stat else ["", ""]
        rows.append(line)
    return csv_table(head, rows)


def to_html(board: Leaderboard) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers(board))
    body = []
    for r in board.rows:
        cells = [r.method, r.codebook_size, r.dim, r.n if not r.reported else "–",
                 *_cells(board, r, False), r.status if not r.reported else f"reported: {r.source}"]
        best_cols = {i + 4 for i, c in enumerate(board.columns)
                     if c in r.metrics and not r.reported and r.metrics[c].mean == board.best(c)}
        tds = "".join(f'<td class="{"best" if i in best_cols else ""}">{html.escape(str(v))}</td>'
                      for i, v in enumerate(cells))
        body.append(f'<tr class="{"reported" if r.reported else r.status.replace(" ", "-")}">{tds}</tr>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(board.suite)} leaderboard</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: .3em .6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
td.best {{ font-weight: bold; background: #e8f5e9; }}
tr.reported td {{ color: #555; font-style: italic; }}
tr.failed td {{ color: #b00020; }}
</style></head><body>
<h1>{html.escape(board.suite)} leaderboard</h1>
<p>Profile <b>{html.escape(board.profile)}</b>, suite version {board.version}; mean ± std over seeds;
best measured value per column in bold; sorted by <code>{html.escape(board.primary)}</code>.</p>
<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""


RENDERERS = {"md": to_markdown, "csv": to_csv, "html": to_html}
