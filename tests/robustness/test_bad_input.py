"""The bad-input catalogue: each item is rejected with a clear message (and no traceback).

Items already covered elsewhere, not repeated here:
- malformed TOML at the loader: tests/test_suite.py::test_syntax_error_names_line
- wrong types in the file and in a profile: tests/test_suite.py::test_wrong_type_names_line,
  ::test_wrong_type_in_profile_names_its_line
- unknown keys in a table and in --set: tests/test_suite.py::test_unknown_key_names_file_line_and_suggestion,
  tests/test_cli.py::test_bad_input_exits_2_with_reason
- zero codebook size, negative batch size: tests/test_suite.py::test_non_positive_sizes_rejected
- unknown plugin parameters: tests/test_cli.py::test_unknown_quantizer_param_points_at_suite_line
- an unreachable tracking server: tests/robustness/test_concurrency.py::test_unreachable_server_fails_fast_with_a_clear_message
- random invalid values and sizes: tests/robustness/test_suite_properties.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from harness.commands.cli import main
from harness.errors import DatasetMissing, MetricUnavailable
from tests.conftest import TINY_SUITE
from tests.robustness.conftest import cell_runs, child_env, harness_cmd


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_malformed_toml_on_the_command_line(suite_file, workdir, capsys):
    path = suite_file(TINY_SUITE.replace("lr = 1e-2", "lr = 1e-2 oops"))
    line = TINY_SUITE.splitlines().index("lr = 1e-2") + 1
    rc, _, err = run_cli(["run", str(path)], capsys)
    assert rc == 2
    assert f"{path}:{line}: invalid TOML" in err and "Traceback" not in err
    assert not (workdir / "mlflow.db").exists()


def test_wrong_type_from_set(tiny_suite, capsys):
    rc, _, err = run_cli(["run", str(tiny_suite), "--set", "train.steps=ten"], capsys)
    assert rc == 2
    assert "train.steps must be int, got str 'ten'" in err


def test_unknown_table_suggests(suite_file, capsys):
    path = suite_file(TINY_SUITE.replace("[train]", "[trian]"))
    line = TINY_SUITE.splitlines().index("[train]") + 1
    rc, _, err = run_cli(["run", str(path)], capsys)
    assert rc == 2
    assert f"{path}:{line}: unknown table 'trian'; did you mean 'train'?" in err


@pytest.mark.parametrize("argv, needle", [
    (["--set", "matrix.seeds=0"], "matrix.seeds must be positive, got 0"),
    (["--set", "matrix.dim=[2, -2]"], "matrix.dim must be a non-empty list of positive integers"),
    (["--set", "train.steps=-5"], "train.steps must be positive, got -5"),
    (["--set", "train.lr=0"], "train.lr must be positive, got 0"),
])
def test_zero_or_negative_sizes(tiny_suite, argv, needle, capsys):
    rc, _, err = run_cli(["run", str(tiny_suite), *argv], capsys)
    assert rc == 2 and needle in err


@pytest.mark.parametrize("jobs", ["0", "-1", "two"])
def test_bad_jobs(tiny_suite, jobs, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", str(tiny_suite), "--jobs", jobs])
    assert info.value.code == 2
    assert "--jobs: expected a positive integer" in capsys.readouterr().err


def test_codebook_larger_than_the_data_is_a_recorded_warning(tiny_suite, tracking_uri, capfd):
    """Not an error: smoke profiles keep the full codebook on tiny data. The run says so (from the
    cell's worker process: captured at the file descriptor)."""
    rc, _, err = run_cli(["run", str(tiny_suite), "-q", "vq", "--seeds", "1", "--set", "matrix.codebook_size=[512]",
                          "--set", "train.steps=2", "--no-progress"], capfd)
    assert rc == 0
    message = "codebook_size 512 is larger than the 256 training tokens"  # n_train = 256 points, 1 token each
    assert message in err
    [cell] = cell_runs(tracking_uri)
    assert cell.data.tags["harness.warning.codebook_vs_data"].startswith(message)


def test_codebook_within_the_data_gives_no_warning(tiny_suite, tracking_uri, capsys):
    rc, _, err = run_cli(["run", str(tiny_suite), "-q", "vq", "--seeds", "1", "--set", "matrix.codebook_size=[256]",
                          "--set", "train.steps=2", "--no-progress"], capsys)
    assert rc == 0 and "larger than" not in err
    [cell] = cell_runs(tracking_uri)
    assert "harness.warning.codebook_vs_data" not in cell.data.tags


def _dataset(name: str):
    from harness.host import get_host

    return get_host().datasets.get(name).obj


def test_missing_dataset_root_says_what_to_put_where(tmp_path):
    celebahq = _dataset("celebahq")
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DatasetMissing) as info:
        celebahq(root=missing).build("train")
    assert f"the dataset root {missing} does not exist" in str(info.value)
    with pytest.raises(DatasetMissing, match="pass --data-root or set \\$HARNESS_DATA"):
        celebahq(root=None).build("train")


def test_corrupt_image_names_the_file(tmp_path):
    celebahq = _dataset("celebahq")
    for i in range(8):
        (tmp_path / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(Exception, match=r"cannot decode image .*0\.png") as info:
        dataset = celebahq(root=tmp_path, resolution=16).build("train")
        dataset[0]
    assert not isinstance(info.value, (KeyError, IndexError))


def test_missing_metric_weights_are_unavailable_with_the_path(tmp_path):
    from harness.contracts import MetricContext
    from harness.host import get_host

    host = get_host()
    context = MetricContext((16,), torch.device("cpu"), "images", weights_dir=tmp_path)
    with pytest.raises(MetricUnavailable) as info:
        host.metrics.get("lpips").obj(context)
    assert str(tmp_path) in str(info.value) and "not found" in str(info.value)


@pytest.fixture
def read_only_folder(tmp_path: Path):
    """A folder the harness cannot write: mode 555, or (as root, who ignores modes) a read-only mount."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = False
    if os.geteuid() == 0:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                              capture_output=True, timeout=30)
        if done.returncode != 0:
            pytest.skip("running as root without permission to mount a read-only folder")
        mounted = True
    else:
        folder.chmod(0o555)
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], capture_output=True, timeout=30)
        else:
            folder.chmod(0o755)


def test_read_only_working_folder_is_a_clear_error(read_only_folder: Path, tiny_suite: Path):
    suite = shutil.copy(tiny_suite, read_only_folder.parent / "suite.toml")
    rc, _out, err = _run_in(read_only_folder, suite)
    assert rc == 1
    assert f"cannot write the MLflow store {read_only_folder / 'mlflow.db'}" in err
    assert "is read-only" in err and "--tracking-uri" in err
    assert "Traceback" not in err


def _run_in(folder: Path, suite: Path) -> tuple[int, str, str]:
    """``harness run`` with ``folder`` as its working folder (output captured: it cannot write there)."""
    done = subprocess.run(harness_cmd("run", str(suite), "-q", "vq", "--seeds", "1", "--no-progress"), cwd=folder,
                          env=child_env(), capture_output=True, text=True, timeout=180)
    return done.returncode, done.stdout, done.stderr
