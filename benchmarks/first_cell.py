"""What a process's first cell costs beyond the next ones (each pytest-xdist worker pays it).

    python benchmarks/first_cell.py [--suite toy2d] [--profile full] [-q vq -q drifting] [--cells 4] [--top 25]

Runs the first ``--cells`` cells of the suite one after another in this process, as an
xdist worker runs its items (the ``local`` executor's ``run_cell``, into a new store in
a temporary folder), prints each cell's seconds, and the ``--top`` entries of a cProfile
of the first cell by cumulative time: the first-use costs (imports a cell triggers, such
as torch.optim's first optimizer importing torch._dynamo) show there and not in the
second cell.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="toy2d")
    parser.add_argument("--profile", default="full")
    parser.add_argument("-q", "--quantizer", action="append", dest="methods", default=None)
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    from harness.host import get_host
    from harness.run.executors import build_executor, run_cell
    from harness.run.lifecycle import cell_options, open_tracker, start_parent
    from harness.run.options import RunOptions
    from harness.run.selection import select_cells
    from harness.run.specs import cell_specs
    from harness.suite import load_suite

    host, suite = get_host(), load_suite(args.suite, args.profile)
    methods = args.methods or ["vq", "drifting"]
    cells = select_cells(host, suite, methods)[: args.cells]
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        options = RunOptions(device="cpu", tracking_uri=uri, progress=False)
        executor, tracker = build_executor(host, "local", {}), open_tracker(uri)
        parent = start_parent(tracker, host, suite, cells, methods, options, executor.name)
        specs = cell_specs(suite, [(cell, None) for cell in cells], parent, uri, cell_options(options, executor))
        profile = cProfile.Profile()
        for index, spec in enumerate(specs):
            start = time.perf_counter()
            if index == 0:
                profile.enable()
            run_cell(spec, host)
            if index == 0:
                profile.disable()
            print(f"{spec.run_name}: {time.perf_counter() - start:.2f} s", flush=True)
    print(f"\nthe first cell, top {args.top} by cumulative time:")
    pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
