"""The training loop every cell runs; callbacks (schedules among them) act on :class:`TrainState`.

:func:`run` receives its batches, the cell's losses and a list of callbacks
(:mod:`harness.cell.callbacks`), and reads the device only at log steps:
the loss of every step is kept on the device and its finiteness checked at the
next log step, so a divergence still names the step it happened at. The
first step checks the quantizer's output against its contract
(:mod:`harness.cell.contract`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from harness.cell.callbacks import (
    Callbacks,
    LogTo,
    Progress,
    Snapshots,
    Throughput,
    UsageWindow,
)
from harness.cell.contract import check_quantizer_output
from harness.cell.forward import cell_inputs, reconstruct, world_size
from harness.cell.losses import LossSet
from harness.cell.optim import LrDecay
from harness.contracts.state import TrainState
from harness.errors import Diverged


class Divergence:
    """Each step's loss, kept on the device until :meth:`check` looks at them together."""

    def __init__(self) -> None:
        self.first, self.window = 0, []

    def add(self, step: int, loss: Tensor) -> None:
        """Keep ``loss``; ``first`` is the step of the oldest kept loss (the loop sets it inline)."""
        if not self.window:
            self.first = step
        self.window.append(loss.detach())

    def check(self) -> None:
        """Raise :class:`Diverged` naming the first step whose loss was not finite."""
        if not self.window:
            return
        losses = torch.stack(self.window)
        self.window.clear()  # in place: the loop appends to this list through a bound method
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0, 0])
            raise Diverged(self.first + i, float(losses[i]))


def run(state: TrainState, batches: Any, losses: LossSet, callbacks: list[Any]) -> TrainState:
    """Run ``state.steps_total - state.step`` optimisation steps (``losses`` already set up).

    ``batches`` yields input tensors on the cell's device (:func:`cell_inputs`).
    """
    hooks, guard = Callbacks(callbacks), Divergence()
    cfg = state.config["train"]
    log_every, precision = max(1, cfg.get("log_every", 10)), cfg.get("precision", "auto")
    forward = state.wrapped if state.wrapped is not None else partial(reconstruct, state.model, state.quantizer)
    step_fn = partial(optimise, state, forward, losses, precision, grad_clipper(state, cfg.get("grad_clip")))
    if state.step == 0:
        hooks("on_train_start", state)
    state.model.train()
    state.quantizer.train()
    # resolved once: a step calls the bound hooks directly (no per-step lookup or empty dispatch)
    on_step, after_step, keep = hooks.hooks["on_step"], hooks.hooks["after_step"], guard.window.append
    check, guard.first = True, state.step
    while state.step < state.steps_total and not state.stop:
        for fn in on_step:
            fn(state)
        x = next(batches)
        x_hat, out, loss, terms = step_fn(x, check)
        check = False
        extra = {}
        for fn in after_step:
            values = fn(state, x, x_hat, out)
            if values:
                extra.update(values)
        if losses.steppers:
            extra.update(losses.step(state, x, x_hat))
        keep(loss.detach())  # Divergence.add without the call; checked at the log step
        state.step += 1
        if state.step % log_every == 0 or state.step == state.steps_total:
            guard.check()
            hooks("on_log", state, step_logs(state, loss, terms, extra, out))
            guard.first = state.step
        if state.step % state.steps_per_epoch == 0:
            end_epoch(state, hooks)
    guard.check()
    hooks("on_train_end", state)
    return state


def optimise(state: TrainState, forward: Any, losses: LossSet, precision: str, clip: Any, x: Tensor,
             check: bool) -> tuple[Tensor, Any, Tensor, dict[str, Tensor]]:
    """One step: forward, (first step: contract check), weighted loss, backward, optimiser step."""
    x_hat, out, z = forward(x, precision)
    if check:
        check_quantizer_output(state.quantizer, z.numel() // z.shape[1], z.shape[1], out, state.step)
    loss, terms = losses(state, x, x_hat, out)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        clip()
    state.optimizer.step()
    return x_hat, out, loss, terms


def grad_clipper(state: TrainState, max_norm: float | None) -> Any:
    """``train.grad_clip``: clip the optimiser's parameters to that global norm (no device sync)."""
    if not max_norm:
        return None
    params = [p for group in state.optimizer.param_groups for p in group["params"]]
    return partial(torch.nn.utils.clip_grad_norm_, params, max_norm)


def step_logs(state: TrainState, loss: Tensor, terms: dict[str, Tensor], extra: dict[str, Tensor],
              out: Any) -> dict[str, Tensor | float]:
    """The values of a log step, still tensors (the log callback reads them in one transfer)."""
    logs: dict[str, Tensor | float] = {"train/loss": loss.detach()}
    logs.update({f"train/{k}": v.detach() for k, v in terms.items()})
    logs.update({f"train/{k}": v.detach() if isinstance(v, Tensor) else v for k, v in extra.items()})
    logs.update({f"train/{k}": v for k, v in out.logs.items()})
    logs["train/lr"] = float(state.optimizer.param_groups[0]["lr"])
    return logs


def end_epoch(state: TrainState, hooks: Callbacks) -> None:
    if hasattr(state.quantizer, "on_epoch_end"):
        state.quantizer.on_epoch_end(state.epoch)
    hooks("on_epoch_end", state)
    state.epoch += 1


def standard_callbacks(state: TrainState, schedules: list[Any], log: Any, *, on_snapshot: Any = None,
                       progress: Any = None) -> list[Any]:
    """Schedules, ``train.lr_decay``, usage window, throughput, snapshots, progress, then logging."""
    cfg = state.config["train"]
    callbacks = [*schedules]
    if float(cfg.get("lr_decay", 1.0)) != 1.0:
        callbacks.append(LrDecay(float(cfg["lr_decay"])))
    callbacks += [UsageWindow.of(state), Throughput(world_size())]
    if on_snapshot is not None:
        callbacks.append(Snapshots(cfg.get("snapshot_steps", []), on_snapshot))
    if progress is not None:
        callbacks.append(Progress(progress))
    return [*callbacks, LogTo(log)]


def train(state: TrainState, train_set: Dataset, schedules: list[Any], *, log: Any,
          on_snapshot: Any = None, progress: Any = None, losses: LossSet | None = None) -> TrainState:
    """Train on ``train_set`` with the standard callbacks (the cell pipeline builds its own).

    ``losses`` defaults to the plugins ``train.loss`` names, set up here.
    """
    if losses is None:
        from harness.cell.losses import build_losses, loss_specs
        from harness.host import get_host

        losses = build_losses(get_host(), loss_specs(state.config["train"]))
        losses.setup(state)
    callbacks = standard_callbacks(state, schedules, log, on_snapshot=on_snapshot, progress=progress)
    return run(state, cell_inputs(state, train_set), losses, callbacks)


def total_steps(config: dict[str, Any], train_size: int) -> tuple[int, int]:
    """``(steps_total, steps_per_epoch)`` from ``train.steps`` or ``train.epochs``."""
    cfg = config["train"]
    per_epoch = max(1, math.floor(train_size / cfg["batch_size"])) if train_size >= cfg["batch_size"] else 1
    steps = cfg["steps"] if "steps" in cfg else cfg["epochs"] * per_epoch
    return int(steps), per_epoch
