"""Group finished cells into rows: one per method configuration, mean and std over seeds."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from harness.errors import HarnessError
from harness.host import Host, get_host
from harness.tracking import Tracker


@dataclass
class Stat:
    mean: float
    std: float
    n: int

    def format(self, digits: int = 4) -> str:
        if self.n > 1:
            return f"{self.mean:.{digits}g} ± {self.std:.2g}"
        return f"{self.mean:.{digits}g}"


@dataclass
class Row:
    method: str
    quantizer: str
    codebook_size: int
    dim: int
    n: int = 0
    failed: int = 0
    metrics: dict[str, Stat] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    reported: bool = False
    source: str = ""
    note: str = ""
    plugin: str = ""
    #: seed -> run id of each finished cell (plots read their histories and artifacts)
    run_ids: dict[int, str] = field(default_factory=dict)
    #: seed -> eval metrics of each finished cell (claims over sharded runs are re-checked on them)
    seed_metrics: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.reported:
            return "reported"
        if self.n == 0:
            return "failed"
        return f"{self.failed} failed" if self.failed else "ok"


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

    @property
    def measured(self) -> list[Row]:
        return [r for r in self.rows if not r.reported]

    @property
    def reported(self) -> list[Row]:
        return [r for r in self.rows if r.reported]

    def best(self, column: str) -> float | None:
        values = [r.metrics[column].mean for r in self.rows if column in r.metrics and not r.reported]
        if not values:
            return None
        return max(values) if self.higher_is_better.get(column, True) else min(values)


def metric_direction(host: Host, column: str) -> bool:
    base = column.split("/")[0]
    if base in host.metrics:
        return bool(getattr(host.metrics.get(base).obj, "higher_is_better", True))
    return True


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
    host: Host | None = None,
    references: list[dict[str, Any]] | None = None,
    primary: str | None = None,
) -> Leaderboard:
    """Read the suite's cells; never mix profiles or suite versions (the newest version wins)."""
    tracker = tracker or Tracker()
    host = host or get_host()
    runs = tracker.runs(suite, "tags.`harness.kind` = 'cell'")
    if not runs:
        raise HarnessError(f"no runs of suite {suite!r} in {tracker.uri}; run `harness run {suite}` first")
    profiles = {r.data.tags.get("harness.profile") for r in runs}
    profile = profile or ("full" if "full" in profiles else sorted(p for p in profiles if p)[0])
    runs = [r for r in runs if r.data.tags.get("harness.profile") == profile]
    if not runs:
        raise HarnessError(f"no {profile!r} runs of suite {suite!r}; profiles recorded: {sorted(p for p in profiles if p)}")
    version = max(_int(r.data.tags.get("harness.suite_version")) for r in runs)
    older = sorted({_int(r.data.tags.get("harness.suite_version")) for r in runs} - {version})
    runs = [r for r in runs if _int(r.data.tags.get("harness.suite_version")) == version]
    hidden = [f"profile {p}" for p in sorted(p for p in profiles if p and p != profile)]
    hidden += [f"{profile} suite version {v}" for v in older]

    # the newest finished run per (configuration, seed); a re-run replaces, never doubles
    latest: dict[tuple[str, str], Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        tags = run.data.tags
        key = (tags.get("harness.group_hash", ""), tags.get("harness.seed", ""))
        if run.info.status in ("RUNNING", "SCHEDULED"):
            continue
        if key in latest and latest[key].info.status == "FINISHED" and run.info.status != "FINISHED":
            continue
        latest[key] = run

    groups: dict[str, list[Any]] = {}
    for (group, _seed), run in latest.items():
        groups.setdefault(group, []).append(run)

    rows: list[Row] = []
    columns: set[str] = set()
    for group_runs in groups.values():
        tags = group_runs[0].data.tags
        row = Row(tags.get("harness.method", "?"), tags.get("harness.quantizer", "?"),
                  _int(tags.get("harness.codebook_size")), _int(tags.get("harness.dim")),
                  plugin=tags.get("harness.plugin_distribution", ""))
        finished = [r for r in group_runs if r.info.status == "FINISHED"]
        row.n, row.failed = len(finished), len(group_runs) - len(finished)
        row.run_ids = {_int(r.data.tags.get("harness.seed")): r.info.run_id for r in finished}
        row.seed_metrics = {_int(r.data.tags.get("harness.seed")): {
            k[5:]: v for k, v in r.data.metrics.items() if k.startswith("eval/") and not math.isnan(v)}
            for r in finished}
        values: dict[str, list[float]] = {}
        for run in finished:
            for key, value in run.data.metrics.items():
                if key.startswith("eval/") and not math.isnan(value):
                    values.setdefault(key[5:], []).append(value)
            for key, reason in run.data.tags.items():
                if key.startswith("harness.unavailable."):
                    row.unavailable[key[len("harness.unavailable."):]] = reason
        for key, vals in values.items():
            row.metrics[key] = Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals))
            columns.add(key)
        columns.update(row.unavailable)
        rows.append(row)

    for ref in references or []:
        row = Row(ref["method"], ref["method"], ref.get("codebook_size", 0), ref.get("dim", 0),
                  reported=True, source=ref.get("source", ""), note=ref.get("note", ""))
        row.metrics = {k: Stat(float(v), 0.0, 1) for k, v in ref.get("metrics", {}).items()}
        columns.update(row.metrics)
        rows.append(row)

    primary = primary or "mse"
    ordered = ([primary] if primary in columns else []) + sorted(c for c in columns if c != primary)
    directions = {c: metric_direction(host, c) for c in ordered}
    sign = -1.0 if directions.get(primary, True) else 1.0

    def sort_key(row: Row) -> tuple[int, int, float, str]:
        value = row.metrics.get(primary)
        return (int(row.reported), int(row.n == 0), sign * value.mean if value else math.inf,
                f"{row.method}-{row.codebook_size:09d}-{row.dim:06d}")

    rows.sort(key=sort_key)
    board = Leaderboard(suite, profile, version, primary, ordered, directions, rows,
                       meta=_meta(tracker, [r for group_runs in groups.values() for r in group_runs]))
    if hidden:
        board.meta["not_shown"] = "; ".join(hidden) + " (never mixed into this table)"
    return board


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
        "built": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _commits(commits: list[str], shown: int = 3) -> str:
    """Short hashes; several mean the code changed while the cells ran (worth knowing, not hiding)."""
    short = [c[:10] for c in commits]
    if len(short) <= shown:
        return ", ".join(short)
    return f"{len(short)} different commits: {', '.join(short[:shown])}, … (see each run's harness.git_commit tag)"
