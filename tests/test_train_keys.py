"""Every ``[train]`` and ``[eval]`` key the suite schema accepts takes effect (issue 12).

For each key, changing its value must change what a cell produces (its
training curves, final weights, eval numbers or artifacts), or the key is
listed in :data:`RECORDED_ONLY` with the reason it cannot. A new key that is
in neither list fails :func:`test_every_key_is_covered`, so a setting that is
recorded but read by nothing cannot slip in.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import torch

from harness.cell.build import complete_config
from harness.cell.runner import CellRunner
from harness.host import get_host
from harness.run.options import RunOptions
from harness.suite import SCHEMA, load_suite

SUITE = """
[suite]
name = "keys"
version = 1

[dataset]
name = "two-clusters"
params = { n_train = 64, n_val = 32 }

[model]
name = "linear2d"

[train]
epochs = 2
batch_size = 16
lr = 1e-2
log_every = 2
threads = 1

[eval]
metrics = ["mse", "utilization"]

[methods.vq]
quantizer = "vq"

[matrix]
codebook_size = [4]
dim = [2]
seeds = 1
"""

#: key -> (its new value, other --set assignments the change needs to show)
VARIATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "train.steps": ("6", ()),  # replaces epochs (as a smoke profile does)
    "train.epochs": ("1", ()),
    "train.batch_size": ("8", ()),
    "train.lr": ("0.05", ()),
    "train.optimizer": ('"sgd"', ()),
    "train.betas": ("[0.5, 0.9]", ()),
    "train.momentum": ("0.9", ('train.optimizer="sgd"',)),
    "train.weight_decay": ("0.5", ()),
    "train.grad_clip": ("0.001", ()),
    "train.loss": ('["l1"]', ()),
    "train.precision": ('"bf16"', ()),
    "train.log_every": ("4", ()),
    "train.snapshot_steps": ("[0, 4]", ('eval.plots=["latent"]',)),
    "train.lr_decay": ("0.5", ()),
    "train.num_workers": ("1", ()),
    "eval.metrics": ('["mse", "perplexity"]', ()),
    "eval.plots": ('["latent"]', ()),
    "eval.max_items": ("8", ()),
}

#: keys that cannot change a CPU toy cell's results, and why
RECORDED_ONLY: dict[str, str] = {
    "train.threads": "intra-op CPU threads: speed only, identical numbers by design",
    "train.channels_last": "memory layout of conv nets on CUDA only; CPU cells ignore it",
    "train.checkpoint_every": "where an interrupted cell resumes from; the trajectory is identical "
                              "(tests/robustness/test_checkpoint.py checks the round trip)",
    "eval.batch_size": "batching of the eval pass; the metrics are batch-size invariant by design",
}

#: the deprecated string form of train.loss: each key must change the losses the cell builds
#: (whose parameters take effect: tests/images/test_losses.py, test_adversarial.py)
LEGACY: dict[str, tuple[str, tuple[str, ...]]] = {
    "train.lpips_weight": ("0.5", ('train.loss="mse+lpips"',)),
    "train.lpips_net": ('"alex"', ('train.loss="mse+lpips"',)),
    "train.discriminator": ("true", ()),
    "train.disc_lr": ("0.5", ("train.discriminator=true",)),
    "train.disc_weight": ("0.5", ("train.discriminator=true",)),
    "train.disc_layers": ("2", ("train.discriminator=true",)),
}

#: keys other parts of the harness own and test (read outside the cell's training and evaluation)
ELSEWHERE: dict[str, str] = {
    "train.timeout": "the executor's wall-clock limit on a cell (harness.run.executors, its tests)",
}


def schema_keys() -> set[str]:
    return {f"{table}.{key}" for table in ("train", "eval") for key in SCHEMA[table]}


def test_every_key_is_covered():
    covered = {*VARIATIONS, *RECORDED_ONLY, *LEGACY, *ELSEWHERE}
    missing = sorted(schema_keys() - covered)
    assert not missing, (f"suite keys accepted by the schema with no test that they take effect: {missing}; "
                         "add a variation to VARIATIONS or the reason to RECORDED_ONLY")
    assert not (covered - schema_keys() - set(ELSEWHERE)), "listed keys the schema no longer has"


class MemoryTracker:
    """Keeps what a cell records, in memory: metrics by key, tags, artifact names (figures: subplots)."""

    uri = "sqlite:///unused.db"

    def __init__(self) -> None:
        self.metrics: dict[str, list[tuple[int, float]]] = {}
        self.artifacts: dict[str, Any] = {}
        self.tags: dict[str, str] = {}

    def start_run(self, *args: Any, **kwargs: Any) -> str:
        return "run"

    def log_metrics(self, run_id: str, values: dict[str, Any], step: int = 0) -> None:
        for key, value in values.items():
            if key != "train/images_per_second":  # a speed, not a result
                self.metrics.setdefault(key, []).append((step, round(float(value), 6)))

    def log_figure(self, run_id: str, figure: Any, name: str) -> None:
        import matplotlib.pyplot as plt

        self.artifacts[name] = len(figure.axes)
        plt.close(figure)

    def log_bytes(self, run_id: str, data: bytes, name: str) -> None:
        self.artifacts[name] = hashlib.sha256(data).hexdigest()[:8] if name != "checkpoint/final.pt" else "w"

    def log_json(self, run_id: str, data: Any, name: str) -> None:
        self.artifacts[name] = "json"

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def __getattr__(self, name: str) -> Any:  # log_params, log_text, flush, end_run: nothing to keep
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def outcome(tmp_path, sets: tuple[str, ...]) -> dict[str, Any]:
    """What the cell produces with ``sets`` applied: curves, eval numbers, artifacts, final weights."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "keys.toml"
    path.write_text(SUITE)
    suite = load_suite(str(path), overrides=list(sets))
    [cell] = suite.cells()
    tracker = MemoryTracker()
    runner = CellRunner(get_host(), suite, tracker, RunOptions(device="cpu", progress=False))
    weights: dict[str, torch.Tensor] = {}
    original = runner.tracker.log_bytes

    def keep_weights(run_id: str, data: bytes, name: str) -> None:
        if name == "checkpoint/final.pt":
            import io

            weights.update(torch.load(io.BytesIO(data), weights_only=True)["model"])
        original(run_id, data, name)

    tracker.log_bytes = keep_weights  # type: ignore[method-assign]
    result = runner.run(cell)
    assert result.status == "FINISHED", result.error
    return {"metrics": tracker.metrics, "artifacts": tracker.artifacts,
            "weights": {k: v.tolist() for k, v in weights.items()}}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return outcome(tmp_path_factory.mktemp("base"), ())


@pytest.mark.parametrize("key", sorted(VARIATIONS))
def test_changing_the_key_changes_the_cell(key, baseline, tmp_path):
    value, context = VARIATIONS[key]
    before = baseline if not context else outcome(tmp_path / "ctx", context)
    after = outcome(tmp_path, (*context, f"{key}={value}"))
    assert after != before, f"{key}={value} changed nothing the cell records: the key is read by nothing"


@pytest.mark.parametrize("key", sorted(LEGACY))
def test_legacy_key_changes_the_losses_built(key, tmp_path):
    value, context = LEGACY[key]
    path = tmp_path / "keys.toml"
    path.write_text(SUITE)

    def losses(sets: tuple[str, ...]) -> list[dict[str, Any]]:
        [cell] = load_suite(str(path), overrides=list(sets)).cells()
        return complete_config(get_host(), cell)["train"]["loss"]

    assert losses((*context, f"{key}={value}")) != losses(context)
