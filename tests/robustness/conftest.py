"""Helpers for the robustness tests: real ``harness`` processes on a real SQLite store.

Creating and migrating a new MLflow SQLite database takes seconds; each test
copies one migrated database made once per session instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_SUITE

WAIT_S = 180.0  # bound for every wait on a child process: a hang fails the test, never blocks CI


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a ``harness`` child: one thread (2-core CI), no user store."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "HARNESS_CHECKPOINT_DIR", "HARNESS_STORE_VERIFIED")}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
                "GIT_PYTHON_REFRESH": "quiet", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.commands.cli", *args]


def start(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    """A real ``harness`` process; stdout and stderr go to files next to the store."""
    n = len(list(cwd.glob("proc-*.out")))
    with open(cwd / f"proc-{n}.out", "w") as out, open(cwd / f"proc-{n}.err", "w") as err:
        proc = subprocess.Popen(harness_cmd(*args), cwd=cwd, env=child_env(**env), stdout=out, stderr=err)
    proc.out_path, proc.err_path = cwd / f"proc-{n}.out", cwd / f"proc-{n}.err"  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, timeout: float = WAIT_S) -> tuple[int, str, str]:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        raise AssertionError(f"harness did not finish within {timeout} s: {proc.args}") from None
    return rc, proc.out_path.read_text(), proc.err_path.read_text()  # type: ignore[attr-defined]


def run(args: list[str], cwd: Path, timeout: float = WAIT_S, **env: str) -> tuple[int, str, str]:
    return finish(start(args, cwd, **env), timeout)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT_S,
             proc: subprocess.Popen | None = None) -> Any:
    """Poll ``condition`` until it returns something truthy; fail (not hang) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"harness exited ({proc.returncode}) before {what}: "
                                 + proc.err_path.read_text()[-3000:])  # type: ignore[attr-defined]
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def cell_runs(uri: str, experiment: str = "tiny") -> list[Any]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'cell'")


def suite_runs(uri: str, experiment: str = "tiny") -> list[Any]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'suite'") if exp else []


def running_cell_with_metric(uri: str) -> Any:
    """The RUNNING cell run once it has logged a ``train/*`` metric, else ``None``."""
    for run in cell_runs(uri):
        if run.info.status == "RUNNING" and any(k.startswith("train/") for k in run.data.metrics):
            return run
    return None


def interrupt(proc: subprocess.Popen, sig: signal.Signals) -> None:
    os.kill(proc.pid, sig)


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite database, made once."""
    from harness.tracking import Tracker

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    Tracker(f"sqlite:///{path}").check()
    return path


@pytest.fixture
def store(workdir: Path, migrated_db: Path) -> str:
    """``mlflow.db`` in the test's working folder (a copy of the migrated template)."""
    shutil.copy(migrated_db, workdir / "mlflow.db")
    return f"sqlite:///{workdir / 'mlflow.db'}"


@pytest.fixture
def tiny(suite_file) -> Callable[..., Path]:
    """The shared tiny suite with some ``[train]`` lines replaced."""

    def write(name: str = "tiny.toml", **train: Any) -> Path:
        text = TINY_SUITE
        for key, value in train.items():
            line = f"{key} = {value}"
            if f"\n{key} = " in text.split("[eval]")[0]:
                old = next(ln for ln in text.splitlines() if ln.startswith(f"{key} = "))
                text = text.replace(old, line, 1)
            else:
                text = text.replace("[train]\n", f"[train]\n{line}\n", 1)
        return suite_file(text, name)

    return write
