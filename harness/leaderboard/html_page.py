"""The self-contained HTML page: inline CSS, plots as base64 PNG data URIs, no scripts, no fonts."""

from __future__ import annotations

import base64
import html

from harness.leaderboard.build import Leaderboard, Row
from harness.leaderboard.collapse import collapse_text
from harness.leaderboard.stats import INTERVAL_NOTE, TIE_NOTE
from harness.leaderboard.stats_html import TIED_TITLE, group_row_html, stats_section_html
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

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1880px; padding: 0 1em; color: #1a1a1a; line-height: 1.4; }
body > * { max-width: 1280px; } body > .scroll { max-width: none; }
.scroll { overflow-x: auto; }
h1 { margin-bottom: .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1em; font-size: .9em; }
dl.meta dt { color: #555; } dl.meta dd { margin: 0; font-family: ui-monospace, monospace; }
dl.meta dd.warn { color: #b00020; font-weight: bold; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; white-space: normal; vertical-align: bottom; }
td.text, th.text { text-align: left; white-space: normal; }
td.code { font-family: ui-monospace, monospace; font-size: .85em; color: #555; }
td.best { font-weight: bold; background: #e3f4e4; }
td .std { display: block; font-size: .8em; font-weight: normal; color: #555; }
td.best::before { content: "★ "; color: #2e7d32; }
td.failed, td.killed, td.nan { color: #b00020; font-weight: bold; background: #fdecee; }
td.interrupted, td.running { color: #8a6d00; font-weight: bold; background: #fff8e1; }
td.unavailable { color: #8a6d00; }
tr.reported td { color: #555; font-style: italic; background: #fafafa; }
tr.group th { text-align: left; background: #fff; border: none; padding-top: .8em; }
tr.partial td.status, tr.failed td.status, tr.killed td.status { color: #b00020; }
tr.interrupted td.status, tr.running td.status { color: #8a6d00; }
td.status.collapsed { color: #b00020; font-weight: bold; }
td.holds { color: #1b5e20; font-weight: bold; } td.FAILS { color: #b00020; font-weight: bold; }
td.reported-claim { color: #0d47a1; } td.no-data { color: #888; }
.legend, figcaption, .note { color: #444; font-size: .88em; }
.empty { padding: .8em 1em; background: #fff8e1; border: 1px solid #f0d68a; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
.latents figure { margin: 1.2em 0; }
"""
#: cell words that get a class of their own
WORDS = {"failed": "failed", "unavailable": "unavailable", "NaN": "nan", "killed": "killed",
         "interrupted": "interrupted", "running": "running"}


def _e(value: object) -> str:
    return html.escape(str(value))


def _metric_cell(board: Leaderboard, row: Row, column: str) -> str:
    text = cell_text(board, row, column)
    best = is_best(board, row, column)
    css = "best" if best else "nan" if row.nan.get(column) else WORDS.get(text, "")
    title = f' title="{_e(TIED_TITLE)}"' if best else ""
    if column in row.unavailable and column not in row.metrics:
        title = f' title="{_e(row.unavailable[column])}"'
    stat = row.metrics.get(column)
    if stat is not None and not row.reported:  # the interval on its own line keeps wide tables readable
        mean, interval = text.split(" ", 1)
        text_html = f'{_e(mean)}<span class="std">{_e(interval)}</span>'
    else:
        text_html = _e(text)
    return f'<td class="{css}"{title}>{text_html}</td>'


def _row_html(board: Leaderboard, row: Row, columns: list[str]) -> str:
    cells = [f'<td class="text">{_e(row.label)}</td>', f"<td>{row.codebook_size or '–'}</td>",
             f"<td>{row.dim or '–'}</td>", *(f"<td>{_e(v)}</td>" for v in rate_cells(board, row)),
             f"<td>{row.n if not row.reported else '–'}</td>"]
    cells += [_metric_cell(board, row, column) for column in columns]
    flagged = " collapsed" if collapse_text(row) else ""  # harness.leaderboard.collapse
    cells.append(f'<td class="text status{flagged}">{_e(status_text(row, board))}</td>')
    cells.append(f'<td class="code" title="{_e(row.digest)}">{_e(digest_text(row))}</td>')
    kind = "reported" if row.reported else row.status
    return f'<tr class="{kind}" data-method="{_e(row.method)}">{"".join(cells)}</tr>'


def _head_html(board: Leaderboard, columns: list[str]) -> str:
    out = []
    for h in headers(board, columns):
        name = h.rsplit(" ", 1)[0]
        title = (f' title="{"higher" if board.higher_is_better[name] else "lower"} is better"'
                 if name in board.higher_is_better else "")
        css = "text" if h in ("method", "status") else ""
        out.append(f'<th class="{css}"{title}>{_wrappable(h)}</th>')
    return "".join(out)


def _wrappable(header: str) -> str:
    """A header that may break after ``/`` and ``_`` (``dead_codes/stage0``): wide tables fit a
    screen without hiding columns or abbreviating names (the text a reader copies is unchanged)."""
    return _e(header).replace("/", "/<wbr>").replace("_", "_<wbr>")


def _table_html(board: Leaderboard, columns: list[str], table_id: str, stage_columns: bool = False) -> str:
    width = len(headers(board, columns))
    groups = board.groups()
    body = []
    for label, rows in groups:
        rows = staged(board, rows, columns) if stage_columns else rows
        if rows and len(groups) > 1:
            body.append(f'<tr class="group rate"><th colspan="{width}">{_e(label)}</th></tr>')
        body += [_row_html(board, r, columns) for r in rows]
        body.append("" if stage_columns else group_row_html(board, rows, width))
    reported = staged(board, board.reported, columns) if stage_columns else board.reported
    if reported:
        body.append(f'<tr class="group"><th colspan="{width}">Reported by the papers '
                    "(not measured here; never marked best)</th></tr>")
        body += [_row_html(board, r, columns) for r in reported]
    return (f'<div class="scroll"><table id="{table_id}"><thead><tr>{_head_html(board, columns)}</tr></thead>'
            "<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>")


def _tables_html(board: Leaderboard) -> str:
    main, stages = split_columns(board)
    out = ""
    if board.meta.get("no_runs"):
        out += f'<p class="empty"><b>No run recorded yet.</b> {_e(board.meta["no_runs"])}.</p>'
    out += _table_html(board, main, "leaderboard")
    if stages:
        out += ("\n<h3>Per-stage metrics (multi-stage quantizers)</h3>\n"
                + _table_html(board, stages, "stages", True))
    return out


def _claims_html(board: Leaderboard) -> str:
    if board.claims is None:
        return ('<h2>Claims</h2><p class="note">No suite run of this profile and version recorded '
                "claims.</p>")
    css = {"holds": "holds", "FAILS": "FAILS", "reported": "reported-claim", "no data": "no-data"}
    rows = "".join(
        f'<tr><td class="text">{_e(c.id)}</td><td class="text {css.get(c.status, "")}">{_e(c.status)}</td>'
        f'<td>{"" if c.observed is None else f"{c.observed:.4g}"}</td><td>{c.n}</td>'
        f'<td class="text">{_e(c.check)}</td><td class="text">{_e(c.text)}</td></tr>'
        for c in board.claims.claims)
    intro = _e(board.claims.describe()).replace("`", "")
    return (f"<h2>Claims</h2><p class=\"note\">{intro}<b>holds</b> / <b>FAILS</b> for asserted claims, "
            "<b>reported</b> for findings the suite only measures.</p>"
            '<div class="scroll"><table id="claims"><thead><tr><th class="text">claim</th><th class="text">status</th>'
            '<th>observed</th><th>n</th><th class="text">check</th><th class="text">text</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def _figure_html(figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (f'<figure id="fig-{_e(figure.id)}"><img src="data:image/png;base64,{data}" alt="{_e(figure.title)}">'
            f"<figcaption><b>{_e(figure.title)}.</b> {_e(figure.caption)}</figcaption></figure>")


def _figures_html(board: Leaderboard) -> str:
    if not board.figures:
        return ""
    latents = [f for f in board.figures if f.id.startswith("latent-")]
    others = [f for f in board.figures if not f.id.startswith("latent-")]
    out = "<h2>Plots</h2>" + "".join(_figure_html(f) for f in others)
    if latents:
        out += ('<h3>Latent space (toy suites)</h3><div class="latents">'
                + "".join(_figure_html(f) for f in latents) + "</div>")
    return out


def _meta_html(board: Leaderboard) -> str:
    meta = "".join(f"<dt>{_e(label)}</dt><dd>{_e(meta_value(board, key))}</dd>"
                   for label, key in META if meta_value(board, key))
    cells = board.meta.get("cells")
    if cells:
        meta += f"<dt>cells</dt><dd>{_e(cells)} ({_e(board.meta.get('failed_cells', '0'))} failed)</dd>"
    for metric, stack in stack_lines(board):
        warn = ' class="warn"' if stack.startswith("MIXED") else ""
        meta += f"<dt>metric stack: {_e(metric)}</dt><dd{warn}>{_e(stack)}</dd>"
    return f'<dl class="meta">{meta}</dl>'


def to_html(board: Leaderboard) -> str:
    description = f"<p>{_e(board.meta['description'])}</p>" if board.meta.get("description") else ""
    notes = sorted({f"<li><code>{_e(c)}</code> unavailable: {_e(reason)}</li>"
                    for r in board.rows for c, reason in r.unavailable.items()})
    notes_html = f'<ul class="note">{"".join(notes)}</ul>' if notes else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(board.suite)} leaderboard</title>
<style>{CSS}</style></head><body>
<h1>{_e(board.suite)} leaderboard</h1>
{description}
{_meta_html(board)}
<h2>Results</h2>
<p class="legend">{_e(INTERVAL_NOTE.replace("`", ""))} ↑ higher is better, ↓ lower is better.
Rows are grouped by rate (bits per token, equal within a group). {_e(TIE_NOTE)}
Sorted by <code>{_e(board.primary)}</code> within a group. Failed, killed or interrupted cells say so, never a number; a metric that came back NaN reads NaN.
<b>plugin code</b> is the digest of the plugin's source files and the harness version: cells of older
code are never averaged in. Rows under "Reported by the papers" are numbers from the papers, marked with
their source.</p>
{_tables_html(board)}
{notes_html}
{stats_section_html(board)}
{_claims_html(board)}
{_figures_html(board)}
</body></html>
"""
