"""The slurm and ray executors' options and their refusals, before anything is submitted or recorded."""

from __future__ import annotations

import shutil

import pytest

from harness.commands.cli import main
from tests.engines.conftest import unavailable


@pytest.fixture
def submitit_and_sbatch() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        unavailable("submitit is not installed: pip install 'vq-harness[slurm]'")
    if shutil.which("sbatch") is None:
        unavailable("sbatch is not on PATH: apt-get install slurm-wlm")


@pytest.fixture
def ray_installed() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        unavailable("Ray is not installed: pip install 'vq-harness[ray]'")


@pytest.mark.parametrize("executor", ["slurm", "ray"])
def test_remote_executors_refuse_a_sqlite_store(executor, workdir, capsys, submitit_and_sbatch, ray_installed):
    assert main(["run", "toy2d", "--profile", "smoke", "--executor", executor]) == 2
    err = capsys.readouterr().err
    assert "harness server" in err and "allow_sqlite=true" in err
    assert not (workdir / "mlflow.db").exists()  # refused before anything was recorded


@pytest.mark.parametrize("argv, needle", [
    (["--executor", "ray", "--executor-option", "num_cpu=2"], "did you mean 'num_cpus'"),
    (["--executor", "slurm", "--executor-option", "partion=gpu"], "did you mean 'partition'"),
    (["--executor", "slurm", "--executor-option", "sbatch=qos=high"], "sbatch lines look like"),
    (["--executor", "slurm", "--executor-option", "time=0"], "time >= 1"),
    (["--executor", "slurm", "--executor-option", "gpus_per_cell=two"], "gpus_per_cell must be int"),
    (["--executor", "ray", "--executor-option", "num_gpus=-1"], "must be >= 0"),
])
def test_bad_options_exit_2_with_the_reason(argv, needle, workdir, capsys, submitit_and_sbatch, ray_installed):
    argv = ["run", "toy2d", "--profile", "smoke", "--tracking-uri", "http://127.0.0.1:9", *argv]
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_slurm_options_become_one_cells_sbatch_request(submitit_and_sbatch, tmp_path, monkeypatch):
    from harness.host import get_host
    from harness.run.executors import build_executor

    monkeypatch.delenv("HARNESS_CHECKPOINT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    executor = build_executor(get_host(), "slurm", {
        "partition": "gpu", "time": "90", "gpus_per_cell": "4", "cpus_per_cell": "16", "mem_gb": "64",
        "sbatch": ["--qos=high", "#SBATCH --exclusive"], "setup": "module load cuda"})
    params = executor.parameters("celebahq256", "http://127.0.0.1:5000")
    assert params["time"] == 90 and params["partition"] == "gpu" and params["mem"] == 64.0
    assert params["gpus_per_node"] == 4 and params["ntasks_per_node"] == 4  # one DDP rank per GPU
    assert params["cpus_per_task"] == 4 and params["nodes"] == 1
    assert params["additional_parameters"] == {"qos": "high", "exclusive": True}
    assert params["setup"][0] == "module load cuda"  # a string from the command line is one line
    assert f"export HARNESS_CHECKPOINT_DIR={tmp_path / '.harness' / 'checkpoints'}" in params["setup"]
    assert params["job_name"] == "harness-celebahq256"
