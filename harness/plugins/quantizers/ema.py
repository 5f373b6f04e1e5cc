"""EMA codebook (VQ-VAE appendix, VQ-VAE-2): codes are running means of their assigned tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import all_reduce_sum_, code_counts, nearest_code
from harness.plugins.quantizers.codebook_tools import (
    DeadCodeTracker,
    default_reset_noise,
    kmeans,
    replacement_vectors,
)


@torch.no_grad()
def ema_update(cluster_size: Tensor, embed_sum: Tensor, counts: Tensor, sums: Tensor,
               decay: float, eps: float) -> Tensor:
    """One EMA step in place; returns the new codebook ``m_k / N_k'``.

    ``N_k <- g N_k + (1-g) n_k``, ``m_k <- g m_k + (1-g) sum_k z``, then Laplace
    smoothing ``N_k' = (N_k + eps) / (n + K eps) * n`` with ``n = sum_k N_k``,
    which keeps a code with no assignments from dividing by zero.
    """
    cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
    embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + cluster_size.numel() * eps) * n
    return embed_sum / smoothed[:, None]


class EMAQuantizer(Quantizer):
    """EMA codebook: nearest code, straight-through, codes updated as running means (VQ-VAE-2).

    Papers: van den Oord et al. 2017, appendix A.1; Razavi et al. 2019
    (VQ-VAE-2); background in the VQ-VAE notes (docs/references.md). The codebook is not trained by
    gradients: each training step, with ``n_k`` tokens and their sum assigned
    to code ``k`` (summed over DDP ranks), ``N_k <- g N_k + (1-g) n_k``,
    ``m_k <- g m_k + (1-g) sum``, ``e_k = m_k / N_k'`` with Laplace smoothing
    ``N_k' = (N_k + eps) / (n + K eps) * n``. Loss ``beta * mse(z, sg(e))`` only.

    Defaults: ``decay = 0.99`` and ``beta = 0.25`` (the papers), ``eps = 1e-5``
    (Sonnet). The output uses the codes from before the step's update (Sonnet).

    Debiasing (not fixed by the papers; Sonnet debiases, VQ-VAE-2's and
    taming's code do not): we do not debias. Instead every code starts as if it
    had been seen once at its initial position, ``N_k = 1`` and ``m_k = e_k``:
    zero-initialised statistics without debiasing would divide a near-zero sum
    by ``eps`` for unused codes, and debiasing would pull every never-used code
    to zero. With one pseudo-count an unused code stays where it is and the
    initial bias fades as ``g^t``. Codes start uniform in ``(-1/K, 1/K)`` as in ``vq``.

    Options: ``kmeans_init`` (as in ``vq``; also sets ``N_k = 1, m_k = e_k``) and
    ``dead_code_reset`` (a window in steps, 0 = off; the countdown variant of
    ``vq``: a code unused that long over all ranks gets a batch vector plus
    noise of std ``reset_noise``, default ``0.01 / sqrt(D)``, and ``N_k = 1``).
    """

    name = "ema"
    paper = "Razavi et al. 2019, VQ-VAE-2; van den Oord et al. 2017 appendix"

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, decay: float = 0.99,
                 eps: float = 1e-5, kmeans_init: bool = False, kmeans_iters: int = 10,
                 dead_code_reset: int = 0, reset_noise: float | None = None) -> None:
        super().__init__(dim, codebook_size)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        if dead_code_reset < 0:
            raise ValueError(f"dead_code_reset is a window in steps (0 = off), got {dead_code_reset}")
        self.beta, self.decay, self.eps = beta, decay, eps
        k = codebook_size
        embedding = torch.empty(k, dim).uniform_(-1.0 / k, 1.0 / k)
        self.register_buffer("embedding", embedding)
        self.register_buffer("cluster_size", torch.ones(k))
        self.register_buffer("embed_sum", embedding.clone())
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        if kmeans_init:
            self.register_buffer("initted", torch.zeros((), dtype=torch.bool))
        self.tracker = DeadCodeTracker(k, dead_code_reset) if dead_code_reset else None
        self.reset_noise = default_reset_noise(dim) if reset_noise is None else reset_noise

    def codebook(self) -> Tensor:
        return self.embedding

    @torch.no_grad()
    def set_codes(self, mask: Tensor, codes: Tensor) -> None:
        """Place codes as fresh running means: ``e_k = m_k = code``, ``N_k = 1``."""
        self.embedding[mask] = codes
        self.embed_sum[mask] = codes
        self.cluster_size[mask] = 1.0

    @torch.no_grad()
    def prepare_codebook(self, z: Tensor) -> dict[str, Tensor]:
        logs: dict[str, Tensor] = {}
        everything = torch.ones(self.codebook_size, dtype=torch.bool, device=z.device)
        if self.kmeans_init and not bool(self.initted):
            self.set_codes(everything, kmeans(z, self.codebook_size, self.kmeans_iters))
            self.initted.fill_(True)
        if self.tracker is not None:
            dead = self.tracker.dead()
            num = int(dead.sum())
            if num:
                self.set_codes(dead, replacement_vectors(z, num, self.reset_noise))
                self.tracker.revive(dead)
            logs["codes_reset"] = dead.sum().float()
        return logs

    @torch.no_grad()
    def update(self, z: Tensor, indices: Tensor) -> None:
        """EMA step on statistics summed over ranks (every rank ends with the same codebook)."""
        counts = all_reduce_sum_(code_counts(indices, self.codebook_size))
        sums = all_reduce_sum_(torch.zeros_like(self.embed_sum).index_add_(0, indices, z))
        codes = ema_update(self.cluster_size, self.embed_sum, counts, sums, self.decay, self.eps)
        self.embedding.copy_(codes)
        if self.tracker is not None:
            self.tracker.step(indices)

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        logs = self.prepare_codebook(z.detach()) if self.training else {}
        indices = nearest_code(z.detach(), self.embedding)
        e = F.embedding(indices, self.embedding)
        commitment_loss = F.mse_loss(z, e)
        if self.training:
            self.update(z.detach(), indices)
        z_q = z + (e - z).detach()
        logs["commitment_loss"] = commitment_loss.detach()
        return QuantizeOutput(z_q=z_q, indices=indices, loss=self.beta * commitment_loss, logs=logs)
