"""Several processes under ``torchrun``: DistributedDataParallel training, rank 0 records.

``harness run`` behaves the same under ``torchrun --nproc_per_node N``: every
rank trains each cell on its share of the data (a ``DistributedSampler``),
gradients are averaged by DDP, and quantizer statistics (EMA sums, usage
counts) are all-reduced inside the quantizers through ``harness.ops``. Only
rank 0 talks to MLflow, shows progress and evaluates; the other ranks use a
:class:`NullTracker`.

Conventions chosen here:

- ``train.batch_size`` is the global batch (the papers' numbers); each rank
  takes ``batch_size / world_size`` and the division must be exact.
- The model and quantizer are wrapped together in DDP (the loop calls
  encode, quantize and decode through one ``forward``) with
  ``find_unused_parameters=True``, because schedules freeze parts of the
  model mid-run (DDP then warns once that it found no unused parameters
  while nothing is frozen: expected), and without the buffer broadcast
  before each forward, because quantizer buffers are kept equal by the
  quantizers' own all-reduces. Parameters frozen when
  the cell starts and unfrozen later are not synchronised by DDP.
- Rank 0 evaluates alone (the eval split is not sharded); the others wait
  for it at the end of the suite.
- A cell that raises on one rank only (a loss that diverges on one shard) leaves the others waiting in a
  collective until the process-group timeout (``HARNESS_DIST_TIMEOUT_MIN``,
  120 minutes by default, long enough for rank 0's evaluation).
"""

from __future__ import annotations

import datetime
import inspect
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from harness.cell.forward import reconstruct
from harness.contracts.precision import channels_last
from harness.ops import distributed as is_distributed


def init_from_env() -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); True when distributed.

    NCCL on CUDA, gloo on CPU; each rank uses the GPU ``LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        from harness.errors import env_number

        minutes = env_number("HARNESS_DIST_TIMEOUT_MIN", 120.0, minimum=1e-3, what="minutes")
        timeout = datetime.timedelta(minutes=minutes)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return is_distributed()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """This rank's GPU when ``device`` is CUDA and the run is distributed."""
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def finish() -> None:
    """Wait for every rank (rank 0 evaluates last), then leave the process group."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


class Reconstructor(nn.Module):
    """Model and quantizer as one module, so DDP sees encode -> quantize -> decode as its forward."""

    def __init__(self, model: nn.Module, quantizer: nn.Module) -> None:
        super().__init__()
        self.model, self.quantizer = model, quantizer

    def forward(self, x: Tensor, precision: str = "fp32") -> tuple[Tensor, Any, Tensor]:
        return reconstruct(self.model, self.quantizer, x, precision)


def wrap(state: Any) -> None:
    """Give ``state`` its DDP forward (``state.wrapped``) when the run is distributed."""
    if not is_distributed():
        return
    device = state.device
    if channels_last(state.config, device, state.model):  # before DDP lays out its gradient buckets
        state.model.to(memory_format=torch.channels_last)
    net = Reconstructor(state.model, state.quantizer)
    ddp = nn.parallel.DistributedDataParallel
    # no buffer broadcast before each forward (newer torch spells it forward_sync_buffers;
    # its one sync at construction is harmless: every rank builds the same initial state)
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
               else {"broadcast_buffers": False})
    state.wrapped = ddp(net, device_ids=[device.index] if device.type == "cuda" else None,
                        find_unused_parameters=True, **no_sync)


class NullTracker:
    """Stands in for :class:`harness.tracking.Tracker` on ranks other than 0: records nothing."""

    def __init__(self, uri: str | None = None) -> None:
        from harness.tracking import resolve_uri

        self.uri = resolve_uri(uri)

    def start_run(self, *args: Any, **kwargs: Any) -> str:
        return f"rank{rank()}"

    def runs(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None
