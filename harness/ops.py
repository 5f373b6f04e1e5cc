"""Shared numerical pieces: the one nearest-code search, code statistics across ranks.

Every codebook quantizer finds its nearest codes here, so the search is fast and
memory-bounded in one place: tokens are processed in chunks sized so that one
chunk's distance block never exceeds ``max_block_bytes``. 65,536 codes x 131,072
tokens x dim 64 then needs the block (256 MiB by default) plus the outputs,
never the 32 GiB full distance matrix.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

DEFAULT_BLOCK_BYTES = 256 * 2**20


def common_centre(z: Tensor) -> Tensor:
    """The tokens' mean ``(1, D)``, detached: the point tokens and codes are centred on.

    ``||c||^2 - 2 z.c`` in float32 cancels catastrophically when tokens and codes
    share a large offset (spread 0.1 at offset 100: over half the picks wrong);
    distances do not change under a common shift, so subtracting one point from
    both first keeps the products at the scale of the spread. The tokens' mean,
    not the codebook's: a few far-away codes (unused codes an EMA has pushed out)
    would drag the codebook mean away from the tokens, where precision matters.
    """
    return z.detach().mean(0, keepdim=True)


def squared_distances(z: Tensor, codes: Tensor) -> Tensor:
    """Full ``(N, K)`` matrix of squared Euclidean distances, in float32, centred like :func:`nearest_code`.

    For methods that need every distance (soft assignments); use
    :func:`nearest_code` when only the winner matters.
    """
    z, codes = z.float(), codes.float()
    centre = common_centre(z)
    z, codes = z - centre, codes - centre
    z_sq = z.pow(2).sum(1, keepdim=True)
    c_sq = codes.pow(2).sum(1)
    return torch.addmm(z_sq + c_sq, z, codes.t(), beta=1.0, alpha=-2.0).clamp_min_(0.0)


@torch.no_grad()
def nearest_code(
    z: Tensor,
    codes: Tensor,
    *,
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
    return_distances: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Index of the nearest code (squared Euclidean) for each row of ``z``.

    Tokens and codes are centred on the tokens' mean (:func:`common_centre`)
    before ``||c||^2 - 2 z.c``, so a large shared offset costs no precision.

    Args:
        z: ``(N, D)`` tokens.
        codes: ``(K, D)`` codebook.
        max_block_bytes: upper bound on the float32 distance block held at once.
        return_distances: also return each token's squared distance to its code.

    Returns:
        ``indices (N,)`` int64, and ``distances (N,)`` float32 when asked.
    """
    if z.dim() != 2 or codes.dim() != 2 or z.shape[1] != codes.shape[1]:
        raise ValueError(f"nearest_code expects (N, D) and (K, D), got {tuple(z.shape)} and {tuple(codes.shape)}")
    z, codes = z.float(), codes.float()
    n, k = z.shape[0], codes.shape[0]
    centre = common_centre(z)
    codes = codes - centre
    c_sq = codes.pow(2).sum(1)
    codes_t = codes.t().contiguous()
    chunk = max(1, min(n, max_block_bytes // (4 * max(k, 1))))
    indices = torch.empty(n, dtype=torch.long, device=z.device)
    best = torch.empty(n, dtype=torch.float32, device=z.device) if return_distances else None
    block = torch.empty(chunk, k, dtype=torch.float32, device=z.device)
    for start in range(0, n, chunk):
        zc = z[start : start + chunk] - centre
        out = block[: zc.shape[0]]
        # ||z||^2 is the same for every code of a row: it does not change the argmin
        torch.addmm(c_sq, zc, codes_t, beta=1.0, alpha=-2.0, out=out)
        if best is None:
            torch.argmin(out, dim=1, out=indices[start : start + zc.shape[0]])
        else:
            values, idx = out.min(dim=1)
            indices[start : start + zc.shape[0]] = idx
            best[start : start + zc.shape[0]] = (values + zc.pow(2).sum(1)).clamp_min_(0.0)
    if return_distances:
        return indices, best
    return indices


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` in place over DDP ranks (no-op on one process): code statistics agree."""
    if distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    """Copy rank ``src``'s tensor to every rank (random replacement decisions agree)."""
    if distributed():
        dist.broadcast(tensor, src)
    return tensor


def code_counts(indices: Tensor, codebook_size: int) -> Tensor:
    """How often each code was chosen, as float32 ``(K,)``."""
    return torch.bincount(indices.reshape(-1), minlength=codebook_size).float()
