"""SimVQ (Zhu et al. 2024): a frozen random codebook seen through one learned linear layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.plugins.quantizers.codebook_tools import float32_region, straight_through_vq


class SimVQ(Quantizer):
    """SimVQ: nearest code in ``W(C)`` (frozen ``C``, learned linear ``W``), straight-through.

    Zhu et al. 2024 ("Addressing Representation Collapse in Vector
    Quantized Models with One Linear Layer"); details from youngsheen/SimVQ
    ``taming/modules/vqvae/quantize.py``. ``C (K, D)`` is drawn once from
    ``N(0, 1/D)`` and kept frozen as a buffer; ``W = Linear(D, D)`` with bias
    (PyTorch's default init) is trained, and the codebook used is ``W(C)``,
    recomputed every forward, so every code moves with each update of ``W``.

    Loss (the shipped ``legacy: false`` config):
    ``beta * mse(sg(z_q), z) + mse(z_q, sg(z))``, ``beta = 0.25``.
    """

    name = "simvq"
    paper = "Zhu et al. 2024, SimVQ"

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25) -> None:
        super().__init__(dim, codebook_size)
        self.beta = beta
        self.register_buffer("frozen_codes", torch.randn(codebook_size, dim) / dim**0.5)
        self.proj = nn.Linear(dim, dim, bias=True)

    def codebook(self) -> Tensor:
        with float32_region(self.frozen_codes):
            return self.proj(self.frozen_codes)

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        return straight_through_vq(z, self.codebook(), self.beta)
