"""Drifting VQ-VAE (Liu 2026): an attraction-repulsion potential between tokens and codes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import nearest_code


def pair_potential(r: Tensor, tau: float) -> Tensor:
    """``U(r) = tau (r + tau) exp(-r / tau)``; its force is ``-dU/dr = r exp(-r / tau)``."""
    return tau * (r + tau) * torch.exp(-r / tau)


def drifting_energy(tokens: Tensor, codes: Tensor, tau: float, eps: float = 1e-12) -> Tensor:
    """Total potential ``U_pp + U_pn + U_nn`` of charges ``+1/N`` (tokens) and ``-1/K`` (codes).

    Every unordered pair of distinct particles counts once; like charges repel,
    opposite charges attract, and the total charge is zero.
    """
    n, k = tokens.shape[0], codes.shape[0]
    points = torch.cat([tokens, codes], dim=0)
    charge = torch.cat([tokens.new_full((n,), 1.0 / n), codes.new_full((k,), -1.0 / k)])
    # squared distances from the Gram matrix: (N+K)^2 floats, never an (N+K)^2 x D difference tensor
    sq = points.pow(2).sum(1)
    r = torch.sqrt((sq[:, None] + sq[None, :] - 2.0 * points @ points.t()).clamp_min(0.0) + eps)
    pair = charge[:, None] * charge[None, :] * pair_potential(r, tau)
    # self-pairs sit at r = sqrt(eps): drop them by subtracting the diagonal
    return 0.5 * (pair.sum() - pair.diagonal().sum())


class DriftingVQ(Quantizer):
    """Drifting VQ-VAE: nearest code with straight-through, trained by ``rec + beta U``.

    Liu 2026, "Drifting VQ-VAE" (docs/references.md). Tokens carry charge ``+1/N``,
    codes ``-1/K``; ``U = sum over pairs q_i q_j tau (r + tau) exp(-r / tau)``
    over token-token, token-code and code-code pairs. The loss is ``beta U``
    alone: the blog keeps no codebook or commitment term, so codes move only
    through the potential.

    Choices the blog leaves open (docs/methods.md, ``drifting``):

    * ``tau = 1.0``: the blog's earlier drifting post settles on 1; the toy
      suites' hidden states have unit scale, so forces peak at the cluster scale.
    * ``beta = 1.0``: the potential and the reconstruction loss are both O(1) with
      these charges; equal weight is the neutral choice.
    * ``z_q``: the nearest code with straight-through, the natural reading.
    * the pair cost is O((N + K)^2): at most ``max_tokens`` (default 2048) randomly
      chosen tokens enter the potential each step, so image-sized batches stay cheap.
    * codes start uniform in ``(-1/K, 1/K)`` like ``vq``, so the two differ only in the loss.
    """

    name = "drifting"
    paper = "Liu 2026, Drifting VQ-VAE"
    #: the potential couples every pair of codes: ``harness bench`` skips codebooks past this size
    max_bench_codes = 8192

    def __init__(self, dim: int, codebook_size: int, tau: float = 1.0, beta: float = 1.0,
                 max_tokens: int = 2048) -> None:
        super().__init__(dim, codebook_size)
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.tau, self.beta, self.max_tokens = tau, beta, max_tokens
        k = codebook_size
        self.embedding = nn.Parameter(torch.empty(k, dim).uniform_(-1.0 / k, 1.0 / k))

    def codebook(self) -> Tensor:
        return self.embedding

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        indices = nearest_code(z.detach(), self.embedding.detach())
        e = F.embedding(indices, self.embedding)
        z_q = z + (e - z).detach()
        if not self.training:
            return QuantizeOutput(z_q, indices, z.new_zeros(()), {})
        tokens = z
        if z.shape[0] > self.max_tokens:
            tokens = z[torch.randperm(z.shape[0], device=z.device)[: self.max_tokens]]
        energy = drifting_energy(tokens, self.embedding, self.tau)
        return QuantizeOutput(z_q, indices, self.beta * energy, {"potential": energy.detach()})
