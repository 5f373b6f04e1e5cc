"""The README's commands on a fresh clone, in a fresh venv: install, the main job, its leaderboard
command, the test extra.

The clone is of this repository's committed HEAD; the venv is layered over this
environment (tests/authoring/test_scaffold.py), offline (``PIP_NO_INDEX``,
``--no-build-isolation``). The main job runs with fewer steps and one seed: its
time is measured in docs/performance.md, never asserted here.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

import harness
from tests.authoring.test_scaffold import _layered_venv, _run

REPO = Path(harness.__file__).resolve().parents[1]


def test_readme_commands_on_a_fresh_clone(tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("the harness is not a git checkout here")
    clone, work = tmp_path / "vq-harness", tmp_path / "work"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "HARNESS_DISABLE_PLUGINS") and not k.startswith("PYTEST_")}
    env.update(MPLBACKEND="Agg", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    python = str(_layered_venv(tmp_path / "venv"))

    # README: pip install -e . && harness run toy2d
    _run([python, "-m", "pip", "install", "-q", "--no-build-isolation", "-e", "."], clone, env)
    where = _run([python, "-c", "import harness; print(harness.__file__)"], work, env).stdout.strip()
    assert Path(where).is_relative_to(clone), where  # the clone's harness, not this checkout's
    run = subprocess.run([python, "-m", "harness.commands.cli", "run", "toy2d", "--set", "train.steps=60", "--seeds", "1",
                          "--no-progress"], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode in (0, 1), run.stderr[-3000:]  # 1: a claim of the paper needs the full 3,000 steps
    last = run.stdout.strip().splitlines()[-3:]
    assert last[0].startswith(f"results: 4 cell runs in sqlite:///{work / 'mlflow.db'}, experiment 'toy2d'")
    assert run.stdout.count("| FINISHED |") == 4 and "claims (Liu 2026):" in run.stdout

    # ... and the leaderboard command it printed, as printed
    command = shlex.split(last[-1].split(":", 1)[1])
    assert command == ["harness", "leaderboard", "toy2d"]
    board = _run([python, "-m", "harness.commands.cli", *command[1:]], work, env).stdout
    assert "drifting" in board and "vq" in board

    # README: pip install -e ".[test]" && pytest -n auto (here: the tests collect)
    _run([python, "-m", "pip", "install", "-q", "--no-build-isolation", "-e", ".[test]"], clone, env)
    collected = _run([python, "-m", "pytest", "--collect-only", "-q", "tests/test_suite.py"], clone, env).stdout
    assert "tests/test_suite.py::" in collected
