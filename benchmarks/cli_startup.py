"""How fast the command line answers: wall time and peak RSS of listing commands (not a test).

    python benchmarks/cli_startup.py [--repeats 7] [--tree before=/path/to/old/checkout ...]

Each command runs ``--repeats`` times in a fresh interpreter under ``/usr/bin/time -v``
(wall clock and maximum resident set size), interleaved so a busy machine slows all
alike; the median and the spread (min-max) are printed per command, and whether the
process imported torch (read from ``python -X importtime``'s log of one extra run).
``--tree LABEL=DIR`` (repeatable) times the ``harness`` package of another checkout
side by side (``python -m`` runs from DIR, so DIR's package is imported; the installed
entry points name the plugin modules), e.g. a ``git worktree`` of an older commit.
The last line is JSON with every figure.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys

COMMANDS = {
    "list quantizers": ["list", "quantizers"],
    "plugins": ["plugins"],
    "--help": ["--help"],
    "run --help": ["run", "--help"],
}
PREFIX = [sys.executable, "-m", "harness.commands.cli"]


def timed(argv: list[str], tree: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one run of ``harness argv`` from checkout ``tree``."""
    done = subprocess.run(["/usr/bin/time", "-v", *PREFIX, *argv], capture_output=True, text=True, cwd=tree)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if done.returncode != 0 or wall is None or rss is None:
        raise SystemExit(f"harness {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    hours, minutes, seconds = (float(g or 0) for g in wall.groups())
    return hours * 3600 + minutes * 60 + seconds, int(rss.group(1)) / 1024


def imports_torch(argv: list[str], tree: str) -> bool:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness.commands.cli", *argv],
                          capture_output=True, text=True, cwd=tree)
    return bool(re.search(r"\|\s+torch$", done.stderr, re.MULTILINE))


def spread(name: str, values: list[float], digits: int) -> dict[str, object]:
    """``{name: median, name_range: [min, max]}`` (``wall_s`` -> ``wall_range_s``), rounded."""
    return {name: round(statistics.median(values), digits),
            name.replace("_", "_range_", 1): [round(min(values), digits), round(max(values), digits)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR")
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"here": "."}
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {
        (t, k): [] for t in trees for k in COMMANDS}
    for _ in range(args.repeats):
        for key, argv in COMMANDS.items():
            for label, tree in trees.items():
                samples[label, key].append(timed(argv, tree))
    report: dict[str, dict] = {}
    for (label, key), runs in samples.items():
        row = {**spread("wall_s", [w for w, _ in runs], 3), **spread("rss_mb", [r for _, r in runs], 1),
               "imports_torch": imports_torch(COMMANDS[key], trees[label])}
        report.setdefault(label, {})[key] = row
        print(f"{label:8s} harness {key:16s} {row['wall_s']:6.2f} s ({row['wall_range_s'][0]}-"
              f"{row['wall_range_s'][1]})  {row['rss_mb']:6.0f} MB  torch imported: {row['imports_torch']}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
