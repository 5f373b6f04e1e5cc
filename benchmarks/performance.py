"""Regenerate docs/performance.md: every table on that page comes from this one command.

    python benchmarks/performance.py            # all sections (about 20 minutes on 2 CPU cores)
    python benchmarks/performance.py --only bench search

Sections (each replaces the text between its markers in docs/performance.md):

- suites:   wall time of `harness run toy2d` (smoke, full), start-up included;
- bench:    `harness bench --peer` on the CPU grid (tokens 4,096; K 1,024 and 65,536; D 8 and 64),
            and the full grid on CUDA when a GPU is present;
- search:   `harness bench --search` (131,072 tokens x 65,536 codes x 64);
- overhead: benchmarks/overhead.py (harness loop vs a bare PyTorch loop);
- xdist:    `pytest --harness-suite toy2d` with -n 0 and -n 2, and -n 2 with the -n 0 session's durations.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "performance.md"


def run(command: list[str], cwd: Path | None = None) -> tuple[float, str, int]:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    return time.perf_counter() - start, proc.stdout, proc.returncode


def table_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.startswith("|"))


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} CPU cores, {gpu}, Python {platform.python_version()}, torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d')}")


def section_suites(tmp: Path) -> str:
    rows = []
    for profile in ("smoke", "full"):
        command = ["harness", "run", "toy2d", "--profile", profile, "--no-progress"]
        folder = tmp / f"suite-{profile}"
        folder.mkdir()
        seconds, _, code = run(command, folder)
        rows.append(f"| `{' '.join(command[:-1])}` | {seconds:.1f} s | {code} |")
    return "\n".join(["| command | wall time (new store, start-up included) | exit code |", "|---|---|---|", *rows])


def section_bench(tmp: Path) -> str:
    import torch

    parts = []
    command = ["harness", "bench", "--peer", "--tokens", "4096", "--no-track", "--device", "cpu"]
    _, out, _ = run(command, tmp)
    parts += [f"CPU, `{' '.join(command)}`:", "", table_lines(out)]
    if torch.cuda.is_available():
        command = ["harness", "bench", "--peer", "--no-track", "--device", "cuda"]
        _, out, _ = run(command, tmp)
        parts += ["", f"CUDA, `{' '.join(command)}`:", "", table_lines(out)]
    return "\n".join(parts)


def section_search(tmp: Path) -> str:
    command = ["harness", "bench", "-q", "vq", "--tokens", "4096", "--codes", "1024", "--dims", "8",
               "--search", "--no-track", "--device", "cpu"]
    _, out, _ = run(command, tmp)
    return f"`{' '.join(command)}` (its last table):\n\n" + "\n".join(table_lines(out).splitlines()[-3:])


def section_overhead(tmp: Path) -> str:
    command = [sys.executable, str(ROOT / "benchmarks" / "overhead.py"), "--steps", "3000", "--repeats", "3"]
    _, out, _ = run(command, tmp)
    return ("`python benchmarks/overhead.py --steps 3000 --repeats 3` (toy2d cell, vq K=10, medians):\n\n"
            "| steps | bare PyTorch loop | harness loop (MLflow logging) | whole cell (run, params, plots, checkpoint) |\n"
            "|---|---|---|---|\n" + table_lines(out))


def section_xdist(tmp: Path) -> str:
    """The smoke profile (8 cells: start-up dominates) and 20 full-profile cells. For the full
    profile also `-n 2` with the durations the `-n 0` session left in pytest's cache, which the
    harness's scheduler uses to hand out the longest cells first (harness/testing/scheduling.py)."""
    lines = ["| command | wall time | speed-up over -n 0 | result |", "|---|---|---|---|"]
    full = ["--harness-profile", "full", "--harness-method", "vq", "--harness-method", "drifting"]
    for extra, runs in (([], ("0", "2")), (full, ("0", "2", "2 with the -n 0 durations"))):
        base, first = None, None
        for label in runs:
            folder = tmp / f"xdist-{len(extra)}-{len(lines)}"
            folder.mkdir()
            workers = label.split()[0]
            history = label != workers
            if history:  # the -n 0 session's cache: its cells' durations
                shutil.copytree(first / ".pytest_cache", folder / ".pytest_cache")
            cache = [] if history or workers == "0" else ["-p", "no:cacheprovider"]
            command = ["pytest", *cache, "--harness-suite", "toy2d", *extra, "-n", workers, "-q"]
            seconds, out, _ = run([sys.executable, "-m", *command], folder)
            base, first = base or seconds, first or folder
            last = out.strip().splitlines()[-1] if out.strip() else ""
            shown = " ".join(command[1 + len(cache):]) + (" (durations of the -n 0 run)" if history else "")
            lines.append(f"| `pytest {shown}` | {seconds:.1f} s | {base / seconds:.2f}x | {last} |")
    return "\n".join(lines)


SECTIONS = {"suites": section_suites, "bench": section_bench, "search": section_search,
            "overhead": section_overhead, "xdist": section_xdist}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), default=list(SECTIONS))
    args = parser.parse_args()
    text = PAGE.read_text()
    with tempfile.TemporaryDirectory() as folder:
        for name in args.only:
            body = SECTIONS[name](Path(folder))
            body = f"Measured on {machine()}.\n\n{body}\n"
            print(f"== {name}\n{body}", flush=True)
            pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
            if not pattern.search(text):
                raise SystemExit(f"docs/performance.md has no <!-- {name}:start/end --> markers")
            text = pattern.sub(lambda m, b=body: m.group(1) + b + m.group(2), text)
            PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
