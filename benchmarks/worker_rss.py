"""Peak resident memory of a cell's worker, and where it goes (not a test).

    python benchmarks/worker_rss.py [--suite toy2d] [--method vq] [--profile smoke]

Two measurements, printed as one JSON line at the end:

- **worker**: ``harness run SUITE -q METHOD --executor processes:jobs=1`` into a fresh
  SQLite store, while this script polls ``/proc`` every 20 ms for the peak resident set
  (``VmHWM``) of every process below the command. The worker is the ``spawn``-ed
  interpreter (``multiprocessing`` in its command line); the control process is reported
  beside it.
- **imports**: the peak resident set of fresh interpreters that import one more piece at a
  time (Python, torch, one Adam step, then MLflow's client, matplotlib, MLflow's SQL store,
  the harness's cell code), so the worker's total splits into what each piece costs and what
  the cell itself adds. The Adam step is what any bare PyTorch loop pays: constructing a
  ``torch.optim`` optimizer imports ``torch._dynamo`` (and with it sympy) on its first call.

``VmHWM`` is Linux's high-water mark of the resident set: it counts shared library pages a
process touched, so the figures add up to more than the machine's used memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE_STEP = ("import torch; p = torch.nn.Parameter(torch.zeros(2)); o = torch.optim.Adam([p]); "
             "p.sum().backward(); o.step()")
#: cumulative: each step imports what the one before did, plus one piece
IMPORT_STEPS = {
    "python": "pass",
    "+ torch": "import torch",
    "+ an Adam step (bare loop)": BARE_STEP,
    "+ mlflow client": f"{BARE_STEP}; import mlflow.tracking",
    "+ matplotlib": f"{BARE_STEP}; import mlflow.tracking, matplotlib.pyplot",
    "+ mlflow SQL store": f"{BARE_STEP}; import mlflow.tracking, matplotlib.pyplot, "
                          "mlflow.store.tracking.sqlalchemy_store",
    "+ harness cell code": f"{BARE_STEP}; import mlflow.tracking, matplotlib.pyplot, "
                           "mlflow.store.tracking.sqlalchemy_store, harness.cell.runner",
}


FIELDS = ("VmHWM", "RssAnon", "RssFile")


def memory_kib(pid: int) -> dict[str, int] | None:
    """``VmHWM`` (the peak) and the current anonymous and file-backed resident sets of
    ``pid`` in KiB, or ``None`` once it has gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    found = {line.split(":")[0]: int(line.split()[1]) for line in lines if line.startswith(FIELDS)}
    return found if len(found) == len(FIELDS) else None


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (read from ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def role(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return "gone"
    if "multiprocessing" in cmdline and "resource_tracker" in cmdline:
        return "resource tracker"
    return "worker" if "multiprocessing" in cmdline else "control"


def worker_peaks(suite: str, method: str, profile: str) -> dict[str, dict[str, float]]:
    """Peak memory (MiB) per role while the suite's one cell runs on the processes executor:
    ``VmHWM`` and the largest anonymous and file-backed resident sets seen while polling."""
    with tempfile.TemporaryDirectory() as tmp:
        command = ["harness", "run", suite, "-q", method, "--profile", profile, "--seeds", "1",
                   "--executor", "processes", "--executor-option", "jobs=1", "--no-progress",
                   "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"]
        proc = subprocess.Popen(command, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peaks: dict[int, tuple[str, dict[str, int]]] = {}
        while proc.poll() is None:
            for pid in [proc.pid, *descendants(proc.pid)]:
                kib = memory_kib(pid)
                if kib is not None:
                    name, seen = peaks.setdefault(pid, (role(pid), dict.fromkeys(FIELDS, 0)))
                    peaks[pid] = (name, {k: max(seen[k], kib[k]) for k in FIELDS})
            time.sleep(0.02)
        if proc.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr.read().decode()}")
    out: dict[str, dict[str, float]] = {}
    for name, kib in peaks.values():
        best = out.setdefault(name, dict.fromkeys(FIELDS, 0.0))
        out[name] = {k: max(best[k], round(kib[k] / 1024, 1)) for k in FIELDS}
    return out


def import_peaks() -> dict[str, dict[str, float]]:
    """Memory (MiB) of a fresh interpreter after each cumulative import."""
    out = {}
    for name, statement in IMPORT_STEPS.items():
        code = f"{statement}\nprint(open('/proc/self/status').read())"
        status = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True, env={**os.environ, "MPLBACKEND": "Agg"}).stdout
        found = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
                 if line.startswith(FIELDS)}
        out[name] = {k: round(found[k] / 1024, 1) for k in FIELDS}
    return out


def line(name: str, mib: dict[str, float]) -> str:
    return (f"{name:<28} peak {mib['VmHWM']:7.1f} MiB  anonymous {mib['RssAnon']:7.1f}  "
            f"file-backed {mib['RssFile']:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="toy2d")
    parser.add_argument("--method", default="vq")
    parser.add_argument("--profile", default="smoke")
    args = parser.parse_args()
    imports = import_peaks()
    for name, mib in imports.items():
        print(line(f"imports {name}", mib))
    workers = worker_peaks(args.suite, args.method, args.profile)
    for name, mib in workers.items():
        print(line(name, mib))
    print(json.dumps({"suite": args.suite, "method": args.method, "profile": args.profile,
                      "peak_mib": workers, "import_peak_mib": imports}))


if __name__ == "__main__":
    main()
