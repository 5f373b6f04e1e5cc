"""Learning-rate schedules acting on the optimizer's parameter groups."""

from __future__ import annotations

import math
from typing import Any

from harness.contracts import Schedule


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """The factor on the base learning rate for the step about to run.

    Linear warm-up ``(step + 1) / warmup_steps`` for ``step < warmup_steps``
    (the first step already trains, at ``1 / warmup_steps`` of the base rate,
    never at zero), then half a cosine from 1 down to ``min_lr_ratio``, reached
    at ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine(Schedule):
    """Linear learning-rate warm-up, then cosine decay to ``min_lr_ratio`` x the base rate.

    Cosine annealing: Loshchilov & Hutter 2017 (SGDR, without restarts); linear
    warm-up: Goyal et al. 2017. None of the papers the suites reproduce gives a
    learning-rate schedule for its runs (Beyond Stationarity's public code decays the rate
    x0.995 per epoch instead), so this is offered for users' recipes.

    Defaults: ``warmup_steps = 0`` and ``min_lr_ratio = 0.0`` (plain cosine
    annealing to zero), chosen so that the schedule works unchanged in smoke
    profiles of any length. The base rate of each parameter group is read at
    train start (so it is the suite's ``train.lr``); every step the schedule
    sets ``lr = base * factor``, overriding any other rate change made before it.
    """

    name = "warmup-cosine"
    paper = "Loshchilov & Hutter 2017 (SGDR); Goyal et al. 2017 (warm-up)"

    def __init__(self, warmup_steps: int = 0, min_lr_ratio: float = 0.0) -> None:
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
        self.warmup_steps, self.min_lr_ratio = warmup_steps, float(min_lr_ratio)
        self.base_lrs: list[float] = []

    def on_train_start(self, state: Any) -> None:
        if self.warmup_steps > state.steps_total:
            raise ValueError(f"warmup-cosine: warmup_steps ({self.warmup_steps}) exceeds the run's "
                             f"{state.steps_total} steps")
        self.base_lrs = [float(g.get("initial_lr", g["lr"])) for g in state.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """The base rates: a resumed run must not read the restored, already decayed rate as its base."""
        return {"base_lrs": list(self.base_lrs)}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.base_lrs = [float(v) for v in saved["base_lrs"]]

    def on_step(self, state: Any) -> None:
        if not self.base_lrs:  # resumed without on_train_start
            self.on_train_start(state)
        factor = warmup_cosine_factor(state.step, self.warmup_steps, state.steps_total, self.min_lr_ratio)
        for group, base in zip(state.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        state.extras["lr_factor"] = factor
