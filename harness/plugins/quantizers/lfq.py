"""Lookup-free quantization (MAGVIT-v2): the sign of each of log2(K) channels is one bit of the index."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from harness.contracts import QuantizeOutput, Quantizer

#: probabilities held at once when averaging code probabilities over tokens
ENTROPY_BLOCK = 2**22
LOG_EPS = 1e-12


def corners(bits: int, indices: Tensor) -> Tensor:
    """The ``{-1, +1}^bits`` codes of ``indices``; bit ``i`` (MSB first) is channel ``i``."""
    shifts = torch.arange(bits - 1, -1, -1, device=indices.device)
    return ((indices[..., None] >> shifts) & 1).float() * 2 - 1


def bits_to_indices(z: Tensor) -> Tensor:
    """``sum_i [z_i > 0] 2^(d-1-i)``: channel 0 is the most significant bit."""
    d = z.shape[-1]
    weights = 2 ** torch.arange(d - 1, -1, -1, device=z.device)
    return ((z > 0).long() * weights).sum(-1)


def _code_probability_sum(z: Tensor, codes: Tensor, temperature: float) -> Tensor:
    return F.softmax(2 * z @ codes.t() / temperature, dim=1).sum(0)


def entropy_terms(z: Tensor, temperature: float, block: int = ENTROPY_BLOCK) -> tuple[Tensor, Tensor]:
    """MAGVIT-v2's ``(mean_n H(p_n), H(mean_n p_n))`` for ``p_n = softmax_k(2 <z_n, c_k> / temperature)``.

    The logits separate over channels, so ``p_n`` is a product of independent bits
    with ``P(bit i = +1) = sigmoid(4 z_i / temperature)`` and the per-token entropy
    is exactly the sum of binary entropies (no ``(N, K)`` matrix). The code usage
    ``mean_n p_n`` needs every code: it is summed over token blocks of at most
    ``block`` probabilities, each recomputed in the backward pass (checkpointing),
    so memory stays bounded for large ``K``.
    """
    n, d = z.shape
    x = 4 * z / temperature
    p = torch.sigmoid(x)
    sample_entropy = (p * F.softplus(-x) + (1 - p) * F.softplus(x)).sum(1).mean()
    k = 2**d
    codes = corners(d, torch.arange(k, device=z.device))
    chunk = max(1, block // k)
    if n <= chunk:
        total = _code_probability_sum(z, codes, temperature)
    else:
        total = sum(
            checkpoint(_code_probability_sum, z[s : s + chunk], codes, temperature,
                       use_reentrant=False)
            for s in range(0, n, chunk)
        )
    avg = total / n
    codebook_entropy = -(avg * torch.log(avg + LOG_EPS)).sum()
    return sample_entropy, codebook_entropy


class LFQ(Quantizer):
    """LFQ: sign of log2(K) channels, straight-through; entropy loss spreads code usage.

    Paper: Yu et al. 2023, "Language Model Beats Diffusion: Tokenizer is Key to
    Visual Generation" (MAGVIT-v2); losses as in Open-MAGVIT2 (docs/methods.md, ``lfq``).
    ``z_q = sign(z)`` in ``{-1, +1}^d`` with ``K = 2^d`` codes, straight-through.
    Loss: ``entropy_weight * (mean_n H(p_n) - H(mean_n p_n)) + commitment_weight *
    mse(z, sg(z_q))`` with ``p_n = softmax_k(2 <z_n, c_k> / temperature)`` over the
    ``2^d`` corners ``c_k`` (see :func:`entropy_terms`).

    Defaults: ``entropy_weight = 0.1`` (MAGVIT-v2 configs), ``commitment_weight =
    0.25`` (Open-MAGVIT2), ``temperature = 0.01`` (MAGVIT-v2's logits). Choices:

    * bit order: index ``= sum_i [z_i > 0] 2^(d-1-i)``, channel 0 the most
      significant bit (Open-MAGVIT2's and vector-quantize-pytorch's order); a
      channel exactly at 0 counts as -1 (bit 0), as in Open-MAGVIT2;
    * ``codebook_size`` must be a power of two; when ``dim != log2(K)``, a
      ``Linear(dim, log2 K)`` maps tokens to bits and a ``Linear(log2 K, dim)``
      maps codes back (as vector-quantize-pytorch does); the losses live in bit space;
    * the entropy terms are computed in training only (as Open-MAGVIT2 does),
      exactly over all ``2^d`` codes; eval reports the commitment term alone.
    """

    name = "lfq"
    paper = "Yu et al. 2023, MAGVIT-v2 (Language Model Beats Diffusion); Open-MAGVIT2"

    def __init__(self, dim: int, codebook_size: int, entropy_weight: float = 0.1,
                 commitment_weight: float = 0.25, temperature: float = 0.01) -> None:
        super().__init__(dim, codebook_size)
        if codebook_size < 2 or codebook_size & (codebook_size - 1):
            raise ValueError(f"lfq: codebook_size must be a power of two >= 2 (K = 2^bits), "
                             f"got {codebook_size}")
        if temperature <= 0:
            raise ValueError(f"lfq: temperature must be positive, got {temperature}")
        self.bits = int(math.log2(codebook_size))
        self.entropy_weight = float(entropy_weight)
        self.commitment_weight = float(commitment_weight)
        self.temperature = float(temperature)
        self.project_in: nn.Module = nn.Linear(dim, self.bits) if dim != self.bits else nn.Identity()
        self.project_out: nn.Module = nn.Linear(self.bits, dim) if dim != self.bits else nn.Identity()

    def decode(self, indices: Tensor) -> Tensor:
        """Latent vectors ``(..., D)`` of the given indices."""
        return self.project_out(corners(self.bits, indices))

    def codebook(self) -> Tensor:
        """Every corner mapped to latent space, ``(K, D)``."""
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        return self.decode(torch.arange(self.codebook_size, device=device))

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        x = self.project_in(z)
        signs = torch.where(x > 0, 1.0, -1.0)
        indices = bits_to_indices(x.detach())
        x_q = x + (signs - x).detach()
        commitment = F.mse_loss(x, signs)
        loss = self.commitment_weight * commitment
        logs: dict[str, Tensor | float] = {"commitment_loss": commitment.detach()}
        if self.training:
            sample_entropy, codebook_entropy = entropy_terms(x, self.temperature)
            loss = loss + self.entropy_weight * (sample_entropy - codebook_entropy)
            logs["sample_entropy"] = sample_entropy.detach()
            logs["codebook_entropy"] = codebook_entropy.detach()
        return QuantizeOutput(z_q=self.project_out(x_q), indices=indices, loss=loss, logs=logs)
