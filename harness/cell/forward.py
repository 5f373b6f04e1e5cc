"""The forward pass (encode -> quantize in float32 -> decode) and where training batches come from.

Both :mod:`harness.cell.train` and :mod:`harness.cell.distributed` import this module; it
imports neither, so the two no longer import each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from harness.contracts.kinds import QuantizeOutput
from harness.contracts.precision import autocast_for, channels_last
from harness.errors import UsageError
from harness.ops import distributed as is_distributed


def split_batch(batch: Any, device: torch.device) -> tuple[Tensor, Tensor | None]:
    """A dataset item is ``x`` or ``(x, label)``."""
    if isinstance(batch, (list, tuple)):
        x, labels = batch[0], batch[1] if len(batch) > 1 else None
    else:
        x, labels = batch, None
    x = x.to(device, non_blocking=True)
    # non_blocking for the labels too: a blocking copy to CUDA waits for the stream every step
    return x, labels.to(device, non_blocking=True) if isinstance(labels, Tensor) else None


def to_tokens(z: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Flatten ``(B, D, H, W)`` feature maps into ``(B*H*W, D)`` tokens, and the inverse."""
    if z.dim() == 2:
        return z, lambda t: t
    b, d, h, w = z.shape
    tokens = z.permute(0, 2, 3, 1).reshape(-1, d)
    return tokens, lambda t: t.reshape(b, h, w, d).permute(0, 3, 1, 2)


def reconstruct(model: nn.Module, quantizer: nn.Module, x: Tensor, precision: str = "fp32"
                ) -> tuple[Tensor, QuantizeOutput, Tensor]:
    """Encode, quantize in float32 (autocast off), decode. Returns ``x_hat``, the output, ``z``."""
    plain = precision == "fp32" or (precision == "auto" and x.device.type != "cuda")
    if plain and not torch.is_autocast_enabled(x.device.type):  # no autocast anywhere: no contexts
        z = model.encode(x)
        tokens, unflatten = to_tokens(z)
        out = quantizer(tokens.float())
        return model.decode(unflatten(out.z_q)).float(), out, z
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


# -- batches -----------------------------------------------------------------------------

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


def make_loader(dataset: Dataset, batch_size: int, seed: int, shuffle: bool, num_workers: int = 0,
                drop_last: bool = False, pin_memory: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=shuffle,
                      generator=generator, num_workers=num_workers, drop_last=drop_last,
                      persistent_workers=num_workers > 0, pin_memory=pin_memory)


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def per_rank_batch(batch_size: int) -> int:
    n = world_size()
    if batch_size % n:
        raise UsageError(f"train.batch_size {batch_size} is the global batch and must divide by the "
                         f"{n} processes torchrun started")
    return batch_size // n


def distributed_batches(dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0,
                        pin_memory: bool = False) -> Iterator[Any]:
    """Endless batches of this rank's share of ``dataset``, reshuffled each epoch."""
    from torch.utils.data.distributed import DistributedSampler

    local = per_rank_batch(batch_size)
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=len(dataset) >= batch_size)
    loader = DataLoader(dataset, batch_size=min(local, max(1, len(sampler))), sampler=sampler,
                        num_workers=num_workers, pin_memory=pin_memory, drop_last=len(sampler) >= local,
                        persistent_workers=num_workers > 0)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def training_batches(dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0,
                     pin_memory: bool = False) -> Iterator[Any]:
    """Endless training batches: this rank's share under torchrun, else the whole split shuffled."""
    if world_size() > 1:  # each rank its share, global batch_size (harness.cell.distributed)
        return distributed_batches(dataset, batch_size, seed, num_workers, pin_memory)
    drop_last = len(dataset) >= batch_size
    if isinstance(dataset, TensorDataset) and num_workers == 0:
        return tensor_batches(dataset, batch_size, seed, drop_last)
    return infinite(make_loader(dataset, batch_size, seed, shuffle=True, num_workers=num_workers,
                                drop_last=drop_last, pin_memory=pin_memory))


def cell_batches(state: Any, train_set: Dataset) -> Iterator[tuple[Tensor, Tensor | None]]:
    """``(x, labels)`` on the cell's device, in the model's memory format.

    A resumed run (``state.step > 0``) draws a fresh, deterministic data order
    instead of replaying the first batches (docs/robustness.md).
    """
    cfg = state.config["train"]
    seed = state.config["seed"] + 1_000_003 * state.step
    source = training_batches(train_set, cfg["batch_size"], seed, cfg.get("num_workers", 0),
                              pin_memory=state.device.type == "cuda")
    fmt = torch.channels_last if channels_last(state.config, state.device, state.model) else None
    if fmt is not None:
        state.model.to(memory_format=fmt)
    for batch in source:
        x, labels = split_batch(batch, state.device)
        if fmt is not None and x.dim() == 4:
            x = x.contiguous(memory_format=fmt)
        yield x, labels


def cell_inputs(state: Any, train_set: Dataset) -> Iterator[Tensor]:
    """The training loop's inputs: :func:`cell_batches` without the labels it never reads.

    An in-memory ``TensorDataset`` is indexed for its first tensor only, one
    indexing op per step, as a hand-written loop would do.
    """
    cfg = state.config["train"]
    plain = (isinstance(train_set, TensorDataset) and cfg.get("num_workers", 0) == 0 and world_size() == 1
             and not channels_last(state.config, state.device, state.model))
    if not plain:
        yield from (x for x, _ in cell_batches(state, train_set))
        return
    x_all = train_set.tensors[0].to(state.device)  # same order as tensor_batches, first tensor only
    generator = torch.Generator().manual_seed(state.config["seed"] + 1_000_003 * state.step)
    n = len(x_all)
    batch = min(cfg["batch_size"], n)
    stop = n - batch + 1 if n >= cfg["batch_size"] else n
    while True:
        order = torch.randperm(n, generator=generator).to(state.device, non_blocking=True)
        for start in range(0, stop, batch):
            yield x_all[order[start : start + batch]]
