"""Regenerate the checked-in leaderboards: run the suites' full profiles on CPU, write the pages.

    python -m harness.commands.regenerate                 # toy2d, toy2d-drift, digits
    python -m harness.commands.regenerate toy2d --jobs 4  # one suite, 4 shards at once
    python -m harness.commands.regenerate --skip-run      # only re-render from the store

Each suite runs as ``harness run SUITE --device cpu`` (``--jobs`` splits it into
``--shard i/N`` processes writing to one store; the page then re-checks the
claims over all cells), then ``harness leaderboard --log`` writes ``<suite>.html``
(also logged as a ``leaderboard`` run in the store) and ``<suite>.md`` into the
checkout's ``pages/`` folder. A suite that is not registered is skipped with a message.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PAGES = Path(__file__).resolve().parents[2] / "pages"  # the published pages of a checkout
SUITES = ("toy2d", "toy2d-drift", "digits")


def run_suite(suite: str, uri: str, jobs: int, profile: str) -> int:
    """``harness run`` in ``jobs`` shard processes (one thread each); the worst exit code."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "harness.commands.cli", "run", suite, "--profile", profile, "--device", "cpu",
            "--tracking-uri", uri, "--no-progress"]
    commands = [base] if jobs == 1 else [[*base, "--shard", f"{i}/{jobs}"] for i in range(1, jobs + 1)]
    processes = [subprocess.Popen(c, env=env) for c in commands]
    return max(p.wait() for p in processes)


def recorded(suite: str, uri: str, profile: str) -> bool:
    """Whether the store holds cells of this suite and profile (a page of none is not regenerated)."""
    from harness.leaderboard.source import open_store

    tracker = open_store(uri)
    return tracker is not None and any(
        r.data.tags.get("harness.profile") == profile for r in tracker.runs(suite, "tags.`harness.kind` = 'cell'"))


def render(suite: str, uri: str, out: Path, profile: str) -> bool:
    """Write ``<suite>.html`` (logging it) and ``<suite>.md``; False when the store has no such runs."""
    from harness.commands.cli import main

    if not recorded(suite, uri, profile):
        print(f"regenerate: no {profile!r} cells of {suite!r} in {uri}")
        return False
    common = [suite, "--tracking-uri", uri, "--profile", profile]
    if main(["leaderboard", *common, "--format", "html", "--log", "--output", str(out / f"{suite}.html")]) != 0:
        return False
    return main(["leaderboard", *common, "--format", "md", "--output", str(out / f"{suite}.md")]) == 0


def main(argv: Sequence[str] | None = None) -> int:
    from harness.suite import builtin_suites
    from harness.tracking import resolve_uri

    parser = argparse.ArgumentParser(prog="python -m harness.commands.regenerate",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suites", nargs="*", default=list(SUITES), help=f"default: {' '.join(SUITES)}")
    parser.add_argument("--store", type=Path, default=Path("leaderboard-store"),
                        help="folder of the MLflow store (mlflow.db + mlartifacts/); default ./leaderboard-store")
    parser.add_argument("--tracking-uri", help="an MLflow tracking URI instead of --store")
    parser.add_argument("--out", type=Path, default=PAGES, help="where the pages go (default: the checkout's pages/ folder)")
    parser.add_argument("--jobs", type=int, default=1, help="shard processes per suite (default 1)")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--skip-run", action="store_true", help="only render what the store holds")
    args = parser.parse_args(argv)

    if args.tracking_uri:
        uri = resolve_uri(args.tracking_uri)
    else:
        args.store.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{(args.store / 'mlflow.db').resolve()}"
    known = builtin_suites()
    written, skipped = [], []
    for suite in args.suites:
        if suite not in known:
            print(f"regenerate: suite {suite!r} is not registered (yet); skipped. Known: {', '.join(sorted(known))}")
            skipped.append(suite)
            continue
        if not args.skip_run:
            print(f"regenerate: running {suite} ({args.profile} profile, CPU, {args.jobs} job(s)) into {uri}")
            code = run_suite(suite, uri, args.jobs, args.profile)
            if code not in (0, 1):  # 1: failed cells or claims, which the page shows
                print(f"regenerate: `harness run {suite}` exited with {code}; page not regenerated")
                skipped.append(suite)
                continue
        if render(suite, uri, args.out, args.profile):
            written.append(suite)
        else:
            print(f"regenerate: no page for {suite} (see the error above); skipped")
            skipped.append(suite)
    print(f"regenerate: wrote {', '.join(written) or 'nothing'}"
          + (f"; skipped {', '.join(skipped)}" if skipped else ""))
    return 0 if written or not args.suites else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
