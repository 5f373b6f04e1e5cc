"""What ``harness run`` prints when it ends: cells, claims, where they went, how to rank them.

The last lines are the ones a new user acts on, so they are exact: the store and
experiment the run wrote to, and a leaderboard command that shows *this* run (its
profile, its tracking URI, the suite file it was given), ready to paste.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any, TextIO

from harness.report.table import markdown
from harness.tracking import DEFAULT_URI, resolve_uri

#: the profile ``harness leaderboard`` shows when none is named (when it was recorded)
LEADERBOARD_DEFAULT_PROFILE = "full"


def store_is_default(tracking_uri: str | None) -> bool:
    """True when the run wrote to ``./mlflow.db`` here, which the leaderboard reads by default."""
    if tracking_uri is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        return True
    return resolve_uri(tracking_uri) == resolve_uri(DEFAULT_URI)


def leaderboard_command(suite_arg: str, profile: str, tracking_uri: str | None, *,
                        html: bool = False) -> str:
    """The ``harness leaderboard`` command for what was just run, ready to paste.

    ``suite_arg`` is what ``harness run`` was given: a suite file stays a path (the
    leaderboard reads its primary metric and claims from it), a name stays a name.
    """
    words = ["harness", "leaderboard", suite_arg]
    if profile != LEADERBOARD_DEFAULT_PROFILE:
        words += ["--profile", profile]
    if not store_is_default(tracking_uri):
        words += ["--tracking-uri", resolve_uri(tracking_uri)]
    if html:
        stem = Path(suite_arg).stem if suite_arg.endswith(".toml") else suite_arg
        suffix = "" if profile == LEADERBOARD_DEFAULT_PROFILE else f"-{profile}"
        words += ["--format", "html", "--output", f"{stem}{suffix}.html"]
    return shlex.join(words)


def cell_table(result: Any) -> str:
    primary = result.suite.primary_metric
    return markdown(["cell", "status", primary, "seconds", "error"],
                    [[c.cell.run_name, c.status, f"{c.metrics[primary]:.4g}" if primary in c.metrics else "",
                      f"{c.seconds:.1f}", (c.error or "")[:120]] for c in result.cells])


def claim_table(result: Any) -> str:
    table = markdown(["claim", "status", "observed", "n", "check"],
                     [[c.claim.id, c.status, "" if c.observed is None else f"{c.observed:.4g}", c.n,
                       c.claim.describe()] for c in result.claims])
    known = [c for c in result.claims if getattr(c.claim, "expect", None) == "not reproduced"]
    return "\n".join([table, *(f"{c.claim.id}: expected not to reproduce: {c.claim.reason}" for c in known)])


def where_lines(result: Any, suite_arg: str, tracking_uri: str | None) -> list[str]:
    """Where the results went and the commands that show them."""
    suite = result.suite
    parent = getattr(result, "parent_run_id", None)
    recorded = [c for c in result.cells if c.status != "SKIPPED"]
    lines = [f"results: {len(recorded)} cell runs in {resolve_uri(tracking_uri)}, experiment {suite.name!r}, "
             f"profile {suite.profile!r}" + (f" (parent run {parent})" if parent else ""),
             f"leaderboard page: {leaderboard_command(suite_arg, suite.profile, tracking_uri, html=True)}",
             f"in the terminal:  {leaderboard_command(suite_arg, suite.profile, tracking_uri)}"]
    return lines


def failures(result: Any) -> list[str]:
    out = []
    if result.failed:
        out.append(f"{len(result.failed)} of {len(result.cells)} cells failed: "
                   + ", ".join(c.cell.run_name for c in result.failed))
    if result.failed_claims:
        out.append("claims that do not hold: " + ", ".join(c.claim.id for c in result.failed_claims))
    return out


def report(result: Any, suite_arg: str, tracking_uri: str | None, *,
           out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the summary of a finished ``harness run``; the exit code (1: a cell or claim failed)."""
    out, err = out or sys.stdout, err or sys.stderr
    print("\n" + cell_table(result), file=out)
    if result.claims:
        paper = result.suite.data.get("suite", {}).get("paper", "")
        print(f"\nclaims{f' ({paper})' if paper else ''}:\n" + claim_table(result), file=out)
    print("\n" + "\n".join(where_lines(result, suite_arg, tracking_uri)), file=out)
    problems = failures(result)
    for line in problems:
        print(f"harness: {line}", file=err)
    return 1 if problems else 0
