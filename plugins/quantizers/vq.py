"""Vanilla VQ-VAE quantizer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import nearest_code


class VectorQuantizer(Quantizer):
    """Vanilla VQ-VAE: nearest code, codebook + beta commitment loss, straight-through.

    Paper: van den Oord et al. 2017, "Neural Discrete Representation Learning"
    (summarised in paper 001). Loss ``||sg(z) - e||^2 + beta ||z - sg(e)||^2``
    (the paper's form, not taming's ``legacy`` form that moves beta to the
    codebook term); both terms are means over elements.

    Defaults: ``beta = 0.25`` (the paper); codebook initialised uniform in
    ``(-1/K, 1/K)`` as in taming-transformers and LDM (the paper gives none).
    """

    name = "vq"
    paper = "van den Oord et al. 2017 (paper 001)"

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25) -> None:
        super().__init__(dim, codebook_size)
        self.beta = beta
        k = codebook_size
        self.embedding = nn.Parameter(torch.empty(k, dim).uniform_(-1.0 / k, 1.0 / k))

    def codebook(self) -> Tensor:
        return self.embedding

    def forward(self, z: Tensor) -> QuantizeOutput:
        indices = nearest_code(z.detach(), self.embedding.detach())
        e = F.embedding(indices, self.embedding)
        codebook_loss = F.mse_loss(e, z.detach())
        commitment_loss = F.mse_loss(z, e.detach())
        z_q = z + (e - z).detach()
        return QuantizeOutput(
            z_q=z_q,
            indices=indices,
            loss=codebook_loss + self.beta * commitment_loss,
            logs={"codebook_loss": codebook_loss.detach(), "commitment_loss": commitment_loss.detach()},
        )
