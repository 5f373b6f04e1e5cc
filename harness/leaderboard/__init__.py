"""Leaderboards built from MLflow runs (import name ``harness.leaderboard``).

:func:`build_leaderboard` reads the cells of one suite, profile and suite version
from the tracking store; :func:`build_page` adds the claims of the newest suite
run and the plots; :mod:`harness.leaderboard.render` prints a board as Markdown,
CSV or a self-contained HTML page; :func:`log_page` records the page as a
``leaderboard`` run; ``python -m harness.commands.regenerate`` rebuilds the
checked-in pages (see README.md in this folder).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it, imported on first use so that importing a light
#: submodule (``harness.leaderboard.collapse`` for ``harness diagnose``) does not pull in the
#: store reader and with it torch
_HOMES = {"Leaderboard": "build", "Row": "build", "build_leaderboard": "build",
          "build_page": "page", "log_page": "page"}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
