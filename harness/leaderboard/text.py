"""The words and numbers of a board, shared by the Markdown, CSV and HTML forms.

One place decides what a cell reads (a number, ``NaN``, ``failed``,
``interrupted``...), what a row's status says, which value is best (within the
row's rate group only) and which header lines the page carries.
"""

from __future__ import annotations

from harness.cell.provenance import short
from harness.leaderboard.build import Leaderboard, Row, has_pixels, reference_bits_per_pixel
from harness.leaderboard.collapse import collapse_text
from harness.leaderboard.stats import board_stats, interval_text

ARROW = {True: "↑", False: "↓"}
#: header lines: (label, meta key); the first three come from the board itself
META = (("suite", "suite"), ("profile", "profile"), ("suite version", "version"),
        ("harness version", "harness_version"), ("cells made by harness", "cell_harness_versions"),
        ("git commits", "git_commits"), ("devices", "devices"), ("store", "store"), ("built", "built"),
        ("also recorded", "not_shown"), ("older plugin code", "older_digests"),
        ("resume interrupted cells", "resume"), ("no run recorded", "no_runs"))
#: seed states a row reports, in the order its status names them
STATES = ("failed", "killed", "interrupted", "running")


def is_best(board: Leaderboard, row: Row, column: str) -> bool:
    """In the set of rows tied with the best of the row's rate group, in that metric's direction
    (:mod:`harness.leaderboard.stats`: Welch t-tests over seeds, Holm-corrected).

    Reported rows never win, a value with NaN seeds never wins, a row with one seed is not
    tested, and a column fewer than two tested rows of the group have marks nothing. A row
    whose every seed collapsed (:mod:`harness.leaderboard.collapse`) is flagged instead: its
    wide interval can overlap the best, but its numbers are not those of its rate.
    """
    if collapse_text(row).startswith("collapsed:"):
        return False
    return bool(board_stats(board).tied(row, column))


def empty_word(row: Row) -> str:
    """What a metric cell of a row with no finished seed reads: the seeds' common state, else failed."""
    states = {s.state for s in row.seeds.values()}
    return states.pop() if len(states) == 1 and states <= set(STATES) else "failed"


def cell_text(board: Leaderboard, row: Row, column: str) -> str:
    stat = row.metrics.get(column)
    nan = row.nan.get(column, 0)
    if stat is not None:
        text = stat.format() if row.reported else interval_text(stat)
        return text + (f" (NaN in {nan})" if nan else "")
    if nan:
        return "NaN"
    if column in row.unavailable:
        return "unavailable"
    return empty_word(row) if row.n == 0 and not row.reported else "–"


def rate_cells(board: Leaderboard, row: Row) -> list[str]:
    bits = "–" if row.bits_per_token is None else f"{row.bits_per_token:.3g}"
    if not has_pixels(board):
        return [bits]
    pixel = row.bits_per_pixel
    if pixel is None and row.reported:
        pixel = reference_bits_per_pixel(board, row)
    return [bits, "–" if pixel is None else f"{pixel:.3g}"]


def headers(board: Leaderboard, columns: list[str] | None = None) -> list[str]:
    columns = board.columns if columns is None else columns
    rate = ["bits/token", "bits/pixel"] if has_pixels(board) else ["bits/token"]
    return ["method", "K", "dim", *rate, "n", *[f"{c} {ARROW[board.higher_is_better[c]]}" for c in columns],
            "status", "plugin code"]


def status_text(row: Row, board: Leaderboard | None = None) -> str:
    if row.reported:
        return f"reported: {row.source}" + (f" ({row.note})" if row.note else "")
    parts = []
    for state in STATES:
        count = row.count(state)
        if not count:
            continue
        if state == "interrupted":
            steps = ", ".join(str(s.step) for s in row.seeds.values() if s.state == state)
            resume = board.meta.get("resume", "") if board is not None else ""
            parts.append(f"{count} interrupted at step {steps}" + (f": resume with `{resume}`" if resume else ""))
        elif state == "killed":
            parts.append(f"{count} killed (never resumed)")
        else:
            parts.append(f"{count} {state}")
    for metric, count in sorted(row.nan.items()):
        parts.append(f"{metric} NaN in {count}")
    if row.left_out:
        parts.append(f"{row.left_out} older-code cell(s) left out")
    flag = collapse_text(row)  # harness.leaderboard.collapse: a collapse is said, not ranked silently
    if not parts:
        return flag or "ok"
    return (f"{flag}; " if flag else "") + "; ".join(parts) + f" (of {len(row.seeds)} seeds)"


def digest_text(row: Row) -> str:
    return "" if row.reported else short(row.digest)


def meta_value(board: Leaderboard, key: str) -> str:
    return {"suite": board.suite, "profile": board.profile,
            "version": "" if board.version is None else str(board.version)}.get(key, board.meta.get(key, ""))


def stack_lines(board: Leaderboard) -> list[tuple[str, str]]:
    """(metric, what produced it) per metric; several stacks for one metric are said loudly."""
    out = []
    for metric, stacks in board.stacks.items():
        if len(stacks) == 1:
            out.append((metric, next(iter(stacks))))
        else:
            listed = "; ".join(f"{s} ({n} cells)" for s, n in sorted(stacks.items()))
            out.append((metric, f"MIXED, {len(stacks)} stacks: {listed}"))
    return out


def split_columns(board: Leaderboard) -> tuple[list[str], list[str]]:
    """Main columns, and the per-stage ones (``utilization/stage0``...) that only multi-stage
    quantizers have: those go to their own table so the main one stays readable."""
    stages = [c for c in board.columns if "/stage" in c]
    return [c for c in board.columns if c not in stages], stages


def staged(board: Leaderboard, rows: list[Row], stages: list[str]) -> list[Row]:
    return [r for r in rows if any(c in r.metrics or c in r.unavailable for c in stages)]
