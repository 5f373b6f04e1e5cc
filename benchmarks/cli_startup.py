"""How fast the command line answers: wall time and peak RSS of listing commands (not a test).

    python benchmarks/cli_startup.py [--repeats 7]

Each command runs ``--repeats`` times in a fresh interpreter under ``/usr/bin/time -v``
(wall clock and maximum resident set size), interleaved so a busy machine slows all
alike; the median and the spread (min-max) are printed per command, and whether the
process imported torch (read from ``python -X importtime``'s log of one extra run).
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


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one run of ``harness argv``."""
    done = subprocess.run(["/usr/bin/time", "-v", *PREFIX, *argv], capture_output=True, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if done.returncode != 0 or wall is None or rss is None:
        raise SystemExit(f"harness {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    hours, minutes, seconds = (float(g or 0) for g in wall.groups())
    return hours * 3600 + minutes * 60 + seconds, int(rss.group(1)) / 1024


def imports_torch(argv: list[str]) -> bool:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness.commands.cli", *argv],
                          capture_output=True, text=True)
    return bool(re.search(r"\|\s+torch$", done.stderr, re.MULTILINE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in COMMANDS}
    for _ in range(args.repeats):
        for key, argv in COMMANDS.items():
            samples[key].append(timed(argv))
    report = {}
    for key, runs in samples.items():
        walls, rss = [w for w, _ in runs], [r for _, r in runs]
        report[key] = {"wall_s": round(statistics.median(walls), 3),
                       "wall_range_s": [round(min(walls), 3), round(max(walls), 3)],
                       "rss_mb": round(statistics.median(rss), 1),
                       "rss_range_mb": [round(min(rss), 1), round(max(rss), 1)],
                       "imports_torch": imports_torch(COMMANDS[key])}
        print(f"harness {key:16s} {report[key]['wall_s']:6.2f} s "
              f"({report[key]['wall_range_s'][0]}-{report[key]['wall_range_s'][1]})  "
              f"{report[key]['rss_mb']:6.0f} MB  torch imported: {report[key]['imports_torch']}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
