"""Reusable codebook pieces: k-means init, dead-code tracking and re-seeding, entropy penalty.

Every piece that keeps statistics agrees across DDP ranks: sums and counts go
through :func:`harness.ops.all_reduce_sum_`, random choices are made on rank 0
and copied with :func:`harness.ops.broadcast_`, so each rank ends with the same
codebook without any rank-dependent branch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput
from harness.ops import all_reduce_sum_, broadcast_, code_counts, nearest_code, squared_distances


def sample_rows(x: Tensor, num: int) -> Tensor:
    """``num`` rows of ``x`` drawn at random: without replacement when there are enough rows."""
    n = x.shape[0]
    if n == 0:
        raise ValueError("cannot sample codebook vectors from an empty batch")
    if n >= num:
        idx = torch.randperm(n, device=x.device)[:num]
    else:
        idx = torch.randint(0, n, (num,), device=x.device)
    return x[idx]


@torch.no_grad()
def kmeans(x: Tensor, k: int, iters: int = 10, init: Tensor | None = None) -> Tensor:
    """Lloyd's k-means on ``x (N, D)``: ``(k, D)`` float32 centroids, identical on every rank.

    Starting points are ``k`` rows of rank 0's ``x`` sampled at random (with
    replacement only when ``N < k``); each iteration assigns every row to its
    nearest centroid with :func:`harness.ops.nearest_code` and moves each
    centroid to the mean of its rows, summed over ranks. A centroid whose
    cluster is empty keeps its position (SoundStream's rule). ``init`` gives
    the starting points instead (the same on every rank).
    """
    x = x.detach().float()
    if init is None:
        centroids = broadcast_(sample_rows(x, k).clone())
    else:
        centroids = init.detach().float().clone()
        if centroids.shape != (k, x.shape[1]):
            raise ValueError(f"kmeans init must have shape {(k, x.shape[1])}, got {tuple(centroids.shape)}")
    for _ in range(iters):
        idx = nearest_code(x, centroids)
        counts = all_reduce_sum_(code_counts(idx, k))
        sums = all_reduce_sum_(torch.zeros_like(centroids).index_add_(0, idx, x))
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


class DeadCodeTracker(nn.Module):
    """Counts, per code, the training steps since it was last chosen (vqtorch-style countdown).

    A code unused for ``window`` consecutive training steps is dead. The
    counts behind the countdown are summed over ranks, so every rank reaches
    the same decision. The counter is a buffer: a resumed run continues it.
    """

    def __init__(self, codebook_size: int, window: int) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"dead-code window must be at least 1 step, got {window}")
        self.window = int(window)
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.long))

    def dead(self) -> Tensor:
        """Boolean ``(K,)`` mask of codes unused for at least ``window`` steps."""
        return self.steps_unused >= self.window

    @torch.no_grad()
    def step(self, indices: Tensor) -> None:
        """Record one training step's local ``indices`` (counts summed over ranks)."""
        counts = all_reduce_sum_(code_counts(indices, self.steps_unused.numel()))
        self.steps_unused.add_(1)
        self.steps_unused[counts > 0] = 0

    @torch.no_grad()
    def revive(self, mask: Tensor) -> None:
        """Restart the countdown of re-seeded codes."""
        self.steps_unused[mask] = 0


@torch.no_grad()
def replacement_vectors(z: Tensor, num: int, noise_std: float) -> Tensor:
    """``num`` rows of rank 0's batch ``z`` plus Gaussian noise, copied to every rank."""
    new = sample_rows(z.detach().float(), num).clone()
    if noise_std > 0:
        new.add_(torch.randn_like(new), alpha=noise_std)
    return broadcast_(new)


def default_reset_noise(dim: int) -> float:
    """Jukebox's re-seeding noise scale, ``0.01 / sqrt(D)``."""
    return 0.01 / math.sqrt(dim)


def entropy_penalty(distances: Tensor, temperature: float) -> tuple[Tensor, Tensor, Tensor]:
    """MAGVIT-v2 / the VQ-VAE notes diversity term ``mean_n H(p_n) - H(mean_n p_n)``.

    ``p_n = softmax_k(-d_nk / temperature)`` over the ``(N, K)`` squared
    distances. Minimising it makes each token's assignment confident (first
    term) and the batch's average usage uniform (second term). Returns the
    penalty, the mean per-token entropy and the entropy of the mean (nats).
    """
    logits = -distances / temperature
    log_p = F.log_softmax(logits, dim=1)
    p = log_p.exp()
    per_token = -(p * log_p).sum(1).mean()
    avg = p.mean(0)
    codebook = -(avg * torch.log(avg.clamp_min(1e-12))).sum()
    return per_token - codebook, per_token, codebook


def entropy_penalty_for(z: Tensor, codes: Tensor, temperature: float) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`entropy_penalty` over all squared distances between ``z`` and ``codes``."""
    return entropy_penalty(squared_distances(z, codes), temperature)


@torch.no_grad()
def reseed_dead_codes(codes: Tensor, tracker: DeadCodeTracker, z: Tensor, noise_std: float) -> Tensor:
    """Overwrite the dead rows of ``codes`` in place with batch vectors plus noise.

    Returns the mask of re-seeded codes (the same on every rank). Call it before
    the codebook enters the autograd graph of the step.
    """
    dead = tracker.dead()
    num = int(dead.sum())
    if num:
        codes[dead] = replacement_vectors(z, num, noise_std).to(codes.dtype)
        tracker.revive(dead)
    return dead


def float32_region(z: Tensor) -> torch.autocast:
    """Autocast off on ``z``'s device: quantization, codebook maps included, runs in float32.

    The contract fixes float32 quantization even when the nets run under bf16
    autocast; without this, a learned codebook map (SimVQ's linear layer,
    TransVQ's transformer) would run in bf16 inside an autocast region.
    """
    return torch.autocast(z.device.type, enabled=False)


def straight_through_vq(z: Tensor, codes: Tensor, beta: float) -> QuantizeOutput:
    """Nearest code in ``codes`` with straight-through; loss ``mse(e, sg(z)) + beta mse(z, sg(e))``.

    The shared core of the quantizers whose codebook is a learned map of a frozen
    basis (SimVQ's ``W(C)``, TransVQ's ``T(C)``): the gradient reaches the map through ``e``.
    """
    indices = nearest_code(z.detach(), codes.detach())
    e = F.embedding(indices, codes)
    codebook_loss = F.mse_loss(e, z.detach())
    commitment_loss = F.mse_loss(z, e.detach())
    return QuantizeOutput(
        z_q=z + (e - z).detach(),
        indices=indices,
        loss=codebook_loss + beta * commitment_loss,
        logs={"codebook_loss": codebook_loss.detach(), "commitment_loss": commitment_loss.detach()},
    )


# The options ``vq`` and ``ema`` share (docs/methods.md, ``vq``): heads, cosine codes,
# stochastic sampling, the orthogonal regularizer. Tokens travel as ``(C, M, d)``: ``C``
# codebooks (``heads`` when each head has its own, else 1), ``M`` tokens each, ``d = D / heads``.


def l2norm(x: Tensor) -> Tensor:
    """Unit rows (the last axis); ``eps = 1e-6`` as vector-quantize-pytorch's ``l2norm``."""
    return F.normalize(x, p=2, dim=-1, eps=1e-6)


def split_heads(z: Tensor, heads: int, separate: bool) -> Tensor:
    """``(N, D)`` tokens as ``(C, M, D / heads)``: head ``h`` of token ``n`` is row ``n h + h``
    of the one shared codebook's batch, or row ``n`` of codebook ``h``'s batch."""
    n = z.shape[0]
    x = z.reshape(n, heads, -1)
    return x.transpose(0, 1) if separate else x.reshape(1, n * heads, -1)


def merge_heads(x: Tensor, n: int, heads: int, separate: bool) -> Tensor:
    """Inverse of :func:`split_heads` for ``(C, M, d)`` vectors, or ``(C, M)`` indices to ``(N, heads)``."""
    if separate:
        x = x.transpose(0, 1)
    return x.reshape(n, heads, *x.shape[2:]).reshape(n, -1) if x.dim() == 3 else x.reshape(n, heads)


def orthogonal_loss(codes: Tensor) -> Tensor:
    """Orthogonality of the codes, Shin et al. 2021 eq. (2) as vector-quantize-pytorch computes it.

    ``sum_{c,i,j} cos(e_ci, e_cj)^2 / (C K^2) - 1/K`` over ``(C, K, d)`` codes: 0 when each
    codebook's codes are pairwise orthogonal (possible only for ``K <= d``), ``1 - 1/K`` when all
    are parallel. The ``1/K`` is the diagonal's share, a constant.
    """
    c, k = codes.shape[:2]
    unit = l2norm(codes)
    cos = unit @ unit.transpose(1, 2)
    return cos.pow(2).sum() / (c * k * k) - 1.0 / k


def gumbel_noise(shape_like: Tensor) -> Tensor:
    """Standard Gumbel noise ``-log(-log u)``, ``u ~ U[0, 1)``, logs clamped at ``1e-20``."""
    u = torch.zeros_like(shape_like).uniform_(0.0, 1.0)
    return -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))


@torch.no_grad()
def assign_codes(x: Tensor, codes: Tensor, cosine: bool, temperature: float) -> Tensor:
    """``(C, M)`` indices of ``(C, M, d)`` tokens into ``(C, K, d)`` codes.

    ``temperature = 0``: the nearest code (squared Euclidean; for unit vectors the
    largest dot product). ``temperature > 0``: Gumbel-max sampling from
    ``softmax(logits / temperature)``, the logits being ``-||x - e||`` (the distance, not its
    square) or, with ``cosine``, ``<x, e>``, as vector-quantize-pytorch's ``gumbel_sample``.
    The noise is drawn as one ``(C, M, K)`` tensor (the draw order of that code), and the
    logits are computed in the tokens' dtype (float64 in the comparison against that code).
    """
    if temperature <= 0:
        return torch.stack([nearest_code(x[c], codes[c]) for c in range(codes.shape[0])])
    if cosine:
        logits = x @ codes.transpose(1, 2)
    else:
        sq = x.pow(2).sum(-1, keepdim=True) + codes.pow(2).sum(-1)[:, None, :] - 2 * x @ codes.transpose(1, 2)
        logits = -sq.clamp_min(1e-8).sqrt()
    return (logits / temperature + gumbel_noise(logits)).argmax(-1)


def gather_codes(codes: Tensor, indices: Tensor) -> Tensor:
    """``(C, M, d)`` codes ``codes[c, indices[c, m]]`` (differentiable in ``codes``)."""
    if codes.shape[0] == 1:
        return F.embedding(indices[0], codes[0])[None]
    return torch.gather(codes, 1, indices[..., None].expand(-1, -1, codes.shape[-1]))
