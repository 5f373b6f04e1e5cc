"""Leaderboards built from MLflow runs (import name ``harness.leaderboard``).

:func:`build_leaderboard` reads the cells of one suite, profile and suite version
from the tracking store; :func:`build_page` adds the claims of the newest suite
run and the plots; :mod:`harness.leaderboard.render` prints a board as Markdown,
CSV or a self-contained HTML page; :func:`log_page` records the page as a
``leaderboard`` run; ``python -m harness.leaderboard.regenerate`` rebuilds the
checked-in pages (see README.md in this folder).
"""

from harness.leaderboard.build import Leaderboard, Row, build_leaderboard
from harness.leaderboard.page import build_page, log_page

__all__ = ["Leaderboard", "Row", "build_leaderboard", "build_page", "log_page"]
