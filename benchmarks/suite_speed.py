"""Wall-clock time of whole `harness run` commands, start-up included (not a test).

    python benchmarks/suite_speed.py                      # toy2d smoke and full
    python benchmarks/suite_speed.py --runs toy2d:smoke   # just one

Each command runs in a fresh temporary folder (a new ``mlflow.db``, so the
database creation is counted too). Prints a Markdown table; ``--write`` puts it
into docs/performance.md between the ``suite-speed`` markers.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r"(<!-- suite-speed:start -->\n).*?(<!-- suite-speed:end -->)", re.S)


def time_command(args: list[str]) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        proc = subprocess.run(args, cwd=folder, capture_output=True, text=True,
                              env={**os.environ, "MLFLOW_TRACKING_URI": ""})
        return time.perf_counter() - start, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", default=["toy2d:smoke", "toy2d:full"])
    parser.add_argument("--write", action="store_true", help="update docs/performance.md")
    args = parser.parse_args()
    rows = []
    for item in args.runs:
        suite, profile = item.split(":")
        command = ["harness", "run", suite, "--profile", profile, "--no-progress"]
        seconds, code = time_command(command)
        rows.append(f"| `{' '.join(command[:-1])}` | {seconds:.1f} s | {code} |")
        print(rows[-1], flush=True)
    cpu = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    table = "\n".join([f"Measured on {cpu}, {time.strftime('%Y-%m-%d')}, with "
                       "`python benchmarks/suite_speed.py --write`.", "",
                       "| command | wall time | exit code |", "|---|---|---|", *rows, ""])
    print(table)
    if args.write:
        page = ROOT / "docs" / "performance.md"
        text = page.read_text()
        page.write_text(MARK.sub(lambda m: m.group(1) + table + m.group(2), text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
