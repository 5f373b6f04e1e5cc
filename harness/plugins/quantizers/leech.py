"""Spherical Leech quantization (Λ24-SQ): the nearest of the Leech lattice's 196,560 shortest vectors on S^23."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer

#: the Leech lattice's kissing number: its minimal vectors, the codebook's size
KISSING_NUMBER = 196_560
#: the lattice's dimension: every code, and the token it quantizes, has 24 channels
LEECH_DIM = 24
#: squared norm of a minimal vector in the integer coordinates below ((4, 4, 0^22), (2^8, 0^16), (-3, 1^23))
MINIMAL_NORM = 32
#: generator polynomial of the cyclic [23, 12, 7] binary Golay code, lowest degree first:
#: 1 + x^2 + x^4 + x^5 + x^6 + x^10 + x^11 (a factor of x^23 - 1 over GF(2))
GOLAY_GENERATOR = (1, 0, 1, 0, 1, 1, 1, 0, 0, 0, 1, 1)
#: the nearest-code search scores tiles of this many tokens x codes (8 MiB of float32),
#: small enough to stay in cache on a CPU, whatever the batch
TILE_TOKENS, TILE_CODES = 512, 4096


def golay_codewords() -> Tensor:
    """The 4,096 words of the extended binary Golay code [24, 12, 8], ``(4096, 24)`` int64 of 0/1.

    Twelve cyclic shifts of :data:`GOLAY_GENERATOR` span the cyclic [23, 12, 7] code; an
    overall parity bit extends it. Row ``m`` encodes message ``m`` (bit ``i`` of ``m`` picks shift ``i``).
    """
    g = torch.tensor(GOLAY_GENERATOR, dtype=torch.long)
    basis = torch.zeros(12, 23, dtype=torch.long)
    for shift in range(12):
        basis[shift, shift:shift + len(GOLAY_GENERATOR)] = g
    messages = (torch.arange(4096)[:, None] >> torch.arange(12)) & 1
    words = (messages @ basis) % 2
    return torch.cat([words, words.sum(1, keepdim=True) % 2], dim=1)


def leech_minimal_vectors() -> Tensor:
    """The 196,560 minimal vectors of the Leech lattice in integer coordinates (norm² 32), ``(K, 24)`` int64.

    The standard construction from the Golay code (Conway and Sloane, "Sphere Packings,
    Lattices and Groups", ch. 4, sec. 11), in three shapes:

    * ``(±4, ±4, 0^22)``: every pair of positions, every sign: 276 x 4 = 1,104;
    * ``(±2^8, 0^16)`` on the 759 octads (weight-8 codewords), an even number of minus
      signs: 759 x 128 = 97,152;
    * ``(-3, 1^23)`` with the -3 at any position, then negated on the support of any
      codeword: 24 x 4,096 = 98,304.

    The rows are ordered so that the codebook is ``[H; -H]``: row ``k + K/2`` is minus row
    ``k``, and ``H`` holds the vectors whose first non-zero coordinate is positive, in the
    order type 1, 2, 3 above (pairs, octads and codewords in lexicographic/codeword order).
    """
    pairs = torch.combinations(torch.arange(LEECH_DIM), 2)
    signs2 = torch.tensor([[1, 1], [1, -1], [-1, 1], [-1, -1]])
    type1 = torch.zeros(len(pairs), 4, LEECH_DIM, dtype=torch.long)
    type1.scatter_(2, pairs[:, None, :].expand(-1, 4, -1).contiguous(), 4 * signs2.expand(len(pairs), -1, -1))

    words = golay_codewords()
    octads = words[words.sum(1) == 8]
    positions = octads.nonzero()[:, 1].view(-1, 8)  # each octad's 8 positions, ascending
    patterns = 1 - 2 * ((torch.arange(256)[:, None] >> torch.arange(8)) & 1)
    even = patterns[(patterns < 0).sum(1) % 2 == 0]  # 128 sign patterns with an even number of minus signs
    type2 = torch.zeros(len(octads), len(even), LEECH_DIM, dtype=torch.long)
    type2.scatter_(2, positions[:, None, :].expand(-1, len(even), -1).contiguous(),
                   2 * even.expand(len(octads), -1, -1))

    base = torch.ones(LEECH_DIM, LEECH_DIM, dtype=torch.long) - 4 * torch.eye(LEECH_DIM, dtype=torch.long)
    type3 = (1 - 2 * words)[:, None, :] * base[None, :, :]

    every = torch.cat([type1.reshape(-1, LEECH_DIM), type2.reshape(-1, LEECH_DIM), type3.reshape(-1, LEECH_DIM)])
    first = every.gather(1, (every != 0).long().argmax(1, keepdim=True)).squeeze(1)
    half = every[first > 0]
    return torch.cat([half, -half])


@functools.lru_cache(maxsize=1)
def spherical_leech_codebook() -> Tensor:
    """The minimal vectors scaled to unit norm (``/ sqrt(32)``), float32 on the CPU; built once per process."""
    return leech_minimal_vectors().float() / math.sqrt(MINIMAL_NORM)


def nearest_codes(u: Tensor, half: Tensor) -> Tensor:
    """Index of the code of largest inner product with each row of ``u``, in the codebook ``[half; -half]``.

    The codebook is symmetric, so ``max_k <u, c_k>`` is ``max_j |<u, h_j>|`` over half of it;
    the sign picks ``h_j`` (index ``j``) or ``-h_j`` (index ``j + K/2``). Scores go in tiles of
    :data:`TILE_TOKENS` x :data:`TILE_CODES`, so memory stays modest for any batch: a first
    pass keeps each token's best value and the tile holding it (max and min reductions,
    cheap), a second rescores each token against that one tile for the index. On unit
    vectors the largest inner product is the smallest Euclidean distance.
    """
    n, k = u.shape[0], half.shape[0]
    out = torch.empty(n, dtype=torch.long, device=u.device)
    for start in range(0, n, TILE_TOKENS):
        x = u[start:start + TILE_TOKENS]
        best = torch.full((x.shape[0],), -1.0, dtype=u.dtype, device=u.device)
        tile = torch.zeros(x.shape[0], dtype=torch.long, device=u.device)
        for t, first in enumerate(range(0, k, TILE_CODES)):
            scores = x @ half[first:first + TILE_CODES].t()
            value = torch.maximum(scores.amax(1), -scores.amin(1))
            better = value > best
            best = torch.where(better, value, best)
            tile = torch.where(better, t, tile)
        index = torch.empty_like(tile)
        for t in tile.unique().tolist():
            rows = (tile == t).nonzero().squeeze(1)
            first = t * TILE_CODES
            scores = x[rows] @ half[first:first + TILE_CODES].t()
            column = scores.abs().argmax(1)
            negative = scores.gather(1, column[:, None]).squeeze(1) < 0
            index[rows] = column + first + negative.long() * k
        out[start:start + TILE_TOKENS] = index
    return out


class SphericalLeechQuantizer(Quantizer):
    """Λ24-SQ: ``u = z/||z||`` in R^24, ``q`` the nearest unit-norm Leech minimal vector, straight-through.

    Paper: Zhao, Jiang, Xu, Yang, Adeli and Krähenbühl 2025, "Spherical Leech Quantization
    for Visual Tokenization and Generation" (arXiv 2512.14697; CVPR 2026). Public code: the
    first author's zhaoyue-zephyrus/bsq-vit (commit "lattice!"), ``transcoder/models/quantizer/vq.py``
    (``VectorQuantizer`` with ``predefined_codebook``), ``transcoder/models/bsqvit.py``
    (``VITVQModel``) and ``configs/tokenizer/imagenet_256x256_l24sq_stylegan_f8_fp16.yaml``;
    the multi-scale use in zhaoyue-zephyrus/InfinityCC, ``infinity/models/bsq_vae/multiscale_leechq.py``.
    Their codebook is a cached 19 MB file (``cache/leech_lattices_normalized.npy``, absent
    from the snapshots read here; InfinityCC scales it by ``sqrt(32)`` to integer coordinates
    in [-4, 4], as below); here it is built from the Golay code (:func:`leech_minimal_vectors`)
    and checked against the lattice's properties (tests/quantizers/test_leech.py). Their
    ``VectorQuantizer``, run outside the repository on 1,000 identical float64 tokens with this
    plugin's codebook saved as their file, gave the same indices, ``z_q`` within 1.2e-8 (they
    re-normalize each float32 code), the loss within 3.3e-9 and the gradient at ``z`` within
    1.1e-12; the tests restate their forward in float64 and compare on 1,200 tokens.

    Method (theirs): ``u = normalize(project_in(z))``; index ``argmax_k <u, c_k>`` over the
    196,560 codes ``c_k``, the minimal vectors at unit norm; ``q = c_index``; ``z_q =
    project_out(u + sg(q - u))``. Loss::

        loss_weight * (beta * mean_n ||sg(q_n) - u_n||^2 + mean_n ||q_n - sg(u_n)||^2)

    (their ``VectorQuantizer`` loss; the second term has no gradient, the codes being
    fixed). ``bits_per_token = log2(196,560) ≈ 17.58``; ``codebook_size`` must be 196,560.

    Defaults, from the authors' L24SQ config: ``loss_weight = 0`` (their ``codebook_weight:
    0.``: the paper trains with no commitment or entropy term), ``beta = 0.25``
    (``VITVQModel``'s default, which only matters once ``loss_weight > 0``). When ``dim !=
    24`` a ``Linear(dim, 24)`` and a ``Linear(24, dim)`` map tokens in and codes out (their
    ``quant_embed``/``post_quant_embed``, from the ViT's width to 24 and back).

    Deviations: the index order is this module's (theirs is the row order of their file);
    a code's vector is the same whatever its index. Ties (measure zero) may resolve to a
    different code: the search scores half the codebook and takes ``|<u, h>|``. Their
    codebook-usage entropy, logged but never in a loss, is not computed. InfinityCC's
    multi-scale residual use (unnormalized residuals against the same codes) is not offered.
    """

    name = "leech-sq"
    paper = "Zhao et al. 2025, Spherical Leech Quantization (arXiv 2512.14697); zhaoyue-zephyrus/bsq-vit"

    def __init__(self, dim: int, codebook_size: int = KISSING_NUMBER, beta: float = 0.25,
                 loss_weight: float = 0.0) -> None:
        if codebook_size != KISSING_NUMBER:
            raise ValueError(f"leech-sq: codebook_size must be {KISSING_NUMBER} (the Leech lattice's minimal "
                             f"vectors, log2 = {math.log2(KISSING_NUMBER):.2f} bits per token), got {codebook_size}")
        super().__init__(dim, codebook_size)
        self.beta, self.loss_weight = float(beta), float(loss_weight)
        # fixed and rebuilt at construction: not part of the state dict (19 MB of constants)
        self.register_buffer("codes", spherical_leech_codebook().clone(), persistent=False)
        self.project_in: nn.Module = nn.Linear(dim, LEECH_DIM) if dim != LEECH_DIM else nn.Identity()
        self.project_out: nn.Module = nn.Linear(LEECH_DIM, dim) if dim != LEECH_DIM else nn.Identity()

    @property
    def bits_per_token(self) -> float:
        """``log2(196,560)``: one index among the minimal vectors."""
        return math.log2(KISSING_NUMBER)

    def decode(self, indices: Tensor) -> Tensor:
        """Latent vectors ``(..., D)`` of the given indices."""
        return self.project_out(self.codes[indices])

    def codebook(self) -> Tensor:
        """The 196,560 codes mapped to latent space, ``(K, D)``."""
        return self.project_out(self.codes)

    def quantize(self, z: Tensor) -> QuantizeOutput:
        u = F.normalize(self.project_in(z), dim=-1)
        indices = nearest_codes(u.detach(), self.codes[: KISSING_NUMBER // 2])
        q = self.codes[indices]
        commitment = (q - u.detach()).pow(2).sum(-1).mean()
        loss = self.loss_weight * (self.beta * (q - u).pow(2).sum(-1).mean() + commitment)
        z_q = self.project_out(u + (q - u).detach())
        return QuantizeOutput(z_q=z_q, indices=indices, loss=loss, logs={"commitment_loss": commitment})
