"""OptVQ: tokens are assigned to codes by optimal transport (Sinkhorn) in training, against index collapse."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import all_reduce_sum_, distributed, nearest_code

#: bytes of one float32 (tokens x K) cost block; smaller problems keep the whole matrix
BLOCK_BYTES = 64 * 2**20
#: the authors' epsilon in every Sinkhorn normalisation (``+ 1e-8``)
SINKHORN_EPS = 1e-8
NORMALIZE_MODES = ("all", "dim", "null")


class CostBlocks:
    """The ``(N, K)`` Euclidean distances ``cdist(z, codes)``, one bounded block of tokens at a time.

    When the whole matrix fits in ``block_bytes`` it is computed once and reused by
    every Sinkhorn pass; otherwise each pass recomputes its blocks, so memory stays
    ``O(block + N + K)`` however large ``N x K`` is.
    """

    def __init__(self, z: Tensor, codes: Tensor, block_bytes: int = BLOCK_BYTES) -> None:
        self.z, self.codes = z, codes
        self.chunk = max(1, block_bytes // (4 * codes.shape[0]))
        self._cached = [self._block(0)] if z.shape[0] <= self.chunk else None

    def _block(self, start: int) -> Tensor:
        return torch.cdist(self.z[start : start + self.chunk], self.codes)

    def __iter__(self) -> Iterator[tuple[int, Tensor]]:
        if self._cached is not None:
            yield 0, self._cached[0]
            return
        for start in range(0, self.z.shape[0], self.chunk):
            yield start, self._block(start)


def _global_logsumexp(x: Tensor) -> Tensor:
    """Elementwise ``log sum_ranks exp(x)``: a sum over every process's tokens (identity on one)."""
    if not distributed():
        return x
    peak = x.clone()
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    return peak + torch.log(all_reduce_sum_(torch.exp(x - peak)))


def _log_add_eps(log_sum: Tensor) -> Tensor:
    """``log(exp(log_sum) + 1e-8)``: the authors' ``sum + 1e-8`` denominators, in log space."""
    return torch.logaddexp(log_sum, torch.full_like(log_sum, math.log(SINKHORN_EPS)))


def cost_scale(blocks: CostBlocks, mode: str, dim: int) -> tuple[float, float]:
    """``(shift, scale)`` with cost ``= (d - shift) / scale``: the authors' ``normalize`` of the distances.

    ``all``: z-score over every entry, then minus the minimum, i.e. ``(d - min d) / (std d + 1e-6)``
    (per process, as theirs); ``dim``: ``d / sqrt(d_code)``; ``null``: ``d``.
    """
    if mode == "null":
        return 0.0, 1.0
    if mode == "dim":
        return 0.0, math.sqrt(dim)
    total = squares = 0.0
    count, low = 0, math.inf
    for _, d in blocks:
        total += d.double().sum().item()
        squares += d.double().pow(2).sum().item()
        count += d.numel()
        low = min(low, d.min().item())
    variance = max(squares - total * total / count, 0.0) / max(count - 1, 1)
    return low, math.sqrt(variance) + 1e-6


@torch.no_grad()
def sinkhorn_assign(z: Tensor, codes: Tensor, epsilon: float, iters: int, mode: str = "all",
                    block_bytes: int = BLOCK_BYTES) -> Tensor:
    """Each token's code under the entropic transport plan that spreads tokens evenly over codes.

    The authors' ``sinkhorn`` (``Q = exp(-epsilon cost)``, normalised to total 1, then
    ``iters`` rounds of "each code holds 1/K", "each token holds 1/B", every
    denominator ``+ 1e-8``; ``B`` counts every process's tokens), kept in log space as
    ``log Q_nk = -epsilon c_nk + g + a_k + b_n`` so nothing underflows and only the
    vectors ``a (K,)`` and ``b (N,)`` persist between passes over the cost blocks.
    The index is ``argmax_k Q_nk = argmax_k (-epsilon c_nk + a_k)``.
    """
    blocks = CostBlocks(z, codes, block_bytes)
    shift, scale = cost_scale(blocks, mode, codes.shape[1])
    n, k = z.shape[0], codes.shape[0]
    total_n = n * (dist.get_world_size() if distributed() else 1)

    def logits(d: Tensor) -> Tensor:
        return -epsilon * (d - shift) / scale

    a = torch.zeros(k, device=z.device)
    b = torch.zeros(n, device=z.device)
    total = torch.stack([torch.logsumexp(logits(d).flatten(), 0) for _, d in blocks]).logsumexp(0)
    g = -_log_add_eps(_global_logsumexp(total))
    for _ in range(iters):
        per_code = torch.stack([torch.logsumexp(logits(d) + b[s : s + d.shape[0], None], 0)
                                for s, d in blocks]).logsumexp(0)
        a -= _log_add_eps(_global_logsumexp(per_code) + g + a) + math.log(k)
        for s, d in blocks:
            rows = slice(s, s + d.shape[0])
            per_token = torch.logsumexp(logits(d) + a, 1) + g + b[rows]
            b[rows] -= _log_add_eps(per_token) + math.log(total_n)
    return torch.cat([(logits(d) + a).argmax(1) for _, d in blocks])


class OptVQ(Quantizer):
    """OptVQ: Sinkhorn optimal-transport assignment in training, nearest code in eval; straight-through.

    Paper: Zhang et al. 2024, "Preventing Local Pitfalls in Vector Quantization via Optimal
    Transport" (arXiv 2412.15195). Public code: zbr17/OptVQ, ``src/optvq/models/quantizer.py``
    (``VectorQuantizerSinkhorn``, ``sinkhorn``) and ``configs/**/optvq*.yaml``.

    Codebook ``W(E)``: a learned ``(K, d)`` table ``E`` through a learned ``Linear(d, d)``
    (``use_proj``; weight ``N(0, 1/d)``). In training, the cost ``cdist(z, W(E))`` is
    normalised (``normalize``) and each token takes ``argmax_k`` of the Sinkhorn plan
    (:func:`sinkhorn_assign`), so codes far from every token still receive tokens;
    ``z_q = z + sg(e - z)``. Loss (their ``loss_q_type: l2``): ``mse(z, sg(e)) + beta
    mse(e, sg(z))``, i.e. beta on the codebook term, as their code has it.

    Defaults, from every shipped OptVQ config: ``beta = 0.25``, ``epsilon = 10``, ``iters = 5``,
    ``normalize = "all"``, argmax of the plan (``use_prob: false``), ``use_proj = True``;
    ``E`` drawn ``N(0, 1)`` (``nn.Embedding``'s default, which they keep). ``heads = 1``:
    their configs split each token into 4 heads sharing the codebook (``num_head: 4``);
    ``heads = 4`` does the same here (``G`` indices per token, ``num_stages = heads``,
    ``bits_per_token = heads log2 K``); one head keeps ``codebook_size`` the rate of a
    single-codebook method. Choices and deviations:

    * eval uses the nearest code (``sinkhorn_eval = False``). Their forward runs Sinkhorn in
      eval too, which makes a token's index depend on the rest of its eval batch (and
      on the eval batch size); ``sinkhorn_eval = True`` reproduces it;
    * Sinkhorn runs in log space over bounded token blocks (no ``(N, K)`` matrix beyond
      ``BLOCK_BYTES``); on identical inputs it picks the same codes as their
      linear-space version wherever theirs does not underflow;
    * under DDP the plan's sums cover every process's tokens (their ``all_reduce``s);
      the ``all`` normalisation statistics are per process, as theirs;
    * left out: ``use_prob`` sampling, the ``ce`` and ``l1`` losses, ``start_quantize_steps``
      (all off in their configs) and faiss-based code initialisation (not a dependency).
      The ``reassigned`` log is the fraction of tokens whose plan code is not their nearest.
    """

    name = "optvq"
    paper = "Zhang et al. 2024, OptVQ (arXiv 2412.15195); zbr17/OptVQ"

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, epsilon: float = 10.0,
                 iters: int = 5, normalize: str = "all", heads: int = 1, use_proj: bool = True,
                 sinkhorn_eval: bool = False) -> None:
        super().__init__(dim, codebook_size)
        if heads < 1 or dim % heads:
            raise ValueError(f"optvq: heads must divide dim {dim}, got {heads}")
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"optvq: normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
        if epsilon <= 0 or iters < 0:
            raise ValueError(f"optvq: epsilon must be positive and iters >= 0, got {epsilon} and {iters}")
        self.beta, self.epsilon, self.iters = float(beta), float(epsilon), int(iters)
        self.normalize, self.heads, self.sinkhorn_eval = normalize, int(heads), bool(sinkhorn_eval)
        code_dim = dim // heads
        self.embedding = nn.Parameter(torch.randn(codebook_size, code_dim))
        self.proj: nn.Module = nn.Identity()
        if use_proj:
            self.proj = nn.Linear(code_dim, code_dim)
            nn.init.normal_(self.proj.weight, std=code_dim**-0.5)

    @property
    def num_stages(self) -> int:
        return self.heads

    def codes(self) -> Tensor:
        """The ``(K, d)`` codebook tokens are compared with: ``W(E)``."""
        return self.proj(self.embedding)

    def codebook(self) -> Tensor | None:
        """``W(E)`` with one head; ``None`` with several (one code per head)."""
        return self.codes() if self.heads == 1 else None

    def quantize(self, z: Tensor) -> QuantizeOutput:
        n = z.shape[0]
        x = z.reshape(n * self.heads, -1)
        codes = self.codes()
        nearest = nearest_code(x.detach(), codes.detach())
        logs: dict[str, Tensor | float] = {}
        if self.training or self.sinkhorn_eval:
            indices = sinkhorn_assign(x.detach(), codes.detach(), self.epsilon, self.iters, self.normalize)
            logs["reassigned"] = (indices != nearest).float().mean()
        else:
            indices = nearest
        e = F.embedding(indices, codes)
        commitment = F.mse_loss(x, e.detach())
        codebook_loss = F.mse_loss(e, x.detach())
        logs.update(commitment_loss=commitment.detach(), codebook_loss=codebook_loss.detach())
        z_q = (x + (e - x).detach()).reshape(n, self.dim)
        indices = indices.reshape(n, self.heads) if self.heads > 1 else indices
        return QuantizeOutput(z_q=z_q, indices=indices, loss=commitment + self.beta * codebook_loss, logs=logs)
