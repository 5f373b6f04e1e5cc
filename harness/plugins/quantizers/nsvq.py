"""NSVQ (arXiv 2606.11363), reconstructed from its abstract: dense NS-VQ loss plus reservoir code replacement."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.contracts import QuantizeOutput
from harness.ops import all_reduce_sum_, broadcast_, code_counts
from harness.plugins.quantizers.ns_vq import NonStationaryVQ


class Reservoir(nn.Module):
    """A FIFO ring of the most recent encoder outputs (``size`` rows), for re-seeding codes.

    When a batch has more rows than the ring, a random subset of ``size`` rows
    enters. Position and fill level are tensors, so adding never syncs the device.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"reservoir size must be positive, got {size}")
        self.size = int(size)
        self.register_buffer("data", torch.zeros(size, dim))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def add(self, z: Tensor) -> None:
        z = z.detach().float()
        if z.shape[0] > self.size:
            z = z[torch.randperm(z.shape[0], device=z.device)[: self.size]]
        take = z.shape[0]
        slots = (self.ptr + torch.arange(take, device=z.device)) % self.size
        self.data[slots] = z
        self.ptr.copy_((self.ptr + take) % self.size)
        self.filled.copy_(torch.clamp(self.filled + take, max=self.size))

    @torch.no_grad()
    def sample(self, num: int) -> Tensor:
        """``num`` stored rows drawn uniformly (with replacement) on rank 0, copied to every rank."""
        if int(self.filled) == 0:
            raise RuntimeError("the reservoir is empty: no encoder outputs have been seen in training yet")
        idx = (torch.rand(num, device=self.data.device) * self.filled).long()
        return broadcast_(self.data[idx].clone())


class NSVQ(NonStationaryVQ):
    """NSVQ: NS-VQ's dense kernel loss with reservoir replacement of unused codes (a reconstruction).

    NSVQ 2026 ("NSVQ: Mitigating Codebook Collapse by Stabilizing Encoder
    Drift"). ONLY ITS ABSTRACT IS PUBLIC: this plugin is a reconstruction from
    the abstract and its nearest public precursors, not the authors' method.
    The abstract names three parts: a dense non-stationary embedding loss,
    codebook replacement, and stage-wise encoder freezing followed by
    adversarial refinement. The stages are schedules (written elsewhere); this
    quantizer is the first two parts.

    Taken from public precursors:

    * the loss is NS-VQ's (Beyond Stationarity, ``ns-vq``): every code ``k`` is pulled
      to every token ``n`` with weight ``clip(lam K softmax(-d_nk / tau_t))``,
      the winner with weight 1, plus the modified straight-through; the same
      defaults (``beta = 0.25``, ``alpha = 1``, ``lam = 0.01``, ``tau_t = 0.5^epoch``);
    * replacement is the NS-VQ repository's ImageNet rule: a FIFO reservoir of
      the 16,384 most recent encoder outputs; codes chosen fewer than
      ``dead_threshold = 1`` times over a window are re-seeded with reservoir
      rows, and the window's counts restart.

    Choices (not public): the window is one epoch (replacement in
    :meth:`on_epoch_end`, as in that repository) unless ``replace_every`` gives
    a window in training steps (replacement then runs at the start of the next
    step, before the codebook enters its graph); eval steps neither count nor
    fill the reservoir; usage counts are summed over DDP ranks and
    replacement rows come from rank 0's reservoir, so ranks agree.
    ``replace_enabled`` is a plain attribute a stage schedule may switch off
    (e.g. after the encoder freezes); so is ``lam`` (0 turns the dense loss off).
    """

    name = "nsvq"
    paper = "NSVQ 2026 (reconstruction from the abstract)"

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, alpha: float = 1.0,
                 lam: float = 0.01, kernel_decay: str = "code", modified_ste: bool = True,
                 reservoir_size: int = 16384, replace_every: int = 0, dead_threshold: float = 1.0,
                 replace_enabled: bool = True) -> None:
        super().__init__(dim, codebook_size, beta=beta, alpha=alpha, lam=lam, kernel_decay=kernel_decay,
                         modified_ste=modified_ste)
        if replace_every < 0:
            raise ValueError(f"replace_every is a window in steps (0 = each epoch), got {replace_every}")
        self.replace_every, self.dead_threshold = int(replace_every), float(dead_threshold)
        self.replace_enabled = replace_enabled
        self.reservoir = Reservoir(reservoir_size, dim)
        self.register_buffer("window_counts", torch.zeros(codebook_size))
        self.register_buffer("window_steps", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def replace_dead_codes(self) -> Tensor:
        """Re-seed codes used fewer than ``dead_threshold`` times in the window; restart the window."""
        dead = self.window_counts < self.dead_threshold
        num = int(dead.sum())
        if num and self.replace_enabled and int(self.reservoir.filled) > 0:
            self.embedding[dead] = self.reservoir.sample(num).to(self.embedding.dtype)
        else:
            dead = torch.zeros_like(dead)
        self.window_counts.zero_()
        self.window_steps.zero_()
        return dead

    @torch.no_grad()
    def record(self, z: Tensor, indices: Tensor) -> None:
        self.reservoir.add(z)
        self.window_counts += all_reduce_sum_(code_counts(indices, self.codebook_size))
        self.window_steps += 1

    def on_epoch_end(self, epoch: int) -> None:
        super().on_epoch_end(epoch)
        if self.replace_every == 0:
            self.replace_dead_codes()

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """NS-VQ's step between reservoir bookkeeping (float32, autocast off: the base ``forward``)."""
        logs: dict[str, Tensor] = {}
        if self.training and self.replace_every and int(self.window_steps) >= self.replace_every:
            # at the start of a step, before the codebook enters this step's graph
            logs["codes_replaced"] = self.replace_dead_codes().sum().float()
        out = super().quantize(z)
        if self.training:
            self.record(z, out.indices)
        out.logs.update(logs)
        return out
