"""Leaderboards built from MLflow runs (import name ``harness.leaderboard``).

:func:`build_leaderboard` reads the cells of one suite, profile and suite version
from the tracking store; :mod:`harness.leaderboard.render` prints them as
Markdown, CSV or HTML.
"""

from harness.leaderboard.build import Leaderboard, Row, build_leaderboard

__all__ = ["Leaderboard", "Row", "build_leaderboard"]
