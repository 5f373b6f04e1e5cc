"""Leaderboard output: Markdown (also the terminal form), CSV and a self-contained HTML page.

The HTML page carries everything inline (CSS, plots as base64 PNG data URIs,
no scripts, no fonts): it opens from a file, an MLflow artifact view or an
air-gapped machine alike.
"""

from __future__ import annotations

import base64
import html

from harness.leaderboard.build import Leaderboard, Row
from harness.table import csv_table, markdown

ARROW = {True: "↑", False: "↓"}
META = (("suite", "suite"), ("profile", "profile"), ("suite version", "version"),
        ("harness version", "harness_version"), ("cells made by harness", "cell_harness_versions"),
        ("git commits", "git_commits"), ("devices", "devices"), ("store", "store"), ("built", "built"),
        ("also recorded", "not_shown"))


def is_best(board: Leaderboard, row: Row, column: str) -> bool:
    """The best measured value of a column, in that metric's direction (reported rows never win;
    a column only one measured row has is not a comparison, so nothing there is marked)."""
    best = board.best(column)
    if row.reported or column not in row.metrics or best is None:
        return False
    return row.metrics[column].mean == best and sum(column in r.metrics for r in board.measured) > 1


def split_columns(board: Leaderboard) -> tuple[list[str], list[str]]:
    """Main columns, and the per-stage ones (``utilization/stage0``...) that only multi-stage
    quantizers have: those go to their own table so the main one stays readable."""
    stages = [c for c in board.columns if "/stage" in c]
    return [c for c in board.columns if c not in stages], stages


def _cells(board: Leaderboard, row: Row, mark_best: bool, columns: list[str] | None = None) -> list[str]:
    out = []
    for column in board.columns if columns is None else columns:
        if column in row.metrics:
            text = row.metrics[column].format()
            if mark_best and is_best(board, row, column):
                text = f"**{text}**"
            out.append(text)
        elif column in row.unavailable:
            out.append("unavailable")
        else:
            out.append("failed" if row.n == 0 and not row.reported else "–")
    return out


def headers(board: Leaderboard, columns: list[str] | None = None) -> list[str]:
    columns = board.columns if columns is None else columns
    return ["method", "K", "dim", "n", *[f"{c} {ARROW[board.higher_is_better[c]]}" for c in columns], "status"]


def status_text(row: Row) -> str:
    if row.reported:
        return f"reported: {row.source}" + (f" ({row.note})" if row.note else "")
    if row.n == 0:
        return f"failed ({row.failed} of {row.failed} seeds)"
    return f"{row.failed} of {row.n + row.failed} seeds failed" if row.failed else "ok"


def _value(board: Leaderboard, key: str) -> str:
    return {"suite": board.suite, "profile": board.profile, "version": str(board.version)}.get(
        key, board.meta.get(key, ""))


def _claims_rows(board: Leaderboard) -> list[list[str]]:
    return [[c.id, c.status, "" if c.observed is None else f"{c.observed:.4g}", str(c.n), c.check, c.text]
            for c in board.claims.claims]


def _claims_intro(board: Leaderboard) -> str:
    return board.claims.describe()


def _md_table(board: Leaderboard, rows: list[Row], columns: list[str]) -> str:
    return markdown(headers(board, columns),
                    [[r.method, r.codebook_size, r.dim, r.n if not r.reported else "–",
                      *_cells(board, r, True, columns), status_text(r)] for r in rows])


def to_markdown(board: Leaderboard) -> str:
    main, stages = split_columns(board)
    title = f"## {board.suite} (profile {board.profile}, suite version {board.version})\n\n"
    if board.meta.get("description"):
        title += board.meta["description"] + "\n\n"
    meta = [f"{label}: `{_value(board, key)}`" for label, key in META[3:] if _value(board, key)]
    if meta:
        title += "; ".join(meta) + ".\n\n"
    notes = [f"- `{c}` unavailable: {reason}" for r in board.rows for c, reason in r.unavailable.items()]
    foot = ("\n\nmean ± std over seeds (n = finished seeds); ↑ higher is better, ↓ lower is better; "
            f"best measured value in bold; sorted by `{board.primary}`; rows marked `reported` are the "
            "papers' numbers, not measured here, and never marked best.")
    if notes:
        foot += "\n\n" + "\n".join(sorted(set(notes)))
    if stages:
        foot += ("\n\n### Per-stage metrics (multi-stage quantizers)\n\n"
                 + _md_table(board, _staged(board, stages), stages))
    if board.claims is not None:
        foot += ("\n\n### Claims\n\n" + _claims_intro(board) + "holds / FAILS for asserted claims, "
                 "reported for findings the suite only measures.\n\n"
                 + markdown(["claim", "status", "observed", "n", "check", "text"], _claims_rows(board)))
    if board.figures:
        foot += "\n\nPlots (utilization over training, metrics against K, latent snapshots): see the HTML page."
    return title + _md_table(board, board.rows, main) + foot + "\n"


def _staged(board: Leaderboard, stages: list[str]) -> list[Row]:
    return [r for r in board.rows if any(c in r.metrics or c in r.unavailable for c in stages)]


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


# -- HTML --------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1280px; padding: 0 1em; color: #1a1a1a; line-height: 1.4; }
.scroll { overflow-x: auto; }
h1 { margin-bottom: .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1em; font-size: .9em; }
dl.meta dt { color: #555; } dl.meta dd { margin: 0; font-family: ui-monospace, monospace; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; white-space: normal; vertical-align: bottom; }
td.text, th.text { text-align: left; white-space: normal; }
td.best { font-weight: bold; background: #e3f4e4; }
td .std { display: block; font-size: .8em; font-weight: normal; color: #555; }
td.best::before { content: "★ "; color: #2e7d32; }
td.failed { color: #b00020; font-weight: bold; background: #fdecee; }
td.unavailable { color: #8a6d00; }
tr.reported td { color: #555; font-style: italic; background: #fafafa; }
tr.group th { text-align: left; background: #fff; border: none; padding-top: .8em; }
tr.partial td.status { color: #b00020; }
td.holds { color: #1b5e20; font-weight: bold; } td.FAILS { color: #b00020; font-weight: bold; }
td.reported-claim { color: #0d47a1; } td.no-data { color: #888; }
.legend, figcaption, .note { color: #444; font-size: .88em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
.latents figure { margin: 1.2em 0; }
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _row_html(board: Leaderboard, row: Row, columns: list[str]) -> str:
    cells = [f'<td class="text">{_e(row.method)}</td>', f"<td>{row.codebook_size or '–'}</td>",
             f"<td>{row.dim or '–'}</td>", f"<td>{row.n if not row.reported else '–'}</td>"]
    for column, text in zip(columns, _cells(board, row, False, columns), strict=True):
        css = "best" if is_best(board, row, column) else text if text in ("failed", "unavailable") else ""
        title = " title=\"best measured value in this metric's direction\"" if css == "best" else ""
        if column in row.unavailable:
            title = f' title="{_e(row.unavailable[column])}"'
        stat = row.metrics.get(column)
        if stat is not None and stat.n > 1:  # the std on its own line keeps wide tables readable
            mean, std = text.split(" ± ", 1)
            text_html = f'{_e(mean)}<span class="std"> ± {_e(std)}</span>'
        else:
            text_html = _e(text)
        cells.append(f'<td class="{css}"{title}>{text_html}</td>')
    cells.append(f'<td class="text status">{_e(status_text(row))}</td>')
    kind = "reported" if row.reported else "failed" if row.n == 0 else "partial" if row.failed else "ok"
    return f'<tr class="{kind}" data-method="{_e(row.method)}">{"".join(cells)}</tr>'


def _table_html(board: Leaderboard, rows: list[Row], columns: list[str], table_id: str) -> str:
    head = "".join(f'<th class="{"text" if h in ("method", "status") else ""}"'
                   + (f' title="{"higher" if board.higher_is_better[h.rsplit(" ", 1)[0]] else "lower"} is better"'
                      if h.rsplit(" ", 1)[0] in board.higher_is_better else "") + f">{_e(h)}</th>"
                   for h in headers(board, columns))
    width = len(columns) + 5
    body = [_row_html(board, r, columns) for r in rows if not r.reported]
    reported = [r for r in rows if r.reported]
    if reported:
        body.append(f'<tr class="group"><th colspan="{width}">Reported by the papers '
                    "(not measured here; never marked best)</th></tr>")
        body += [_row_html(board, r, columns) for r in reported]
    return (f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>\n'
            + "\n".join(body) + "\n</tbody></table></div>")


def _tables_html(board: Leaderboard) -> str:
    main, stages = split_columns(board)
    out = _table_html(board, board.rows, main, "leaderboard")
    if stages:
        out += ("\n<h3>Per-stage metrics (multi-stage quantizers)</h3>\n"
                + _table_html(board, _staged(board, stages), stages, "stages"))
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
    intro = _e(_claims_intro(board)).replace("`", "")
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


def to_html(board: Leaderboard) -> str:
    meta = "".join(f"<dt>{_e(label)}</dt><dd>{_e(_value(board, key))}</dd>"
                   for label, key in META if _value(board, key))
    cells = board.meta.get("cells")
    if cells:
        meta += f"<dt>cells</dt><dd>{_e(cells)} ({_e(board.meta.get('failed_cells', '0'))} failed)</dd>"
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
<dl class="meta">{meta}</dl>
<h2>Results</h2>
<p class="legend">Mean ± std over seeds; <b>n</b> = finished seeds. ↑ higher is better, ↓ lower is better.
★ marks the best measured value of each column in its direction. Sorted by
<code>{_e(board.primary)}</code>. Failed cells read <span style="color:#b00020">failed</span>, never a number.
Rows under "Reported by the papers" are numbers from the papers, marked with their source.</p>
{_tables_html(board)}
{notes_html}
{_claims_html(board)}
{_figures_html(board)}
</body></html>
"""


RENDERERS = {"md": to_markdown, "csv": to_csv, "html": to_html}
