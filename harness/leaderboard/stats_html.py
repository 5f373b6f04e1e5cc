"""The statistics on the HTML page: a line under each rate group, and a section of its own.

The section lists per rate group the tie set, P(X > Y) between the top rows
(up to three) and the seeds needed to separate the top pair, then each
method's mean rank over the groups with its bootstrap interval. The numbers
come from :mod:`harness.leaderboard.stats`, as in every other form.
"""

from __future__ import annotations

import html

from harness.leaderboard.build import Leaderboard, Row
from harness.leaderboard.stats import (
    ALPHA,
    LIBRARY,
    RANK_NOTE,
    GroupStats,
    board_stats,
    group_sentence,
    rank_text,
    seeds_text,
)

TIED_TITLE = ("tied with the best of this rate group: no row of the group is significantly better "
              f"(Welch t-tests over seeds, Holm-corrected, alpha {ALPHA})")


def _e(value: object) -> str:
    return html.escape(str(value))


def group_row_html(board: Leaderboard, rows: list[Row], width: int) -> str:
    """The group's tie set and top pair on the primary metric, as a row under the group."""
    group = board_stats(board).group(rows[0], board.primary) if rows else None
    if group is None:
        return ""
    text = _e(group_sentence(group)).replace("`", "")
    return f'<tr class="group-stats"><td colspan="{width}" class="text note">{text}</td></tr>'


def _pairs_html(group: GroupStats) -> str:
    return "<br>".join(f"P({_e(a.label)} &gt; {_e(b.label)}) = {p:.2f}" for a, b, p in group.top_pairs)


def _group_html(label: str, group: GroupStats) -> str:
    tied = ", ".join(r.label for r in group.tied) if len(group.tested) >= 2 else "no test: too few seeds"
    untested = ", ".join(f"{r.label} (n={r.metrics[group.column].n})" for r in group.untested) or "–"
    return (f'<tr><td class="text">{_e(label)}</td><td class="text">{_e(tied)}</td>'
            f'<td class="text">{_e(untested)}</td><td class="text">{_pairs_html(group) or "–"}</td>'
            f'<td class="text">{_e(seeds_text(group)) or "–"}</td></tr>')


def _ranks_html(board: Leaderboard) -> str:
    ranks = board_stats(board).ranks
    if not ranks:
        return ""
    body = "".join(f'<tr><td class="text">{_e(name)}</td><td>{_e(rank_text(r))}</td></tr>'
                   for name, r in ranks.items())
    return (f"<h3>Mean rank over rate groups ({_e(board.primary)})</h3><p class=\"note\">{_e(RANK_NOTE)} "
            "The performance profile under Plots shows the same seeds as curves.</p>"
            '<div class="scroll"><table id="ranks"><thead><tr><th class="text">method</th>'
            f"<th>mean rank [95% CI]</th></tr></thead><tbody>{body}</tbody></table></div>")


def stats_section_html(board: Leaderboard) -> str:
    """Tie sets, P(X > Y) between the top rows and seeds needed per group; mean ranks."""
    stats = board_stats(board)
    rows = "".join(_group_html(label, stats.groups[(label, board.primary)]) for label, _ in board.groups()
                   if (label, board.primary) in stats.groups)
    if not rows:
        return ""
    return (f"<h2>Statistics ({_e(board.primary)})</h2><p class=\"note\">Computed with {LIBRARY} over the "
            "finished seeds of each row. Tied with the best: no other row of the group is significantly "
            f"better (two-sided Welch t-tests, Holm-corrected over the row's comparisons, α = {ALPHA}). "
            "P(X &gt; Y): the share of seed pairs in which X beats Y (ties count half). Seeds needed: "
            "seeds per row at which a Welch test separates the top pair with 80% power, if the measured "
            "means and spreads are the truth.</p>"
            '<div class="scroll"><table id="statistics"><thead><tr><th class="text">rate group</th>'
            '<th class="text">tied with the best</th><th class="text">too few seeds to test</th>'
            '<th class="text">P(X &gt; Y), top rows</th><th class="text">seeds needed (top pair)</th>'
            f"</tr></thead><tbody>{rows}</tbody></table></div>" + _ranks_html(board))
