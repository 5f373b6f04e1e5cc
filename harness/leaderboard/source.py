"""What ``harness leaderboard SUITE`` reads: the suite (a name, a file, or only a recorded name) and the store.

Reading never writes: a SQLite store that does not exist is not created (the
page then shows the suite's reference rows and says no run is recorded); only
``--log`` opens the store for writing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UnknownNameError
from harness.tracking import Tracker, resolve_uri


@dataclass
class PageSource:
    """The suite as the reader's machine knows it (or does not)."""

    name: str
    #: True when the suite is registered here or given as a file
    known: bool = False
    #: the ranking metric of a suite given as a file (it wins over what the runs recorded)
    primary: str | None = None
    #: a registered suite's primary metric, used only when the runs recorded none
    default_primary: str | None = None
    references: list[dict[str, Any]] = field(default_factory=list)
    claims: list[Any] = field(default_factory=list)
    description: str = ""
    #: the group hashes of the suite's cells as the file now writes them (claims are checked over these)
    groups: frozenset[str] = frozenset()


def page_source(suite: str, profile: str | None) -> PageSource:
    """Load the suite if this machine has it; a name it does not know may still be in the store."""
    from harness.suite import load_suite

    try:
        loaded = load_suite(suite, profile or "full")
    except UnknownNameError:
        return PageSource(suite)  # a suite recorded by a plugin package or an old file
    is_file = Path(suite).suffix == ".toml" or Path(suite).is_file()
    return PageSource(loaded.name, True, loaded.primary_metric if is_file else None, loaded.primary_metric,
                      loaded.references, loaded.claims, loaded.data.get("suite", {}).get("description", ""),
                      frozenset(cell.group_hash for cell in loaded.cells()))


def open_store(uri: str | None, *, write: bool = False) -> Tracker | None:
    """The tracking store, or ``None`` for a SQLite file that does not exist (unless ``write``)."""
    resolved = resolve_uri(uri)
    if not write and resolved.startswith("sqlite:///") and not Path(resolved[len("sqlite:///"):]).is_file():
        return None
    tracker = Tracker(resolved, write=write)  # a reader reads a store on a read-only mount too
    tracker.check()  # a stopped server: one line naming the URI, not a traceback from the first query
    return tracker


def check_known(source: PageSource, tracker: Tracker | None, uri: str | None) -> None:
    """A name that is neither a suite here nor an experiment in the store is a typo: say so (exit 2)."""
    from harness.suite import builtin_suites

    if source.known:
        return
    recorded = [] if tracker is None else tracker.experiment_names()
    if source.name in recorded:
        return
    raise UnknownNameError("suite", source.name, {*builtin_suites(), *recorded},
                           f" (not registered here, not a file, and not recorded in {resolve_uri(uri)})")
