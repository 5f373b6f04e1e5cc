"""Group recorded cells into rows: one per method configuration and plugin code, mean and std over seeds.

What a row may average is decided by what the cells recorded, never by the
files on the reader's machine: the configuration (``harness.group_hash``), the
plugin digest (``harness.plugin_digest``: only the newest code's cells, the
older ones counted and left out), the rate (``harness.bits_per_token``), and
the suite's primary metric and directions (tags of the parent run).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from harness.cell.provenance import DIRECTIONS_TAG, PRIMARY_TAG
from harness.leaderboard.rows import (
    Row,
    Seed,
    Stat,
    add_references,
    label_tuning,
    label_variants,
    make_row,
    rate_groups,
)
from harness.tracking import Tracker

__all__ = ["Leaderboard", "Row", "Seed", "Stat", "build_leaderboard", "metric_direction"]

CELLS = "tags.`harness.kind` = 'cell'"


@dataclass
class Leaderboard:
    suite: str
    profile: str
    version: int | None
    primary: str
    columns: list[str]
    higher_is_better: dict[str, bool]
    rows: list[Row]
    #: store URI, harness versions and git commits of the cells, build date (the page header)
    meta: dict[str, str] = field(default_factory=dict)
    #: the claims of the newest suite run, a :class:`~harness.leaderboard.claims.SuiteClaims`
    #: (filled by :func:`harness.leaderboard.page.build_page`)
    claims: Any = None
    #: figures as (title, caption, PNG bytes) (filled by ``build_page``)
    figures: list[Any] = field(default_factory=list)
    #: metric -> {stack: cells}: what produced each number (``harness.metric_stack.<metric>`` tags)
    stacks: dict[str, dict[str, int]] = field(default_factory=dict)
    #: intervals, tie sets, mean ranks: a :class:`~harness.leaderboard.stats.BoardStats`, computed
    #: on first use by :func:`harness.leaderboard.stats.board_stats`
    stats: Any = None

    @property
    def measured(self) -> list[Row]:
        return [r for r in self.rows if not r.reported]

    @property
    def reported(self) -> list[Row]:
        return [r for r in self.rows if r.reported]

    def groups(self) -> list[tuple[str, list[Row]]]:
        """Measured rows by rate (equal bits per token), lowest rate first: the unit of comparison."""
        return rate_groups(self.measured)

    def peers(self, row: Row) -> list[Row]:
        """The measured rows ``row`` is compared with: its rate group."""
        for _, rows in self.groups():
            if any(r is row for r in rows):
                return rows
        return []

    def best(self, column: str, rows: list[Row] | None = None) -> float | None:
        """The best clean value of ``column`` among ``rows`` (default: every measured row)."""
        values = [r.metrics[column].mean for r in (self.measured if rows is None else rows)
                  if column in r.metrics and not r.reported and not r.nan.get(column)]
        if not values:
            return None
        return max(values) if self.higher_is_better.get(column, True) else min(values)


#: a metric's direction where no run recorded it (the command passes what the installed plugins say)
DirectionOf = Callable[[str], "bool | None"]


def metric_direction(column: str, recorded: dict[str, bool] | None = None,
                     direction_of: DirectionOf | None = None) -> bool:
    """Higher is better? As the runs recorded it (``harness.metric_directions``), else as the
    caller's ``direction_of`` says (runs older than that tag, hand-made runs), else higher."""
    base = column.split("/")[0]
    if recorded and base in recorded:
        return bool(recorded[base])
    given = direction_of(base) if direction_of is not None else None
    return True if given is None else bool(given)


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def build_leaderboard(
    suite: str,
    *,
    tracker: Tracker | None = None,
    profile: str | None = None,
    direction_of: DirectionOf | None = None,
    references: list[dict[str, Any]] | None = None,
    primary: str | None = None,
    default_primary: str | None = None,
    store: str | None = None,
    run_as: str | None = None,
) -> Leaderboard:
    """Read the suite's cells; never mix profiles, suite versions or plugin digests.

    ``primary`` forces the ranking metric (a suite given as a file); otherwise the
    one the newest suite run recorded, else ``default_primary``, else ``mse``.
    With no recorded cell the board holds only the ``references`` and says so, naming
    the store it read (``store``, the resolved URI, when ``tracker`` is ``None``: no store yet)
    and how to record them (``harness run RUN_AS``: the suite file's path when one was given).
    """
    runs = tracker.runs(suite, CELLS) if tracker is not None else []
    runs = [r for r in runs if r.data.tags.get("harness.tuning") != "trial"]  # scored on select: never ranked
    recorded_profiles = sorted({r.data.tags.get("harness.profile") or "" for r in runs} - {""})
    if profile and profile not in recorded_profiles:
        runs = []
    if not runs:
        board = empty_board(suite, tracker, profile, direction_of, references, primary or default_primary, store,
                            run_as)
        if recorded_profiles:
            board.meta["no_runs"] = (f"no {board.profile!r} run of suite {suite!r} is recorded in "
                                     f"{board.meta['store']} (profiles recorded: {', '.join(recorded_profiles)})"
                                     f"; {OTHER_STORE}")
        return board
    profile, version, runs, hidden = select_runs(suite, runs, profile)
    suite_runs = parent_runs(tracker, suite, profile, version)
    recorded_primary, recorded_directions = recorded_rules(suite_runs)
    recorded_directions = {**cell_directions(runs), **recorded_directions}
    rows, used = [], []
    for group_runs in by_group(runs).values():
        row, kept = make_row(group_runs)
        rows.append(row)
        used += kept
    label_variants(rows)
    label_tuning(rows)
    add_references(rows, references or [])
    primary = primary or recorded_primary or default_primary or "mse"
    columns = ordered_columns(rows, primary)
    directions = {c: metric_direction(c, recorded_directions, direction_of) for c in columns}
    rows = sort_rows(rows, primary, directions.get(primary, True))
    board = Leaderboard(suite, profile, version, primary, columns, directions, rows,
                        meta=_meta(tracker, used), stacks=metric_stacks(used))
    _notes(board, hidden, suite_runs)
    return board


#: how to read a store other than the one named (the end of every "no run recorded" line)
OTHER_STORE = "to read another store pass --tracking-uri URI or set MLFLOW_TRACKING_URI"


def empty_board(suite: str, tracker: Tracker | None, profile: str | None, direction_of: DirectionOf | None,
                references: list[dict[str, Any]] | None, primary: str | None,
                store: str | None = None, run_as: str | None = None) -> Leaderboard:
    """No cell recorded yet: the papers' rows alone, and a line saying where no run is recorded."""
    rows: list[Row] = []
    add_references(rows, references or [])
    primary = primary or "mse"
    columns = ordered_columns(rows, primary)
    uri = tracker.uri if tracker is not None else f"{store or 'the default store'} (no store there yet)"
    board = Leaderboard(suite, profile or "full", None, primary, columns,
                        {c: metric_direction(c, None, direction_of) for c in columns}, rows,
                        meta={"store": uri, "built": _now()})
    board.meta["no_runs"] = (f"no run of suite {suite!r} is recorded in {uri}; "
                             f"`harness run {run_as or suite}` records them there; {OTHER_STORE}")
    return board


def select_runs(suite: str, runs: list[Any], profile: str | None) -> tuple[str, int, list[Any], list[str]]:
    """One profile (full if recorded) and its newest suite version; what else exists, to say so."""
    profiles = {r.data.tags.get("harness.profile") for r in runs}
    profile = profile or ("full" if "full" in profiles else sorted(p for p in profiles if p)[0])
    runs = [r for r in runs if r.data.tags.get("harness.profile") == profile]
    version = max(_int(r.data.tags.get("harness.suite_version")) for r in runs)
    older = sorted({_int(r.data.tags.get("harness.suite_version")) for r in runs} - {version})
    runs = [r for r in runs if _int(r.data.tags.get("harness.suite_version")) == version]
    hidden = [f"profile {p}" for p in sorted(p for p in profiles if p and p != profile)]
    hidden += [f"{profile} suite version {v}" for v in older]
    return profile, version, runs, hidden


def by_group(runs: list[Any]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for run in runs:
        groups.setdefault(run.data.tags.get("harness.group_hash", ""), []).append(run)
    return groups


def parent_runs(tracker: Tracker, suite: str, profile: str, version: int | None) -> list[Any]:
    """The suite runs (``harness run`` parents) of this profile and version, newest first."""
    runs = tracker.runs(suite, "tags.`harness.kind` = 'suite'")
    runs = [r for r in runs if r.data.tags.get("harness.profile") == profile
            and (version is None or _int(r.data.tags.get("harness.suite_version")) == version)]
    return sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True)


def recorded_rules(suite_runs: list[Any]) -> tuple[str | None, dict[str, bool]]:
    """Primary metric and directions from the newest suite run that recorded them."""
    for run in suite_runs:
        tags = run.data.tags
        if PRIMARY_TAG in tags:
            try:
                directions = {str(k): bool(v) for k, v in json.loads(tags.get(DIRECTIONS_TAG, "{}")).items()}
            except (ValueError, AttributeError):
                directions = {}
            return tags[PRIMARY_TAG], directions
    return None, {}


def cell_directions(runs: list[Any]) -> dict[str, bool]:
    """Each metric's direction as the cells recorded it (``harness.metric_directions``)."""
    found: dict[str, bool] = {}
    for run in runs:
        try:
            found.update({str(k): bool(v) for k, v in json.loads(run.data.tags.get(DIRECTIONS_TAG, "{}")).items()})
        except (ValueError, AttributeError):
            continue
    return found


def ordered_columns(rows: list[Row], primary: str) -> list[str]:
    columns = {c for r in rows for c in (*r.metrics, *r.unavailable, *r.nan)}
    return ([primary] if primary in columns else []) + sorted(c for c in columns if c != primary)


def sort_rows(rows: list[Row], primary: str, higher: bool) -> list[Row]:
    """Rate groups (lowest rate first), then the primary metric in its direction; reported last."""
    sign = -1.0 if higher else 1.0
    order = {id(r): i for i, (_, group) in enumerate(rate_groups([r for r in rows if not r.reported]))
             for r in group}

    def key(row: Row) -> tuple[int, int, int, float, str]:
        value = row.metrics.get(primary)
        clean = value is not None and not row.nan.get(primary)
        return (int(row.reported), order.get(id(row), 0), int(row.n == 0),
                sign * value.mean if clean else math.inf,
                f"{row.method}-{row.codebook_size:09d}-{row.dim:06d}-{row.variant}")

    return sorted(rows, key=key)


def metric_stacks(runs: list[Any]) -> dict[str, dict[str, int]]:
    prefix = "harness.metric_stack."
    stacks: dict[str, dict[str, int]] = {}
    for run in runs:
        for key, value in run.data.tags.items():
            if key.startswith(prefix):
                counts = stacks.setdefault(key[len(prefix):], {})
                counts[value] = counts.get(value, 0) + 1
    return dict(sorted(stacks.items()))


def _notes(board: Leaderboard, hidden: list[str], suite_runs: list[Any]) -> None:
    """Header lines: what was not mixed in, and how to resume interrupted cells."""
    if hidden:
        board.meta["not_shown"] = "; ".join(hidden) + " (never mixed into this table)"
    left = [r for r in board.measured if r.left_out]
    if left:
        board.meta["older_digests"] = (
            f"{sum(r.left_out for r in left)} cell(s) made by older plugin code left out of "
            f"{len(left)} row(s) (each row shows its newest plugin digest only)")
    if any(s.state == "interrupted" for r in board.measured for s in r.seeds.values()):
        board.meta["resume"] = resume_command(board, suite_runs)


def resume_command(board: Leaderboard, suite_runs: list[Any]) -> str:
    """``harness run <suite or file> --profile P --resume --tracking-uri URI``, as the run was started."""
    target = board.suite
    for run in suite_runs:
        path = run.data.params.get("suite.path", "")
        if path and not _is_builtin(board.suite, path):
            target = path
            break
    command = f"harness run {target} --profile {board.profile} --resume"
    store = board.meta.get("store", "")
    return command + (f" --tracking-uri {store}" if store else "")


def _is_builtin(name: str, path: str) -> bool:
    from pathlib import Path

    from harness.suite import builtin_suites

    known = builtin_suites().get(name)
    return known is not None and Path(known).resolve() == Path(path).resolve()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _meta(tracker: Tracker, runs: list[Any]) -> dict[str, str]:
    """What a reader needs to trust the numbers: where they live, which code made them, when."""
    from harness import __version__

    def joined(tag: str) -> str:
        return ", ".join(sorted({r.data.tags.get(tag, "") for r in runs} - {""})) or "unknown"

    return {
        "store": tracker.uri,
        "harness_version": __version__,
        "cell_harness_versions": joined("harness.version"),
        "git_commits": _commits(joined("harness.git_commit").split(", ")),
        "devices": joined("harness.device"),
        "cells": str(len(runs)),
        "failed_cells": str(sum(r.info.status != "FINISHED" for r in runs)),
        "built": _now(),
    }


def _commits(commits: list[str], shown: int = 3) -> str:
    """Short hashes; several mean the code changed while the cells ran (worth knowing, not hiding)."""
    short = [c[:10] for c in commits]
    if len(short) <= shown:
        return ", ".join(short)
    return f"{len(short)} different commits: {', '.join(short[:shown])}, … (see each run's harness.git_commit tag)"


def has_pixels(board: Leaderboard) -> bool:
    """Image suites get a bits/pixel column; point suites (no pixels) do not."""
    return any(r.bits_per_pixel is not None for r in board.measured)


def reference_bits_per_pixel(board: Leaderboard, row: Row) -> float | None:
    """A reported row's rate in bits per pixel, at the measured rows' tokens per pixel (one model)."""
    ratios = {r.tokens_per_item / r.pixels_per_item for r in board.measured
              if r.tokens_per_item and r.pixels_per_item}
    if row.bits_per_token is None or len(ratios) != 1:
        return None
    return row.bits_per_token * ratios.pop()
