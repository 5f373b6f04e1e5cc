"""Divergence ends a cell FAILED with the step, the suite goes on, the leaderboard says "failed".

(A plugin raising while its cell runs is tests/test_cli.py::test_crashing_cell_is_failed_and_the_suite_goes_on.)
"""

from __future__ import annotations

import re
from pathlib import Path

from mlflow.tracking import MlflowClient

from harness.commands.cli import main
from tests.conftest import TINY_SUITE
from tests.robustness.conftest import cell_runs

# listed first so the suite has to go on after it; beta = 1e39 overflows float32: the loss is inf
DIVERGING = TINY_SUITE.replace("[methods.vq]", '[methods.blowup]\nquantizer = "vq"\nparams = { beta = 1e39 }\n\n[methods.vq]')


def test_divergence_fails_the_cell_not_the_suite(suite_file, store: str, capsys):
    path = suite_file(DIVERGING, "diverging.toml")
    rc = main(["run", str(path), "-q", "blowup", "-q", "vq", "--seeds", "1", "--set", "train.steps=20",
               "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "1 of 2 cells failed: blowup-K4-d2-s0" in captured.err
    summary = next(line for line in captured.out.splitlines() if line.startswith("| blowup-K4-d2-s0"))
    assert "FAILED" in summary and re.search(r"diverged at step \d+", summary)

    runs = {r.info.run_name: r for r in cell_runs(store)}
    assert runs["vq-K4-d2-s0"].info.status == "FINISHED"  # the next cell still ran
    failed = runs["blowup-K4-d2-s0"]
    assert failed.info.status == "FAILED"
    assert re.fullmatch(r"Diverged: diverged at step \d+ \(loss = (inf|nan)\)", failed.data.tags["harness.error"])
    assert not any(k.startswith("eval/") for k in failed.data.metrics)  # no numbers for a failed cell
    text = Path(MlflowClient(store).download_artifacts(failed.info.run_id, "traceback.txt")).read_text()
    assert "Diverged" in text

    assert main(["leaderboard", str(path)]) == 0
    board = capsys.readouterr().out
    row = next(line for line in board.splitlines() if line.startswith("| blowup"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert "failed" in cells
    assert not any(re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?( ± .*)?", c) for c in cells[4:] if c not in ("0", "1")), row
