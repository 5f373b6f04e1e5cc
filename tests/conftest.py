"""Shared fixtures: every test works in its own folder with its own MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # xdist workers share the machine's cores: one intra-op pool each, not one per core each
    import torch

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working folder (where ``mlflow.db`` lands by default)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("HARNESS_DISABLE_PLUGINS", raising=False)
    return tmp_path


@pytest.fixture
def tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


@pytest.fixture
def suite_file(workdir: Path):
    """Write a suite file from text and return its path."""

    def write(text: str, name: str = "suite.toml") -> Path:
        path = workdir / name
        path.write_text(text)
        return path

    return write


def _tiny_from_sandbox() -> str:
    """The shipped sandbox suite (harness.testing.sandbox), named "tiny", 2 seeds, plus the toy metric."""
    from harness.testing.sandbox import TINY_SUITE as SANDBOX_SUITE

    text = SANDBOX_SUITE
    for old, new in (('name = "sandbox"', 'name = "tiny"'), ("seeds = 1", "seeds = 2"),
                     ('"dead_codes"]', '"dead_codes", "separated"]')):
        assert old in text, f"the sandbox suite changed: {old!r} is gone"
        text = text.replace(old, new, 1)
    return text


TINY_SUITE = _tiny_from_sandbox()


@pytest.fixture
def tiny_suite(suite_file) -> Path:
    return suite_file(TINY_SUITE, "tiny.toml")
