"""The training loop every cell runs; schedules act on :class:`TrainState` between steps."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from harness.contracts import QuantizeOutput
from harness.errors import Diverged
from harness.losses import build_loss
from harness.ops import distributed as distributed_run

StepCallback = Callable[["TrainState"], None]


@dataclass
class TrainState:
    """Everything a schedule may read or change during training.

    ``loss_weights`` scales the named loss terms (``rec``, ``quantizer``, ``lpips``,
    ``adv``); ``extras`` is free space for schedules and losses (a discriminator).
    """

    model: nn.Module
    quantizer: nn.Module
    optimizer: torch.optim.Optimizer
    config: dict[str, Any]
    device: torch.device
    steps_total: int
    steps_per_epoch: int
    step: int = 0
    epoch: int = 0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"rec": 1.0, "quantizer": 1.0})
    extras: dict[str, Any] = field(default_factory=dict)
    #: extra loss terms added by schedules: fn(state, batch, x_hat, out) -> {name: tensor}
    loss_terms: dict[str, Callable[..., dict[str, Tensor]]] = field(default_factory=dict)
    #: run after each optimiser step: fn(state, x, x_hat) -> {name: tensor} logged as train/<name>
    #: (the discriminator's own step, harness.adversarial)
    step_hooks: dict[str, Callable[..., dict[str, Tensor]]] = field(default_factory=dict)
    #: model + quantizer under DistributedDataParallel when run by torchrun (harness.distributed)
    wrapped: nn.Module | None = None
    stop: bool = False

    @property
    def encoder(self) -> nn.Module:
        return getattr(self.model, "encoder", self.model)

    @property
    def decoder(self) -> nn.Module:
        return getattr(self.model, "decoder", self.model)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def split_batch(batch: Any, device: torch.device) -> tuple[Tensor, Tensor | None]:
    """A dataset item is ``x`` or ``(x, label)``."""
    if isinstance(batch, (list, tuple)):
        x, labels = batch[0], batch[1] if len(batch) > 1 else None
    else:
        x, labels = batch, None
    x = x.to(device, non_blocking=True)
    return x, labels.to(device) if isinstance(labels, Tensor) else None


def to_tokens(z: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Flatten ``(B, D, H, W)`` feature maps into ``(B*H*W, D)`` tokens, and the inverse."""
    if z.dim() == 2:
        return z, lambda t: t
    b, d, h, w = z.shape
    tokens = z.permute(0, 2, 3, 1).reshape(-1, d)
    return tokens, lambda t: t.reshape(b, h, w, d).permute(0, 3, 1, 2)


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast for the nets on CUDA (``precision`` auto or bf16), none on CPU."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def reconstruct(model: nn.Module, quantizer: nn.Module, x: Tensor, precision: str = "fp32"
                ) -> tuple[Tensor, QuantizeOutput, Tensor]:
    """Encode, quantize in float32 (autocast off), decode. Returns ``x_hat``, the output, ``z``."""
    with autocast_for(x.device, precision):
        z = model.encode(x)
    tokens, unflatten = to_tokens(z)
    # the quantizer runs in float32; leaving autocast costs a context switch, so only when inside it
    fp32 = torch.autocast(x.device.type, enabled=False) if torch.is_autocast_enabled(x.device.type) else nullcontext()
    with fp32:
        out = quantizer(tokens.float())
    with autocast_for(x.device, precision):
        x_hat = model.decode(unflatten(out.z_q))
    return x_hat.float(), out, z


def reconstruction_loss(x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean squared error over all elements (the papers' ``rec`` term)."""
    return torch.mean((x_hat - x) ** 2)


def infinite(loader: DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


def tensor_batches(dataset: TensorDataset, batch_size: int, seed: int, drop_last: bool) -> Iterator[Any]:
    """Endless shuffled batches of an in-memory ``TensorDataset`` by direct indexing.

    Same sampling as a shuffling ``DataLoader`` without its per-item Python
    overhead, which dominates the toy suites' step time.
    """
    generator = torch.Generator().manual_seed(seed)
    n = len(dataset)
    batch_size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=generator)
        stop = n - batch_size + 1 if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield tuple(t[idx] for t in dataset.tensors)


def training_batches(dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0,
                     pin_memory: bool = False) -> Iterator[Any]:
    from harness import distributed  # imports this module

    if distributed.world_size() > 1:  # each rank its share, global batch_size (harness.distributed)
        return distributed.distributed_batches(dataset, batch_size, seed, num_workers, pin_memory)
    drop_last = len(dataset) >= batch_size
    if isinstance(dataset, TensorDataset) and num_workers == 0:
        return tensor_batches(dataset, batch_size, seed, drop_last)
    return infinite(make_loader(dataset, batch_size, seed, shuffle=True, num_workers=num_workers,
                                drop_last=drop_last, pin_memory=pin_memory))


def make_loader(dataset: Dataset, batch_size: int, seed: int, shuffle: bool, num_workers: int = 0,
                drop_last: bool = False, pin_memory: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=shuffle,
                      generator=generator, num_workers=num_workers, drop_last=drop_last,
                      persistent_workers=num_workers > 0, pin_memory=pin_memory)


def channels_last(config: dict[str, Any], device: torch.device, model: nn.Module) -> bool:
    """Channels-last memory format for conv nets on CUDA (``train.channels_last``)."""
    return (device.type == "cuda" and bool(config["train"].get("channels_last", True))
            and any(isinstance(m, nn.Conv2d) for m in model.modules()))


class UsageWindow:
    """Codes used since the last flush, per stage (``train/utilization``)."""

    def __init__(self, stage_sizes: tuple[int, ...], device: torch.device) -> None:
        self.sizes = stage_sizes
        self.used = [torch.zeros(k, dtype=torch.bool, device=device) for k in stage_sizes]

    def update(self, indices: Tensor) -> None:
        idx = indices.reshape(indices.shape[0], -1) if indices.dim() > 1 else indices[:, None]
        for stage, used in enumerate(self.used):
            used[idx[:, stage]] = True

    def flush(self) -> dict[str, Tensor]:
        fractions = [u.float().mean() for u in self.used]
        for u in self.used:
            u.zero_()
        logs: dict[str, Tensor] = {"train/utilization": torch.stack(fractions).mean()}
        if len(fractions) > 1:
            logs.update({f"train/utilization/stage{i}": f for i, f in enumerate(fractions)})
        return logs


def train(
    state: TrainState,
    train_set: Dataset,
    schedules: list[Any],
    *,
    log: Callable[[dict[str, Tensor | float], int], None],
    on_snapshot: StepCallback | None = None,
    progress: Any = None,
) -> TrainState:
    """Run ``state.steps_total - state.step`` optimisation steps.

    A non-finite loss raises :class:`Diverged` naming the step. ``on_snapshot``
    runs before the steps listed in ``train.snapshot_steps`` and after the last.
    """
    cfg = state.config["train"]
    # a resumed run (state.step > 0) draws a fresh, deterministic data order instead of
    # replaying the first batches (docs/robustness.md)
    data_seed = state.config["seed"] + 1_000_003 * state.step
    batches = training_batches(train_set, cfg["batch_size"], data_seed, cfg.get("num_workers", 0),
                               pin_memory=state.device.type == "cuda")
    loss_fn = build_loss(state.config, state.device)  # train.loss: rec (+ lpips), harness.losses
    state.loss_weights.setdefault("lpips", float(cfg.get("lpips_weight", 1.0)))
    memory_format = torch.channels_last if channels_last(state.config, state.device, state.model) else None
    if memory_format is not None:
        state.model.to(memory_format=memory_format)
    forward = state.wrapped if state.wrapped is not None else partial(reconstruct, state.model, state.quantizer)
    world = torch.distributed.get_world_size() if distributed_run() else 1
    images, clock = 0, time.perf_counter()
    usage = UsageWindow(tuple(getattr(state.quantizer, "stage_sizes", (state.quantizer.codebook_size,))),
                        state.device)
    snapshots = set(cfg.get("snapshot_steps", []))
    log_every = max(1, cfg.get("log_every", 10))
    params = [p for group in state.optimizer.param_groups for p in group["params"]]
    precision = cfg.get("precision", "auto")

    if state.step == 0:
        for s in schedules:
            s.on_train_start(state)
    state.model.train()
    state.quantizer.train()
    while state.step < state.steps_total and not state.stop:
        step = state.step
        for s in schedules:
            s.on_step(state)
        if on_snapshot is not None and step in snapshots:
            on_snapshot(state)
        x, labels = split_batch(next(batches), state.device)
        if memory_format is not None and x.dim() == 4:
            x = x.contiguous(memory_format=memory_format)
        x_hat, out, _ = forward(x, precision)
        terms: dict[str, Tensor] = {**loss_fn(x_hat, x), "quantizer": out.loss}
        state.extras["terms"] = terms  # the adversarial weight reads the reconstruction terms
        for fn in state.loss_terms.values():
            terms.update(fn(state, x, x_hat, out))
        loss = weighted_sum(terms, state.loss_weights)
        if not torch.isfinite(loss):
            raise Diverged(step, float(loss.detach()))
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
        state.optimizer.step()
        hooked: dict[str, Tensor] = {}
        for hook in state.step_hooks.values():
            hooked.update(hook(state, x, x_hat))
        usage.update(out.indices.detach())
        images += x.shape[0] * world
        state.step = step + 1
        if state.step % log_every == 0 or state.step == state.steps_total:
            logs: dict[str, Tensor | float] = {"train/loss": loss.detach()}
            logs.update({f"train/{k}": v.detach() for k, v in terms.items()})
            logs.update({f"train/{k}": v.detach() for k, v in hooked.items()})
            logs.update({f"train/{k}": v for k, v in out.logs.items()})
            logs.update(usage.flush())
            now = time.perf_counter()
            logs["train/images_per_second"] = images / max(now - clock, 1e-9)
            images, clock = 0, now
            if progress is not None and hasattr(progress, "set_postfix"):
                progress.set_postfix(img_s=f"{logs['train/images_per_second']:.0f}", refresh=False)
            log(logs, state.step)
        if state.step % state.steps_per_epoch == 0:
            if hasattr(state.quantizer, "on_epoch_end"):
                state.quantizer.on_epoch_end(state.epoch)
            for s in schedules:
                s.on_epoch_end(state)
            state.epoch += 1
        if progress is not None:
            progress.update(1)
    if on_snapshot is not None:
        on_snapshot(state)
    return state


def weighted_sum(terms: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """``sum(w_name * term)``; unit weights add no multiplication to the step."""
    total = None
    for name, value in terms.items():
        weight = weights.get(name, 1.0)
        value = value if weight == 1.0 else weight * value
        total = value if total is None else total + value
    return total


def total_steps(config: dict[str, Any], train_size: int) -> tuple[int, int]:
    """``(steps_total, steps_per_epoch)`` from ``train.steps`` or ``train.epochs``."""
    cfg = config["train"]
    per_epoch = max(1, math.floor(train_size / cfg["batch_size"])) if train_size >= cfg["batch_size"] else 1
    steps = cfg["steps"] if "steps" in cfg else cfg["epochs"] * per_epoch
    return int(steps), per_epoch
