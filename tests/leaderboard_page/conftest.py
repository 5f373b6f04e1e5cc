"""One real, tiny suite run shared by the page tests: two methods at two codebook sizes, a
method whose cells crash, a reference row, an asserted and a reported claim."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

SUITE = """
[suite]
name = "lbpage"
version = 1
description = "Two 2D clusters, a few steps: the page tests' suite"
primary_metric = "utilization"

[dataset]
name = "two-clusters"
params = { n_train = 256, n_val = 128 }

[model]
name = "linear2d"

[train]
steps = 24
batch_size = 64
lr = 1e-2
log_every = 4
snapshot_steps = [0]

[eval]
metrics = ["mse", "utilization", "perplexity", "dead_codes", "separated"]
plots = ["latent"]

[methods.vq]
quantizer = "vq"

[methods.drifting]
quantizer = "drifting"

# a negative tau passes the signature check but the quantizer raises when built
[methods.broken]
quantizer = "drifting"
params = { tau = -1.0 }

[matrix]
method = ["vq", "drifting", "broken"]
codebook_size = [2, 4]
dim = [2]
seeds = 2

[[claims]]
id = "drifting-uses-codes"
text = "drifting uses some codes"
where = { method = "drifting" }
metric = "utilization"
aggregate = "min"
op = ">"
value = 0.0

[[claims]]
id = "vq-separation-rate"
text = "How often vanilla VQ separates the clusters"
where = { method = "vq" }
metric = "separated"
aggregate = "fraction"
op = ">="
value = 1
kind = "report"

[[reference]]
method = "paper-x"
codebook_size = 4
dim = 2
source = "Liu 2026, figure 2"
metrics = { utilization = 1.0 }
"""

MEASURED = {("vq", 2), ("vq", 4), ("drifting", 2), ("drifting", 4)}


@dataclass
class Recorded:
    uri: str
    suite_path: Path
    folder: Path


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """Run the suite once into a fresh SQLite store (about 10 s on 2 cores)."""
    from harness.run.lifecycle import RunOptions, run_suite
    from harness.suite import load_suite

    os.environ.setdefault("MPLBACKEND", "Agg")
    folder = tmp_path_factory.mktemp("lbpage")
    path = folder / "lbpage.toml"
    path.write_text(SUITE)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    result = run_suite(load_suite(path, "full"), None, RunOptions(device="cpu", tracking_uri=uri, progress=False))
    assert len(result.failed) == 4 and {c.cell.method for c in result.failed} == {"broken"}
    return Recorded(uri, path, folder)


@pytest.fixture(scope="session")
def page(recorded: Recorded):
    """The leaderboard page built from that run, with claims and plots."""
    from harness.leaderboard.page import build_page
    from harness.suite import load_suite
    from harness.tracking import Tracker

    suite = load_suite(recorded.suite_path, "full")
    return build_page(suite.name, tracker=Tracker(recorded.uri), references=suite.references,
                      primary=suite.primary_metric, description=suite.data["suite"]["description"])
