"""Running a suite again over a store that already holds some of its cells.

Without ``--resume`` every cell runs from the start, beside the runs it already
has; that is allowed (a deliberate re-measurement) but never silent: the command
says how many cells are already finished or were interrupted, and that
``--resume`` skips or continues them. With ``--resume`` a run that matches none
of the recorded cells (another ``--profile``, ``-q`` or ``--set`` than the
interrupted run) would quietly start everything from scratch; it is refused,
naming what the store holds instead. After Ctrl-C the exact command to continue
is printed (:func:`resume_command`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections import Counter
from typing import Any

from harness.errors import UsageError

#: ``harness run`` options that take a value, in the order the resume command writes them
VALUE_OPTIONS = (("profile", "--profile"), ("seeds", "--seeds"), ("device", "--device"),
                 ("tracking_uri", "--tracking-uri"), ("shard", "--shard"), ("data_root", "--data-root"),
                 ("jobs", "--jobs"), ("executor", "--executor"), ("bits", "--bits"))
DEFAULTS = {"profile": "full", "device": "auto"}


def resume_command(args: argparse.Namespace) -> str:
    """The ``harness run`` command that continues ``args``' run: the same options plus ``--resume``."""
    words = ["harness", "run", str(args.suite)]
    for name in args.quantizer or ():
        words += ["-q", name]
    for attr, flag in VALUE_OPTIONS:
        value = getattr(args, attr, None)
        if value is not None and value != DEFAULTS.get(attr):
            words += [flag, str(value)]
    for item in args.set or ():
        words += ["--set", item]
    for item in args.executor_option or ():
        words += ["--executor-option", item]
    if args.no_progress:
        words.append("--no-progress")
    return shlex.join([*words, "--resume"])


def cell_runs(tracker: Any, suite_name: str) -> list[Any]:
    """Every cell run the store holds for ``suite_name`` (any profile, version, selection)."""
    return tracker.runs(suite_name, "tags.`harness.kind` = 'cell'")


def unfinished(runs: list[Any]) -> set[str]:
    """Config hashes that were started but never FINISHED (interrupted, failed, or dead)."""
    finished = {r.data.tags.get("harness.config_hash") for r in runs if r.info.status == "FINISHED"}
    return {r.data.tags.get("harness.config_hash") for r in runs} - finished - {None}


def check_rerun(tracker: Any, suite: Any, cells: list[Any], resume: bool, store: str) -> None:
    """Say (without ``--resume``) or refuse (with it) what would silently redo or miss recorded work."""
    runs = cell_runs(tracker, suite.name)
    if not runs:
        return
    wanted = {c.config_hash for c in cells}
    mine = [r for r in runs if r.data.tags.get("harness.config_hash") in wanted]
    if not resume:
        redo_note(mine, len(cells), suite, store)
    elif not mine:
        refuse_resume(runs, suite, store)


def redo_note(mine: list[Any], n_cells: int, suite: Any, store: str) -> None:
    """Without ``--resume``: how many of these cells already finished or were interrupted."""
    done = {r.data.tags.get("harness.config_hash") for r in mine if r.info.status == "FINISHED"}
    stopped = unfinished(mine)
    if not done and not stopped:
        return
    print(f"harness: note: of the {n_cells} cells of this run (suite {suite.name!r}, profile "
          f"{suite.profile!r}), {len(done)} already finished and {len(stopped)} were interrupted or failed "
          f"in {store}; without --resume they run again from the start, beside their earlier runs. Add "
          "--resume to skip the finished ones and continue the interrupted ones from their checkpoints",
          file=sys.stderr)


def refuse_resume(runs: list[Any], suite: Any, store: str) -> None:
    """``--resume`` that matches no recorded cell: say what the store holds instead (exit 2)."""
    stopped = unfinished(runs)
    kinds = Counter((r.data.tags.get("harness.profile", "?"), r.data.tags.get("harness.suite_version", "?"))
                    for r in runs if r.data.tags.get("harness.config_hash") in stopped)
    if not kinds:  # everything recorded is finished: nothing was interrupted, so nothing is missed
        return
    found = "; ".join(f"profile {p!r} (suite version {v}): {n} unfinished run{'s' * (n != 1)}"
                      for (p, v), n in sorted(kinds.items()))
    other = sorted({p for p, _ in kinds if p != suite.profile})
    hint = (f"pass --profile {other[0]} (and the same -q, --set and --seeds as then)" if other
            else "pass the same -q, --set and --seeds as the interrupted run")
    raise UsageError(f"--resume matches no recorded cell of suite {suite.name!r} with profile "
                     f"{suite.profile!r} (suite version {suite.version}) in {store}; the store holds "
                     f"{found}. To continue those, {hint}; to start these cells afresh, drop --resume")
