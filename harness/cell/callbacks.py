"""What runs around the training steps, as callbacks handed to :func:`harness.cell.train.run`.

A callback implements any of ``on_train_start(state)``, ``on_step(state)``
(before each step), ``after_step(state, x, x_hat, out)`` (after the optimiser
step; may return values to log), ``on_log(state, logs)`` (at log steps, with
the step's values as tensors), ``on_epoch_end(state)`` and
``on_train_end(state)``. Schedules are callbacks with the first three.
Nothing here forces a device sync between log steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from harness.contracts.state import HOOKS


class Callbacks:
    """Bound hook methods per event, collected once so a step only calls what exists."""

    def __init__(self, callbacks: list[Any]) -> None:
        self.callbacks = callbacks
        self.hooks: dict[str, list[Callable[..., Any]]] = {
            hook: [getattr(c, hook) for c in callbacks if callable(getattr(c, hook, None))] for hook in HOOKS
        }

    def __call__(self, hook: str, *args: Any) -> None:
        for fn in self.hooks[hook]:
            fn(*args)


class UsageWindow:
    """Codes used since the last log step, per stage (``train/utilization``), kept on the device.

    Each step's indices are only kept (a list append); they are folded into the
    per-stage masks every ``fold`` steps and at log steps, so a toy step pays no
    extra op and a large image batch holds at most ``fold`` index tensors.
    """

    def __init__(self, stage_sizes: tuple[int, ...], device: torch.device, fold: int = 16) -> None:
        self.sizes, self.fold = stage_sizes, fold
        self.used = [torch.zeros(k, dtype=torch.bool, device=device) for k in stage_sizes]
        self.pending: list[Tensor] = []

    @classmethod
    def of(cls, state: Any) -> UsageWindow:
        sizes = getattr(state.quantizer, "stage_sizes", (state.quantizer.codebook_size,))
        return cls(tuple(sizes), state.device)

    def after_step(self, state: Any, x: Tensor, x_hat: Tensor, out: Any) -> None:
        self.pending.append(out.indices)
        if len(self.pending) >= self.fold:
            self._fold()

    def update(self, indices: Tensor) -> None:
        self.pending.append(indices)
        self._fold()

    def _fold(self) -> None:
        if not self.pending:
            return
        indices = torch.cat(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending = []
        if indices.dim() == 1:  # one stage: one op
            self.used[0].index_fill_(0, indices, True)  # no host value copied to the device
            return
        idx = indices.reshape(indices.shape[0], -1)
        for stage, used in enumerate(self.used):
            used.index_fill_(0, idx[:, stage], True)

    def on_log(self, state: Any, logs: dict[str, Any]) -> None:
        logs.update(self.flush())

    def flush(self) -> dict[str, Tensor]:
        self._fold()
        fractions = [u.float().mean() for u in self.used]
        for u in self.used:
            u.zero_()
        logs: dict[str, Tensor] = {"train/utilization": torch.stack(fractions).mean()}
        if len(fractions) > 1:
            logs.update({f"train/utilization/stage{i}": f for i, f in enumerate(fractions)})
        return logs


class Throughput:
    """``train/images_per_second`` since the last log step (all ranks together)."""

    def __init__(self, world: int = 1) -> None:
        self.world, self.images, self.clock = world, 0, time.perf_counter()

    def on_train_start(self, state: Any) -> None:
        self.clock = time.perf_counter()

    def after_step(self, state: Any, x: Tensor, x_hat: Tensor, out: Any) -> None:
        self.images += x.shape[0] * self.world

    def on_log(self, state: Any, logs: dict[str, Any]) -> None:
        now = time.perf_counter()
        logs["train/images_per_second"] = self.images / max(now - self.clock, 1e-9)
        self.images, self.clock = 0, now


class LogTo:
    """Hands each log step's values to ``log(values, step)`` (the tracker, a test's list)."""

    def __init__(self, log: Callable[[dict[str, Any], int], None]) -> None:
        self.log = log

    def on_log(self, state: Any, logs: dict[str, Any]) -> None:
        self.log(logs, state.step)


class Progress:
    """A progress bar (tqdm or alike): one tick per step, images/s at log steps."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def after_step(self, state: Any, x: Tensor, x_hat: Tensor, out: Any) -> None:
        self.bar.update(1)

    def on_log(self, state: Any, logs: dict[str, Any]) -> None:
        if hasattr(self.bar, "set_postfix") and "train/images_per_second" in logs:
            self.bar.set_postfix(img_s=f"{logs['train/images_per_second']:.0f}", refresh=False)


class Snapshots:
    """Calls ``take(state)`` before the steps in ``train.snapshot_steps`` and after the last step."""

    def __init__(self, steps: list[int], take: Callable[[Any], None]) -> None:
        self.steps, self.take = set(steps), take

    def on_step(self, state: Any) -> None:
        if state.step in self.steps:
            self.take(state)

    def on_train_end(self, state: Any) -> None:
        self.take(state)


class FlushThenCheckpoint:
    """The periodic checkpointer, with every metric logged so far written to the store first.

    A process killed right after a checkpoint then loses no logged point on
    ``--resume`` (which copies the old run's curves up to the checkpoint's step).
    """

    def __init__(self, checkpointer: Any, flush: Callable[[], None]) -> None:
        self.checkpointer, self.flush = checkpointer, flush

    def on_step(self, state: Any) -> None:
        every = self.checkpointer.every
        if every and state.step > 0 and state.step % every == 0 and state.step != self.checkpointer.saved_step:
            self.flush()
            self.checkpointer.on_step(state)


@torch.no_grad()
def latent_snapshot(state: Any, val_set: Any, max_points: int = 2000) -> dict[str, Any]:
    """Encoded val points, their labels and the codebook at this step (toy suites' latent plot)."""
    from harness.cell.forward import split_batch
    from harness.ops import nearest_code

    n = min(len(val_set), max_points)
    items = [val_set[i] for i in range(n)]
    if isinstance(items[0], (tuple, list)):
        x = torch.stack([it[0] for it in items])
        labels = torch.as_tensor([int(it[1]) for it in items])
    else:
        x, labels = torch.stack(items), None
    x, _ = split_batch(x, state.device)
    was = state.model.training
    state.model.eval()
    z = state.model.encode(x).float()
    state.model.train(was)
    codes = state.quantizer.codebook() if hasattr(state.quantizer, "codebook") else None
    used = None
    if codes is not None:
        codes = codes.detach().float().clone()  # on CPU .cpu() would alias the live parameter
        used = torch.zeros(codes.shape[0], dtype=torch.bool)
        used[nearest_code(z, codes).cpu()] = True
        codes = codes.cpu()
    return {"step": state.step, "z": z.cpu(), "labels": labels, "codes": codes, "used": used}
