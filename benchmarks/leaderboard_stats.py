"""What the statistics add to building a leaderboard page of N rows (not a test).

    python benchmarks/leaderboard_stats.py [--rows 200] [--groups 4] [--columns 6] [--seeds 3]
        [--repeat 5]

Builds a synthetic board (rows spread over rate groups, every row with per-seed
values of every column, no store: the statistics read only the rows) and times
:func:`harness.leaderboard.stats.compute` (tie sets of every column, the top
pairs' P(X > Y) and seeds needed, mean-rank bootstrap, performance profile), then the
interval of every cell (what the renderers add per cell), then the Markdown,
CSV, JSON and HTML renderings with the statistics already computed, and the
import of scipy.special (once per process) beside that of scipy.stats.
Prints the best of ``--repeat`` runs; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from harness.leaderboard import stats
from harness.leaderboard.build import Leaderboard
from harness.leaderboard.rows import Row, Seed, Stat


def synthetic_board(rows: int, groups: int, columns: int, seeds: int, seed: int = 0) -> Leaderboard:
    """``rows`` rows over ``groups`` rate groups; column 0 separates rows, the others are noise."""
    rng = np.random.default_rng(seed)
    names = ["psnr"] + [f"metric{i}" for i in range(1, columns)]
    out = []
    for i in range(rows):
        bits = 8.0 + 2.0 * (i % groups)
        row = Row(f"method{i // groups}", "vq", int(2 ** bits), 8, n=seeds, bits_per_token=bits,
                  tokens_per_item=16, pixels_per_item=64, digest="0" * 64)
        for s in range(seeds):
            values = {c: float(rng.normal(20.0 + 0.01 * i if c == "psnr" else 1.0, 0.5)) for c in names}
            row.seed_metrics[s], row.run_ids[s] = values, f"run{i}-{s}"
            row.seeds[s] = Seed(s, "ok", f"run{i}-{s}")
        for c in names:
            vals = [row.seed_metrics[s][c] for s in range(seeds)]
            row.metrics[c] = Stat(statistics.fmean(vals), statistics.stdev(vals) if seeds > 1 else 0.0, seeds)
        out.append(row)
    return Leaderboard("bench", "full", 1, "psnr", names, dict.fromkeys(names, True), out,
                       meta={"store": "(synthetic)", "built": "now"})


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def import_seconds(module: str) -> float:
    """Seconds to import ``module`` in a fresh process that already has numpy (once per page)."""
    import subprocess
    import sys

    code = f"import time, numpy; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--columns", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    from harness.leaderboard.render import RENDERERS

    board = synthetic_board(args.rows, args.groups, args.columns, args.seeds)
    stats_s = best_of(args.repeat, lambda: stats.compute(board))
    stats.board_stats(board)
    cells = [(r, c) for r in board.rows for c in board.columns]
    intervals_s = best_of(args.repeat, lambda: [stats.row_interval(r, c) for r, c in cells])
    render_s = {fmt: best_of(args.repeat, lambda r=render: r(board)) for fmt, render in RENDERERS.items()}
    tied = sum(len(g.tied) for (_, c), g in board.stats.groups.items() if c == "psnr")
    print(f"{args.rows} rows, {args.groups} rate groups, {args.columns} columns, {args.seeds} seeds: "
          f"statistics {stats_s:.3f} s + intervals of {len(cells)} cells {intervals_s:.3f} s "
          f"(best of {args.repeat}); rows tied with the best on psnr: {tied}")
    imports = {m: import_seconds(m) for m in ("scipy.special", "scipy.stats")}
    print(f"  import scipy.special (what the statistics use): {imports['scipy.special']:.3f} s; "
          f"scipy.stats (not imported): {imports['scipy.stats']:.3f} s")
    for fmt, seconds in render_s.items():
        print(f"  render {fmt}: {seconds:.3f} s (statistics already computed)")
    print(json.dumps({"rows": args.rows, "groups": args.groups, "columns": args.columns,
                      "seeds": args.seeds, "statistics_s": round(stats_s, 4),
                      "intervals_s": round(intervals_s, 4),
                      "import_s": {k: round(v, 4) for k, v in imports.items()},
                      "render_s": {k: round(v, 4) for k, v in render_s.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
