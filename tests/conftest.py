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


TINY_SUITE = """
[suite]
name = "tiny"
version = 1
primary_metric = "utilization"

[dataset]
name = "two-clusters"
params = { n_train = 256, n_val = 128 }

[model]
name = "linear2d"

[train]
steps = 30
batch_size = 64
lr = 1e-2
log_every = 10

[eval]
metrics = ["mse", "utilization", "perplexity", "dead_codes", "separated"]

[methods.vq]
quantizer = "vq"

[methods.drifting]
quantizer = "drifting"

[matrix]
codebook_size = [4]
dim = [2]
seeds = 2

[profiles.smoke]
train.steps = 10

[[claims]]
id = "drifting-uses-codes"
text = "drifting uses some codes"
where = { method = "drifting" }
metric = "utilization"
aggregate = "min"
op = ">"
value = 0.0
"""


@pytest.fixture
def tiny_suite(suite_file) -> Path:
    return suite_file(TINY_SUITE, "tiny.toml")
