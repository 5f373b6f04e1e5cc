"""Index Backpropagation Quantization (IBQ): a straight-through one-hot over all codes, so every code learns."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from harness.contracts import QuantizeOutput, Quantizer

#: bytes of one float32 (tokens x K) logit block; a training chunk holds about eight such blocks
BLOCK_BYTES = 64 * 2**20
#: the authors' epsilon inside the log of the average code probability
AVG_PROB_EPS = 1e-5


def rows_per_block(codebook_size: int, block_bytes: int = BLOCK_BYTES) -> int:
    """Tokens per chunk so that one ``(chunk, K)`` float32 block stays under ``block_bytes``."""
    return max(1, block_bytes // (4 * max(codebook_size, 1)))


@torch.no_grad()
def argmax_logits(z: Tensor, codes: Tensor, block_bytes: int = BLOCK_BYTES) -> Tensor:
    """``argmax_k <z_n, c_k>`` for every token, one bounded ``(chunk, K)`` block at a time."""
    chunk = rows_per_block(codes.shape[0], block_bytes)
    codes_t = codes.t()
    return torch.cat([(z[s : s + chunk] @ codes_t).argmax(1) for s in range(0, z.shape[0], chunk)])


def _chunk_terms(z: Tensor, codes: Tensor, temperature: float, entropy: bool
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One chunk: hard indices, the zero-valued soft path, and the entropy sums (zeros when off).

    The soft path is ``(soft - sg(soft)) sg(C)``: it adds nothing to the forward value,
    and its gradient is the authors' ``(hard - sg(soft) + soft) C`` minus the hard part,
    which ``F.embedding`` supplies (so ``z_q`` equals ``C[indices]`` exactly).
    """
    logits = z @ codes.t()
    indices = logits.detach().argmax(1)
    soft = logits.softmax(1)
    soft_path = (soft - soft.detach()) @ codes.detach()
    if not entropy:
        zero = logits.new_zeros(())
        return indices, soft_path, zero, zero
    log_p = F.log_softmax(logits / temperature, 1)
    p = log_p.exp()
    return indices, soft_path, p.sum(0), -(p * log_p).sum()


def index_backprop(z: Tensor, codes: Tensor, temperature: float, entropy: bool,
                   block_bytes: int = BLOCK_BYTES) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Indices, soft path ``(N, D)``, summed code probabilities ``(K,)`` and summed token entropies.

    Token chunks keep each ``(chunk, K)`` block bounded; with more than one chunk,
    each is recomputed in the backward pass (checkpointing), so memory does not grow with N x K.
    """
    n = z.shape[0]
    chunk = rows_per_block(codes.shape[0], block_bytes)
    if n <= chunk:
        return _chunk_terms(z, codes, temperature, entropy)
    parts = [checkpoint(_chunk_terms, z[s : s + chunk], codes, temperature, entropy, use_reentrant=False)
             for s in range(0, n, chunk)]
    indices = torch.cat([p[0] for p in parts])
    soft_path = torch.cat([p[1] for p in parts])
    return indices, soft_path, sum(p[2] for p in parts), sum(p[3] for p in parts)


def entropy_loss(prob_sum: Tensor, token_entropy_sum: Tensor, n: int, sample_weight: float,
                 batch_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """MAGVIT-v2's term as IBQ computes it: ``sample_weight H_sample - batch_weight H(avg)``."""
    sample_entropy = token_entropy_sum / n
    avg = prob_sum / n
    avg_entropy = -(avg * torch.log(avg + AVG_PROB_EPS)).sum()
    return sample_weight * sample_entropy - batch_weight * avg_entropy, sample_entropy, avg_entropy


class IBQ(Quantizer):
    """IBQ: hard one-hot of ``argmax z C^T`` with a softmax straight-through, so every code gets a gradient.

    Paper: Shi et al. 2024, "Taming Scalable Visual Tokenizer for Autoregressive Image
    Generation" (arXiv 2412.02692). Public code: TencentARC/SEED-Voken,
    ``src/IBQ/modules/vqvae/quantize.py`` (``IndexPropagationQuantize``) and
    ``configs/IBQ/gpu/imagenet_ibqgan_*.yaml``.

    ``logits = z C^T``, ``soft = softmax(logits)``, ``hard = one_hot(argmax logits)``;
    ``z_q = (hard - sg(soft) + soft) C`` (forward value ``C[k*]``). Loss, as the authors'
    code sums it: ``mse(z_q, z) + mse(sg(C[k*]), z) + beta mse(C[k*], sg(z))`` plus
    ``entropy_weight (sample_weight H_sample - batch_weight H(avg))`` over
    ``softmax(logits / entropy_temperature)`` (their ``compute_entropy_loss``).

    Defaults, all from the authors' configs (every codebook size, 1,024 to 262,144):
    ``beta = 0.25``, ``entropy_weight = 0.05`` (their loss config's
    ``entropy_loss_weight``; its comment calls 0.1 the default, the configs set 0.05;
    0 turns the term off), ``entropy_temperature = 0.01``, ``sample_weight =
    batch_weight = 1.0``; codebook initialised ``N(0, 1)`` (``nn.Embedding``'s default,
    which they keep). Choices and deviations:

    * memory: the ``(N, K)`` softmax is never held whole. Tokens go in chunks of at
      most ``BLOCK_BYTES`` per ``(chunk, K)`` block, each recomputed in the backward
      pass; the authors hold the full matrix (their 2^18-code runs use batch 4 per GPU);
    * ``z_q`` is ``C[k*] + (soft - sg(soft)) sg(C)``, exactly ``C[k*]`` in value (theirs
      is ``C[k*]`` up to float rounding) with the same gradients;
    * the entropy term is computed in training only (as ``lfq`` does); the authors also
      compute it in validation. The quantization loss is reported in eval too;
    * the entropy statistics are per process (no all-reduce), as in the authors' code;
    * their unused options (``remap``, ``cosine_similarity``) are left out.
    """

    name = "ibq"
    paper = "Shi et al. 2024, IBQ (arXiv 2412.02692); TencentARC/SEED-Voken"

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, entropy_weight: float = 0.05,
                 entropy_temperature: float = 0.01, sample_weight: float = 1.0,
                 batch_weight: float = 1.0) -> None:
        super().__init__(dim, codebook_size)
        if entropy_temperature <= 0:
            raise ValueError(f"ibq: entropy_temperature must be positive, got {entropy_temperature}")
        if entropy_weight < 0:
            raise ValueError(f"ibq: entropy_weight must be >= 0 (0 = off), got {entropy_weight}")
        self.beta = float(beta)
        self.entropy_weight = float(entropy_weight)
        self.entropy_temperature = float(entropy_temperature)
        self.sample_weight, self.batch_weight = float(sample_weight), float(batch_weight)
        self.embedding = nn.Parameter(torch.randn(codebook_size, dim))

    def codebook(self) -> Tensor:
        return self.embedding

    def quantize(self, z: Tensor) -> QuantizeOutput:
        codes = self.embedding
        use_entropy = self.training and self.entropy_weight > 0
        if self.training or torch.is_grad_enabled():
            indices, soft_path, prob_sum, token_entropy = index_backprop(
                z, codes, self.entropy_temperature, use_entropy)
        else:
            indices, soft_path = argmax_logits(z, codes.detach()), None
        e = F.embedding(indices, codes)
        z_q = e if soft_path is None else e + soft_path
        commitment = F.mse_loss(e.detach(), z)
        codebook_loss = F.mse_loss(e, z.detach())
        quant_loss = F.mse_loss(z_q, z) + commitment + self.beta * codebook_loss
        logs: dict[str, Tensor | float] = {"quant_loss": quant_loss.detach(),
                                           "commitment_loss": commitment.detach()}
        loss = quant_loss
        if use_entropy:
            penalty, sample_entropy, avg_entropy = entropy_loss(
                prob_sum, token_entropy, z.shape[0], self.sample_weight, self.batch_weight)
            loss = loss + self.entropy_weight * penalty
            logs.update(sample_entropy=sample_entropy.detach(), codebook_entropy=avg_entropy.detach())
        return QuantizeOutput(z_q=z_q, indices=indices, loss=loss, logs=logs)
