"""A real cell's training loop (:func:`harness.cell.train.run`) on a tiny model, for the schedule and loss kits.

Batches are a function of the step, so a run interrupted at a checkpoint and
resumed sees exactly the batches an uninterrupted run sees; the kits compare the
two (the promise of ``harness run --resume``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from harness.errors import MetricUnavailable
from harness.testing.kit import lookup


@dataclass
class TinyTraining:
    """What the loop trains: a registered model and quantizer at toy sizes, on random inputs."""

    model: str = "linear2d"
    model_params: dict[str, Any] = field(default_factory=dict)
    quantizer: str = "vq"
    quantizer_params: dict[str, Any] = field(default_factory=dict)
    #: one item: ``(2,)`` points, ``(3, 16, 16)`` images (then a conv model, e.g. ``conv-small``)
    input_shape: tuple[int, ...] = (2,)
    latent_dim: int = 2
    codebook_size: int = 8
    batch: int = 32
    steps: int = 12
    steps_per_epoch: int = 4
    lr: float = 1e-2
    seed: int = 0


class StopAt:
    """A callback that ends training after ``step`` steps (the interruption of the resume check)."""

    def __init__(self, step: int | None) -> None:
        self.step = step

    def after_step(self, state: Any, x: Tensor, x_hat: Tensor, out: Any) -> None:
        if self.step is not None and state.step + 1 >= self.step:
            state.stop = True


def build_state(t: TinyTraining) -> Any:
    from harness.contracts.state import TrainState
    from harness.suite import DEFAULT_TRAIN

    torch.manual_seed(t.seed)
    model = lookup("models", t.model)(latent_dim=t.latent_dim, **t.model_params)
    quantizer = lookup("quantizers", t.quantizer)(dim=t.latent_dim, codebook_size=t.codebook_size,
                                                  **t.quantizer_params)
    optimizer = torch.optim.Adam([*model.parameters(), *quantizer.parameters()], lr=t.lr)
    train = {**DEFAULT_TRAIN, "steps": t.steps, "batch_size": t.batch, "lr": t.lr, "precision": "fp32",
             "log_every": t.steps_per_epoch, "channels_last": False}
    config = {"train": train, "model": {"name": t.model, "params": dict(t.model_params)},
              "quantizer": {"name": t.quantizer, "dim": t.latent_dim, "codebook_size": t.codebook_size,
                            "params": dict(t.quantizer_params)}}
    return TrainState(model, quantizer, optimizer, config, torch.device("cpu"), t.steps, t.steps_per_epoch)


def batches(t: TinyTraining, start: int) -> Iterator[Tensor]:
    """Input tensors, as :func:`harness.cell.train.run` takes them; step ``i``'s batch depends on ``i`` only."""
    for step in itertools.count(start):
        x = torch.randn(t.batch, *t.input_shape, generator=torch.Generator().manual_seed(1000 * t.seed + step))
        yield x.clamp(-1, 1) if len(t.input_shape) == 3 else x


def prepare(t: TinyTraining, schedules: list[Any], losses: list[Any]) -> tuple[Any, Any]:
    """A fresh state with the losses set up, as a cell has it before its first step (or a restore)."""
    from harness.cell.losses import LossSet

    state = build_state(t)
    loss_set = LossSet(losses)
    try:
        loss_set.setup(state)
    except MetricUnavailable as exc:  # a loss whose weights are not on this machine (LPIPS)
        import pytest

        pytest.skip(f"cannot run here: {exc}")
    return state, loss_set


def train(t: TinyTraining, state: Any, loss_set: Any, schedules: list[Any], stop_at: int | None = None) -> Any:
    """Run the harness's own loop from ``state.step`` (to ``stop_at`` steps, or the end)."""
    from harness.cell.train import run

    state.stop = False
    return run(state, batches(t, state.step), loss_set, [*schedules, StopAt(stop_at)])


def snapshot(state: Any, schedules: list[Any]) -> dict[str, Any]:
    """What must match between two runs: weights, optimiser, step, loss weights, schedule state."""
    from harness.recovery.checkpoint import capture

    payload = capture(state, schedules, "kit")
    payload.pop("rng", None)
    payload.pop("config_hash", None)
    return payload


def same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """The paths where two snapshots differ (for the failure message)."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b), key=str)
        return [d for k in keys for d in differences(a.get(k), b.get(k), f"{path}/{k}")]
    return [] if same(a, b) else [path or "/"]


def resume_differences(t: TinyTraining, make: Any) -> list[str]:
    """Train straight through, and again interrupted at half and resumed from a checkpoint.

    ``make()`` returns fresh ``(schedules, losses)``; returns where the two final states differ.
    """
    from harness.recovery.checkpoint import capture, restore

    schedules, losses = make()
    state, loss_set = prepare(t, schedules, losses)
    straight = snapshot(train(t, state, loss_set, schedules), schedules)

    schedules, losses = make()
    state, loss_set = prepare(t, schedules, losses)
    train(t, state, loss_set, schedules, stop_at=t.steps // 2)
    payload = capture(state, schedules, "kit")
    schedules, losses = make()
    state, loss_set = prepare(t, schedules, losses)
    restore(state, schedules, payload)
    resumed = snapshot(train(t, state, loss_set, schedules), schedules)
    return differences(straight, resumed)
