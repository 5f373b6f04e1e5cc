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
from harness.plugins.quantizers.codebook_tools import kmeans

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

    a = torch.zeros(k, device=z.device, dtype=z.dtype)
    b = torch.zeros(n, device=z.device, dtype=z.dtype)
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
    (``VectorQuantizerSinkhorn``, ``sinkhorn``), ``train.py`` (``generate_codes``: the
    k-means init) and ``configs/**/optvq*.yaml``.

    Codebook ``W(E)``: a learned ``(K, d)`` table ``E`` through a learned ``Linear(d, d)``
    (``use_proj``; weight ``N(0, 1/d)``). Each token is split into ``heads`` sub-vectors
    of ``d = dim / heads`` channels sharing the one codebook (their ``num_head``), so a
    token carries ``heads`` indices: ``num_stages = heads`` and ``bits_per_token = heads
    log2 K``. In training, the cost ``cdist(x, W(E))`` over all sub-vectors ``x`` is
    normalised (``normalize``) and each takes ``argmax_k`` of the Sinkhorn plan
    (:func:`sinkhorn_assign`), so codes far from every token still receive tokens;
    ``z_q = z + sg(e - z)``. Loss (their ``loss_q_type: l2``): ``mse(x, sg(e)) + beta
    mse(e, sg(x))``, i.e. beta on the codebook term, as their code has it.

    Defaults, from every shipped OptVQ config: ``beta = 0.25``, ``epsilon = 10``, ``iters = 5``,
    ``normalize = "all"``, argmax of the plan (``use_prob: false``), ``use_proj = True``,
    ``heads = 4`` (``num_head: 4``; their ImageNet configs also ship 8) and a k-means
    init (``use_initiate: kmeans``) with ``kmeans_iters = 100`` (their faiss ``niter``);
    ``E`` otherwise drawn ``N(0, 1)`` (``nn.Embedding``'s default, which they keep).
    Until this default changed, the plugin ran one head without k-means: results
    recorded before then are of that form (``heads=1, kmeans_init=False``), and at
    ``heads = 4`` a codebook of ``K`` codes is a rate of ``4 log2 K`` bits per token, so
    equal-rate comparisons need ``K`` a fourth as many bits (suites set ``heads`` or
    ``codebook_size`` accordingly); ``heads`` must divide ``dim``.

    ``kmeans_init``: on the first training batch, ``E`` becomes the ``K`` centroids of
    Lloyd's k-means over the batch's head sub-vectors (:func:`harness.plugins.quantizers.codebook_tools.kmeans`:
    ``K`` random sub-vectors to start, an empty cluster keeps its centroid, sums over
    DDP ranks), done once and recorded in the ``initted`` buffer. As in their
    ``train.py``, the centroids go into ``E``, before the projection: the codes tokens
    meet are ``W(centroids)``. Theirs differs: an offline pass of the untrained model
    over the training set (feature maps average-pooled to 4 x 4, a quarter of each
    batch), faiss k-means per class label with ``K // C + 1`` centroids each, ``K`` of
    them kept at random. We have no labels and no faiss, and cluster the first batch.
    Their features are ``e_dim`` wide while a head's table is ``e_dim / num_head``
    wide, so their k-means codes do not fit their own 4-head configs; we cluster the
    head sub-vectors, the width the table has (as their ``random`` init reshapes them).

    Choices and deviations:

    * eval uses the nearest code (``sinkhorn_eval = False``). Their forward runs Sinkhorn in
      eval too, which makes a token's index depend on the rest of its eval batch (and
      on the eval batch size); ``sinkhorn_eval = True`` reproduces it;
    * Sinkhorn runs in log space over bounded token blocks (no ``(N, K)`` matrix beyond
      ``BLOCK_BYTES``); on identical inputs it picks the same codes as their
      linear-space version wherever theirs does not underflow;
    * under DDP the plan's sums cover every process's tokens (their ``all_reduce``s);
      the ``all`` normalisation statistics are per process, as theirs;
    * left out: ``use_prob`` sampling, the ``ce`` and ``l1`` losses and
      ``start_quantize_steps`` (all off in their configs).
      The ``reassigned`` log is the fraction of sub-vectors whose plan code is not their nearest.
    """

    name = "optvq"
    paper = "Zhang et al. 2024, OptVQ (arXiv 2412.15195); zbr17/OptVQ"

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, epsilon: float = 10.0,
                 iters: int = 5, normalize: str = "all", heads: int = 4, use_proj: bool = True,
                 sinkhorn_eval: bool = False, kmeans_init: bool = True, kmeans_iters: int = 100) -> None:
        super().__init__(dim, codebook_size)
        if heads < 1 or dim % heads:
            raise ValueError(f"optvq: heads must divide dim {dim}, got {heads} (the authors' default is 4: "
                             "pass heads=1 or another divisor for this dim)")
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"optvq: normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
        if epsilon <= 0 or iters < 0:
            raise ValueError(f"optvq: epsilon must be positive and iters >= 0, got {epsilon} and {iters}")
        if kmeans_iters < 1:
            raise ValueError(f"optvq: kmeans_iters must be at least 1, got {kmeans_iters}")
        self.beta, self.epsilon, self.iters = float(beta), float(epsilon), int(iters)
        self.normalize, self.heads, self.sinkhorn_eval = normalize, int(heads), bool(sinkhorn_eval)
        self.kmeans_init, self.kmeans_iters = bool(kmeans_init), int(kmeans_iters)
        code_dim = dim // heads
        self.embedding = nn.Parameter(torch.randn(codebook_size, code_dim))
        self.proj: nn.Module = nn.Identity()
        if use_proj:
            self.proj = nn.Linear(code_dim, code_dim)
            nn.init.normal_(self.proj.weight, std=code_dim**-0.5)
        if self.kmeans_init:
            self.register_buffer("initted", torch.zeros((), dtype=torch.bool))

    @property
    def num_stages(self) -> int:
        return self.heads

    def codes(self) -> Tensor:
        """The ``(K, d)`` codebook tokens are compared with: ``W(E)``."""
        return self.proj(self.embedding)

    def codebook(self) -> Tensor | None:
        """``W(E)`` with one head; ``None`` with several (one code per head)."""
        return self.codes() if self.heads == 1 else None

    @torch.no_grad()
    def init_from_batch(self, x: Tensor) -> None:
        """``E`` <- the k-means centroids of the first training batch's head sub-vectors (once)."""
        self.embedding.copy_(kmeans(x, self.codebook_size, self.kmeans_iters).to(self.embedding.dtype))
        self.initted.fill_(True)

    def quantize(self, z: Tensor) -> QuantizeOutput:
        n = z.shape[0]
        x = z.reshape(n * self.heads, -1)
        if self.training and self.kmeans_init and not bool(self.initted):
            self.init_from_batch(x.detach())
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
