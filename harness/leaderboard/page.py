"""A whole leaderboard page: the table, the claims of the newest suite run, the plots; and its record.

:func:`build_page` is what ``harness leaderboard`` and ``regenerate.py`` call;
:func:`log_page` records the rendered page as artifacts of a run tagged
``harness.kind = leaderboard`` in the suite's experiment (only when asked:
``harness leaderboard --log``; reading never writes), so the MLflow UI shows it
beside the cells (the builder reads only ``harness.kind = cell`` runs, so such
a run is never counted as a cell).
"""

from __future__ import annotations

import os
from typing import Any

from harness import __version__
from harness.leaderboard.build import DirectionOf, Leaderboard, build_leaderboard
from harness.leaderboard.claims import latest_claims, recheck
from harness.tracking import Tracker, tags_for

# the page downloads a few small artifacts: no progress bar on stderr for each
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

#: artifact file names of a leaderboard run, by format
ARTIFACTS = {"html": "leaderboard.html", "md": "leaderboard.md", "csv": "leaderboard.csv",
             "json": "leaderboard.json"}


def build_page(
    suite: str,
    *,
    tracker: Tracker | None,
    profile: str | None = None,
    direction_of: DirectionOf | None = None,
    references: list[dict[str, Any]] | None = None,
    primary: str | None = None,
    default_primary: str | None = None,
    description: str = "",
    claims: list[Any] | None = None,
    claim_groups: frozenset[str] | None = None,
    plots: bool = True,
    store: str | None = None,
    run_as: str | None = None,
) -> Leaderboard:
    """The leaderboard with its claims and (unless ``plots=False``) its figures attached.

    ``claims`` (the suite's :class:`harness.suite.Claim` list) are re-checked over all
    recorded cells when the newest suite run was one shard of several or ran fewer cells
    than the board holds (``-q``, ``--set matrix...``). ``tracker`` may be
    ``None`` (no store exists yet at ``store``): the page then shows the reference rows alone.
    """
    board = build_leaderboard(suite, tracker=tracker, profile=profile, direction_of=direction_of, references=references,
                              primary=primary, default_primary=default_primary, store=store, run_as=run_as)
    if description:
        board.meta["description"] = description
    if tracker is None or not board.measured:
        return board
    board.claims = latest_claims(tracker, suite, board.profile, board.version)
    cells = sum(len(r.seeds) for r in board.measured)
    partial = board.claims is not None and 0 < board.claims.cells < cells  # a -q or --set subset run
    if claims and (board.claims is None or board.claims.shard not in ("1/1", "") or partial):
        board.claims = recheck(board, claims, board.claims, claim_groups)
    if plots:
        from harness.leaderboard.figures import page_figures
        from harness.leaderboard.stats import profile_figure

        board.figures = page_figures(board, tracker)
        board.figures += [f for f in [profile_figure(board)] if f is not None]
    return board


def log_page(tracker: Tracker, board: Leaderboard, texts: dict[str, str]) -> str:
    """Record rendered pages (format -> text) on a new ``leaderboard`` run; returns its id."""
    tags = tags_for([("kind", "leaderboard"), ("suite", board.suite), ("profile", board.profile),
                     ("suite_version", board.version), ("version", __version__),
                     ("rows", len(board.measured)), ("reported_rows", len(board.reported))])
    run_id = tracker.start_run(board.suite, f"leaderboard-{board.profile}", tags)
    try:
        for fmt, text in texts.items():
            tracker.log_text(run_id, text, ARTIFACTS[fmt])
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    tracker.end_run(run_id, "FINISHED")
    return run_id
