"""The claims of the newest suite run, read back from its parent run for the page.

``harness run`` checks the suite's claims at the end and records them on the
parent run (``claims.json`` and ``harness.claim.<id>`` tags, see
:func:`harness.run.lifecycle.record_claims`). The leaderboard shows them as recorded
rather than re-checking them, so the page says exactly what the run said.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from harness.tracking import Tracker


@dataclass
class ClaimRow:
    id: str
    text: str
    check: str
    #: holds / FAILS / reported / no data, as :class:`harness.suite.claims.ClaimResult` words it
    status: str
    observed: float | None
    n: int


@dataclass
class SuiteClaims:
    run_id: str
    run_name: str
    started: str
    shard: str
    claims: list[ClaimRow]
    #: True when re-checked over every recorded cell (the newest suite run was one shard of several)
    rechecked: bool = False
    #: how many cells the suite run ran (its ``harness.cells`` tag; 0 when not recorded)
    cells: int = 0

    def describe(self) -> str:
        if self.rechecked and not self.run_name:
            return ("Claims checked over all recorded cells of this profile and version in the suite's "
                    "configurations (no suite run of them recorded its claims): ")
        if self.rechecked:
            part = f"was shard {self.shard}" if self.shard not in ("1/1", "") else f"ran {self.cells} of them"
            return (f"Claims re-checked over all recorded cells of this profile and version in the suite's "
                    f"configurations (the newest suite run, `{self.run_name}` of {self.started}, {part} and "
                    "saw only its own cells): ")
        return (f"Claims as checked by the newest suite run of this profile and version "
                f"(run `{self.run_name}`, {self.started}): ")


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def latest_claims(tracker: Tracker, suite: str, profile: str, version: int | None) -> SuiteClaims | None:
    """The newest finished-or-failed suite run of this profile and version that recorded claims."""
    from datetime import datetime, timezone

    runs = tracker.runs(suite, "tags.`harness.kind` = 'suite'")
    runs = [r for r in runs if r.data.tags.get("harness.profile") == profile
            and (version is None or _int(r.data.tags.get("harness.suite_version")) == version)
            and r.info.status not in ("RUNNING", "SCHEDULED")]
    for run in sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True):
        claims = _from_artifact(tracker, run.info.run_id) or _from_tags(run)
        if claims is None:
            continue
        started = datetime.fromtimestamp((run.info.start_time or 0) / 1000, timezone.utc)
        return SuiteClaims(run.info.run_id, run.info.run_name or "", started.strftime("%Y-%m-%d %H:%M UTC"),
                           run.data.tags.get("harness.shard", "1/1"), claims,
                           cells=_int(run.data.tags.get("harness.cells")))
    return None


def recheck(board: Any, claims: list[Any], latest: SuiteClaims | None,
            groups: frozenset[str] | None = None) -> SuiteClaims:
    """Check ``claims`` (:class:`harness.suite.Claim`) over the finished cells on the board.

    ``harness run --shard i/n`` checks the claims over its own slice only; the
    leaderboard sees all slices, so it checks them again the same way
    (:func:`harness.suite.claims.check_claims`) over the cells the table shows. With
    ``groups`` (the suite's cells' group hashes), rows of configurations the suite
    no longer has (shown on the page, labelled by their params) are left out.
    """
    from harness.suite.claims import check_claims

    current = [r for r in board.measured if groups is None or r.group in groups]
    records = [{"key": {"method": r.method, "quantizer": r.quantizer, "codebook_size": r.codebook_size,
                        "dim": r.dim, "seed": seed}, "metrics": metrics}
               for r in current for seed, metrics in r.seed_metrics.items()]
    results = check_claims([c for c in claims if board.profile in c.profiles], records)
    rows = [ClaimRow(c.claim.id, c.claim.text, c.claim.describe(), c.status, c.observed, c.n) for c in results]
    if latest is None:
        return SuiteClaims("", "", "", "?", rows, rechecked=True)
    return SuiteClaims(latest.run_id, latest.run_name, latest.started, latest.shard, rows, rechecked=True,
                       cells=latest.cells)


def _from_artifact(tracker: Tracker, run_id: str) -> list[ClaimRow] | None:
    try:
        data = json.loads(tracker.read_artifact(run_id, "claims.json").decode("utf-8"))
    except Exception:  # no artifact (an old or interrupted run): fall back to the tags
        return None
    return [ClaimRow(str(c.get("id", "?")), str(c.get("text", "")), str(c.get("check", "")),
                     str(c.get("status", "?")), c.get("observed"), _int(c.get("n")))
            for c in data if isinstance(c, dict)]


def _from_tags(run: Any) -> list[ClaimRow] | None:
    prefix = "harness.claim."
    statuses = {k[len(prefix):]: v for k, v in run.data.tags.items() if k.startswith(prefix)}
    if not statuses:
        return None
    observed = run.data.metrics
    return [ClaimRow(cid, "", "", status, observed.get(f"claim/{cid}"), 0)
            for cid, status in sorted(statuses.items())]
