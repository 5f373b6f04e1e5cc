"""A tiny suite run into a temporary MLflow store: the ``harness_sandbox`` fixture's object.

Tests that need recorded runs (a plugin's cells, an executor, a leaderboard)
write no store of their own: ``sandbox.run()`` runs :data:`TINY_SUITE` (or any
suite text or file, with ``-q`` methods, ``--set`` overrides and run options)
through the real suite lifecycle into ``<folder>/mlflow.db``, and
``sandbox.cells()`` reads the cell runs back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: two 2D clusters, a linear VQ-VAE, vanilla and drifting VQ: 2 cells of 30 steps in seconds
TINY_SUITE = """\
[suite]
name = "sandbox"
version = 1
description = "A tiny suite for tests (harness.testing.sandbox)"
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
threads = 1

[eval]
metrics = ["mse", "utilization", "perplexity", "dead_codes"]

[methods.vq]
quantizer = "vq"

[methods.drifting]
quantizer = "drifting"

[matrix]
codebook_size = [4]
dim = [2]
seeds = 1

[profiles.smoke]
train.steps = 10

[[claims]]
id = "drifting-uses-codes"
text = "drifting VQ uses some of its codes"
where = { method = "drifting" }
metric = "utilization"
aggregate = "min"
op = ">"
value = 0.0
"""


class Sandbox:
    """A folder with its own store (``uri``) and the tiny suite; nothing outside it is written."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.uri = f"sqlite:///{(self.folder / 'mlflow.db').resolve()}"

    def suite_file(self, text: str = TINY_SUITE, name: str = "sandbox.toml") -> Path:
        """Write a suite file into the sandbox (the tiny suite by default)."""
        path = self.folder / name
        path.write_text(text, encoding="utf-8")
        return path

    def run(self, suite: str | Path | None = None, *, profile: str = "full", methods: list[str] | None = None,
            overrides: tuple[str, ...] | list[str] = (), seeds: int | None = None, **options: Any) -> Any:
        """Run a suite (default: the tiny one) into the sandbox's store; the ``SuiteResult``.

        ``options`` are :class:`harness.run.options.RunOptions` fields (``executor``,
        ``executor_options``, ``jobs``, ``device``, ...); progress bars are off.
        """
        from harness.host import prefer_owner
        from harness.run.lifecycle import run_suite
        from harness.run.options import RunOptions
        from harness.suite import load_suite

        path = str(suite) if suite is not None else str(self.suite_file())
        loaded = load_suite(path, profile, overrides=tuple(overrides), seeds=seeds)
        prefer_owner(loaded.path)  # a plugin package's own suite: its bare names mean its entries
        return run_suite(loaded, methods, RunOptions(**{"tracking_uri": self.uri, "progress": False, **options}))

    def cells(self, experiment: str = "sandbox") -> list[Any]:
        """The experiment's cell runs (MLflow ``Run`` objects), oldest first."""
        from harness.tracking import Tracker

        return Tracker(self.uri, write=False).runs(experiment, "tags.`harness.kind` = 'cell'",
                                                   order_by=["attributes.start_time ASC"])
