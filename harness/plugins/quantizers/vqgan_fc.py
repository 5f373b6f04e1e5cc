"""VQGAN-FC (Yu et al. 2021): factorized, l2-normalized codes looked up in a low-dimensional space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import nearest_code
from harness.plugins.quantizers.codebook_tools import float32_region


class VQGANFC(Quantizer):
    """VQGAN-FC: project to a low-dim space, cosine nearest code, project back.

    Yu et al. 2021, "Vector-quantized Image Modeling with Improved VQGAN"
    (factorized and l2-normalized codes). ``h = normalize(W_in z)`` in a
    ``lookup_dim``-dimensional space; codes ``c_k`` are l2-normalized too, so
    the nearest code in squared Euclidean distance is the one of highest
    cosine; the chosen code goes back through ``W_out`` (``z_q = W_out q``)
    with straight-through in the lookup space. Loss in the lookup space,
    ``||sg(h) - c||^2 + beta ||h - sg(c)||^2`` (means), ``beta = 0.25``.

    Choices: ``lookup_dim = 8``, the smaller of the two the paper reports (8
    and 32) and the one it credits with the best usage; the dimension paper
    002 used is not public. ``W_in``/``W_out`` are linear with bias; codes start
    from ``N(0, 1)`` (only their direction matters). ``codebook()`` returns
    ``W_out(normalize(c))``, the vectors the decoder actually receives.
    """

    name = "vqgan-fc"
    paper = "Yu et al. 2021, improved VQGAN (ViT-VQGAN), factorized codes"

    def __init__(self, dim: int, codebook_size: int, lookup_dim: int = 8, beta: float = 0.25) -> None:
        super().__init__(dim, codebook_size)
        if lookup_dim < 1:
            raise ValueError(f"lookup_dim must be positive, got {lookup_dim}")
        self.lookup_dim, self.beta = lookup_dim, beta
        self.proj_in = nn.Linear(dim, lookup_dim)
        self.proj_out = nn.Linear(lookup_dim, dim)
        self.embedding = nn.Parameter(torch.randn(codebook_size, lookup_dim))

    def normalized_codes(self) -> Tensor:
        return F.normalize(self.embedding, dim=1)

    def codebook(self) -> Tensor:
        with float32_region(self.embedding):
            return self.proj_out(self.normalized_codes())

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        h = F.normalize(self.proj_in(z), dim=1)
        codes = self.normalized_codes()
        indices = nearest_code(h.detach(), codes.detach())
        c = F.embedding(indices, codes)
        codebook_loss = F.mse_loss(c, h.detach())
        commitment_loss = F.mse_loss(h, c.detach())
        q = h + (c - h).detach()
        return QuantizeOutput(
            z_q=self.proj_out(q),
            indices=indices,
            loss=codebook_loss + self.beta * commitment_loss,
            logs={"codebook_loss": codebook_loss.detach(), "commitment_loss": commitment_loss.detach()},
        )
