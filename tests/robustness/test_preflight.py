"""Before any cell: unwritable folders, a full disk and missing data stop ``harness run`` with exit 2
and a message saying what to fix, and nothing is recorded (real ``harness`` processes, real mounts)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.robustness.conftest import WAIT_S, cell_runs, child_env, harness_cmd, run, suite_runs
from tests.robustness.mounts import fill, read_only, tmpfs

ARGS = ["-q", "vq", "--seeds", "1", "--no-progress", "--set", "train.steps=2"]


def assert_nothing_recorded(uri: str, experiment: str = "tiny") -> None:
    assert cell_runs(uri, experiment) == [] and suite_runs(uri, experiment) == []


def test_missing_dataset_root_is_found_before_any_cell(workdir: Path, store: str):
    """``harness run celebahq256`` without the data: exit 2, what to put where, no FAILED run per cell."""
    rc, _out, err = run(["run", "celebahq256", "--profile", "smoke", "--no-progress"], workdir, HARNESS_DATA="")
    assert rc == 2, err
    assert "dataset 'celebahq': no dataset root for 'celebahq'" in err
    assert "<root>/celeba_hq_256/00000.jpg" in err and "Traceback" not in err
    assert_nothing_recorded(store, "celebahq256")


def test_empty_dataset_folder_is_found_before_any_cell(workdir: Path, store: str):
    empty = workdir / "faces"
    empty.mkdir()
    rc, _out, err = run(["run", "celebahq256", "--profile", "smoke", "--no-progress", "--data-root", str(empty)],
                        workdir)
    assert rc == 2, err
    assert f"no CelebA-HQ images (.jpg/.jpeg/.png) in {empty}" in err
    assert_nothing_recorded(store, "celebahq256")


def test_read_only_artifact_folder(workdir: Path, store: str, tiny_suite: Path):
    with read_only(workdir / "mlartifacts") as folder:
        rc, _out, err = run(["run", str(tiny_suite), *ARGS], workdir)
    assert rc == 2, err
    assert f"the artifact folder {folder / 'tiny'}: cannot write there (checked {folder}" in err
    assert "Traceback" not in err
    assert_nothing_recorded(store)


def test_read_only_checkpoint_folder(workdir: Path, store: str, tiny_suite: Path):
    with read_only(workdir / "ckpt") as folder:
        rc, _out, err = run(["run", str(tiny_suite), *ARGS], workdir, HARNESS_CHECKPOINT_DIR=str(folder))
    assert rc == 2, err
    assert f"the checkpoint folder {folder / 'tiny'}: cannot write there" in err
    assert_nothing_recorded(store)


def test_full_checkpoint_disk(workdir: Path, store: str, tiny_suite: Path):
    with tmpfs(workdir / "ckpt", size="1m") as folder:
        fill(folder)
        rc, _out, err = run(["run", str(tiny_suite), *ARGS], workdir, HARNESS_CHECKPOINT_DIR=str(folder))
    assert rc == 2, err
    assert f"the checkpoint folder {folder / 'tiny'}: cannot write there" in err
    assert "No space left on device" in err
    assert_nothing_recorded(store)


def test_read_only_working_folder_with_a_store_elsewhere(tmp_path: Path, migrated_db: Path, tiny_suite: Path):
    import shutil

    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(migrated_db, db)
    with read_only(tmp_path / "ro") as folder:  # output captured here: the folder takes no files
        done = subprocess.run(harness_cmd("run", str(tiny_suite), *ARGS, "--tracking-uri", f"sqlite:///{db}"),
                              cwd=folder, env=child_env(), capture_output=True, text=True, timeout=WAIT_S)
    rc, err = done.returncode, done.stderr
    assert rc == 2, err
    assert f"the working folder {folder}: cannot write there" in err
    assert_nothing_recorded(f"sqlite:///{db}")


def test_every_problem_is_listed_at_once(workdir: Path, store: str):
    with read_only(workdir / "ckpt") as folder:
        rc, _out, err = run(["run", "celebahq256", "--profile", "smoke", "--no-progress"], workdir,
                            HARNESS_CHECKPOINT_DIR=str(folder), HARNESS_DATA="")
    assert rc == 2
    assert "the checkpoint folder" in err and "dataset 'celebahq'" in err
