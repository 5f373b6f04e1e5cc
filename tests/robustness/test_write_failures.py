"""A write that fails during a run (the artifact folder turns read-only, the disk fills up) fails
the cells that need it, with the reason; while the store itself can still be written the suite
goes on and ends with every run closed (a full store stops it: test_disk_full.py).

Real ``harness run`` processes; the artifact folder is a real tmpfs that the test remounts
read-only or fills once the first cell has finished.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.robustness.conftest import cell_runs, finish, start, suite_runs, wait_for
from tests.robustness.mounts import fill, make_read_only, tmpfs


def first_cell_finished(uri: str) -> bool:
    return any(r.info.status == "FINISHED" for r in cell_runs(uri))


@pytest.mark.parametrize("attack, reason, folder", [
    (make_read_only, "Read-only file system", "mlartifacts"),
    (fill, "No space left on device", "mlartifacts"),
    (make_read_only, "Read-only file system", "checkpoints"),
    (fill, "No space left on device", "checkpoints"),
], ids=["read-only-artifacts", "full-artifact-disk", "read-only-checkpoints", "full-checkpoint-disk"])
def test_failed_write_fails_the_cell_and_the_suite_goes_on(
        attack: Callable[[Path], object], reason: str, folder: str, workdir: Path, store: str,
        tiny: Callable[..., Path]):
    suite = tiny(steps=150, checkpoint_every=20)
    with tmpfs(workdir / folder, size="8m") as target:
        proc = start(["run", str(suite), "-q", "vq", "--seeds", "4", "--no-progress"], workdir,
                     HARNESS_CHECKPOINT_DIR=str(workdir / "checkpoints"))
        wait_for(lambda: first_cell_finished(store), "the first cell to finish", proc=proc)
        attack(target)
        rc, _out, err = finish(proc)
    assert rc == 1, err
    cells = cell_runs(store)
    assert len(cells) == 4 and all(r.info.status in ("FINISHED", "FAILED") for r in cells), \
        [(r.info.run_name, r.info.status) for r in cells]
    failed = [r for r in cells if r.info.status == "FAILED"]
    assert len(failed) >= 2, err  # the cells that started after the attack could write nothing
    for run in failed:
        assert reason in run.data.tags["harness.error"], run.data.tags["harness.error"]
    [parent] = suite_runs(store)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["harness.failed_cells"] == str(len(failed))
    assert "Traceback" not in err
    if attack is fill:  # the store still takes writes: the suite went on, saying what the cells met
        assert "is full: the suite stopped" not in err
        assert "No space left on device" in parent.data.tags["harness.warning.disk_full"]
    if folder == "mlartifacts":  # the failure handler's own upload fails too, and is guarded
        assert "harness: warning: saving traceback.txt failed" in err
