"""``--resume`` across a change of plugin code (issue 21, item 23).

Each cell run carries ``harness.plugin_digest`` (:mod:`harness.cell.provenance`). When the
quantizer's code changed since a cell's earlier run, resuming would silently mix versions:
a finished old-code cell would be skipped with its old numbers, and a killed cell would
continue the new code from the old code's checkpoint. So, before any cell starts:

- finished cells of another digest stay skipped (their numbers are what that code measured)
  but are listed, with the command that reruns them;
- an interrupted cell of another digest starts afresh instead of continuing its checkpoint,
  unless ``--resume-across-code-change`` asks to continue it anyway.
"""

from __future__ import annotations

import sys
from typing import Any

from harness.cell.provenance import DIGEST_TAG, plugin_digest, short
from harness.recovery.resume import Resume
from harness.suite import Cell


def current_digests(host: Any, cells: list[Cell]) -> dict[str, str]:
    """The digest each cell's quantizer has now, keyed by quantizer name."""
    return {q: plugin_digest(host.quantizers.get(q)) for q in sorted({c.quantizer for c in cells})}


def recorded_digest(decision: Resume) -> str | None:
    """The digest the decision's earlier run recorded (``None``: no run, or an older harness)."""
    return decision.run.data.tags.get(DIGEST_TAG) if decision.run is not None else None


def changed(cells: list[Cell], decisions: dict[str, Resume], now: dict[str, str]
            ) -> list[tuple[Cell, Resume, str]]:
    """Cells whose earlier run (finished or continued) recorded another digest than now's."""
    out = []
    for cell in cells:
        decision = decisions[cell.config_hash]
        old = recorded_digest(decision)
        if decision.action in ("skip", "continue") and old and old != now[cell.quantizer]:
            out.append((cell, decision, old))
    return out


def apply(host: Any, cells: list[Cell], decisions: dict[str, Resume], across: bool,
          out: Any = None) -> list[str]:
    """Report code changes and, unless ``across``, turn continues across a change into fresh runs.

    Mutates ``decisions``; returns the lines printed (on ``out``, stderr by default)."""
    now = current_digests(host, cells)
    found = changed(cells, decisions, now)
    lines: list[str] = []
    skipped = [(c, old) for c, d, old in found if d.action == "skip"]
    killed = [(c, d, old) for c, d, old in found if d.action == "continue"]
    if skipped:
        names = ", ".join(f"{c.run_name} (was {short(old)}, now {short(now[c.quantizer])})"
                          for c, old in skipped)
        methods = " ".join(f"-q {m}" for m in sorted({c.method for c, _ in skipped}))
        lines.append(f"harness: note: the plugin code changed since these cells finished, so --resume "
                     f"keeps their old-code numbers: {names}. To measure them with the current code, "
                     f"run again without --resume ({methods} and the same options); the leaderboard "
                     "shows the newest code's runs")
    for cell, decision, old in killed:
        if across:
            lines.append(f"harness: note: {cell.run_name} continues from its checkpoint although the "
                         f"plugin code changed (was {short(old)}, now {short(now[cell.quantizer])}): "
                         "--resume-across-code-change")
            continue
        lines.append(f"harness: note: the plugin code of {cell.run_name} changed since it was "
                     f"interrupted (was {short(old)}, now {short(now[cell.quantizer])}), so it starts "
                     "from step 0 instead of continuing the old code's checkpoint; pass "
                     "--resume-across-code-change to continue it anyway")
        decisions[cell.config_hash] = Resume("fresh", decision.run)
    for line in lines:
        print(line, file=out or sys.stderr)
    return lines
