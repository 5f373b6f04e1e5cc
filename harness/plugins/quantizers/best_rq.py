"""BEST-RQ's random-projection quantizer: a frozen random projection and a frozen random codebook."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer

#: similarities held at once when picking codes (tokens are taken in blocks)
BLOCK = 2**24


def largest_cosine(y: Tensor, codes: Tensor, block: int = BLOCK) -> Tensor:
    """``argmax_k <y_n, c_k>`` per row (for unit vectors: the nearest code), in token blocks."""
    rows = max(1, block // codes.shape[0])
    return torch.cat([(y[s : s + rows] @ codes.t()).argmax(-1) for s in range(0, y.shape[0], rows)])


class RandomProjectionQuantizer(Quantizer):
    """BEST-RQ: ``argmin_k ||l2(c_k) - l2(A x)||`` with ``A`` and ``c`` random and frozen; learns nothing.

    Paper: Chiu, Qin, Zhang, Yu and Wu 2022, "Self-supervised Learning with
    Random-projection Quantizer for Speech Recognition" (ICML 2022), section 3.1.
    Public code: none by the authors; the third-party
    vector-quantize-pytorch ``random_projection_quantizer.py``
    (``RandomProjectionQuantizer``, v1.32) is the comparison in the tests.

    ``x = standardize(z)`` (zero mean, unit variance over the token's channels);
    ``y = l2(x A)`` with ``A`` a ``(dim, codebook_dim)`` Xavier-uniform draw;
    index ``k = argmin_k ||l2(c_k) - y||`` (the largest cosine) over ``c_k ~ N(0, I)``.
    ``A`` and ``c`` are buffers, drawn once under the seed and saved with the
    state dict: nothing about the assignment is trained. No loss.

    Defaults and where they come from: ``codebook_dim = 16`` (the paper's 16-dim
    codebook); Xavier *uniform* (the paper says "Xavier initialization"; the
    uniform form is Glorot and Bengio's; vector-quantize-pytorch draws it normal);
    ``normalize_input = True`` (the paper normalizes its input to mean 0, std 1 to
    keep the projection from collapsing onto few codes).

    Deviations: BEST-RQ uses the indices only as prediction targets; the harness
    needs ``z_q`` in latent space. So ``z_q = project_out(y + sg(l2(c_k) - y))``: the
    straight-through copy in the unit sphere of the projection, read out by a
    learned ``Linear(codebook_dim, dim)`` (in effect the decoder's first layer; the
    only trained weights, and they never change which code a token gets). The input
    standardization is per token (as vector-quantize-pytorch's LayerNorm without
    affine), where the paper normalizes features over its speech data.
    """

    name = "best-rq"
    paper = "Chiu et al. 2022, Self-supervised Learning with Random-projection Quantizer (BEST-RQ)"

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int = 16,
                 normalize_input: bool = True) -> None:
        super().__init__(dim, codebook_size)
        if codebook_dim < 1:
            raise ValueError(f"best-rq: codebook_dim must be >= 1, got {codebook_dim}")
        self.codebook_dim = int(codebook_dim)
        self.normalize_input = bool(normalize_input)
        projection = nn.init.xavier_uniform_(torch.empty(dim, codebook_dim))
        self.register_buffer("projection", projection)
        self.register_buffer("codes", torch.randn(codebook_size, codebook_dim))
        self.project_out = nn.Linear(codebook_dim, dim)

    def unit_codes(self) -> Tensor:
        """The codebook on the unit sphere, ``(K, codebook_dim)``."""
        return F.normalize(self.codes, dim=-1)

    def project(self, z: Tensor) -> Tensor:
        """``l2(standardize(z) A)``: the token on the projection's unit sphere."""
        if self.normalize_input:
            z = F.layer_norm(z, (z.shape[-1],))
        return F.normalize(z @ self.projection, dim=-1)

    def codebook(self) -> Tensor:
        """Each code's latent vector, ``(K, D)``: the read-out of its unit code."""
        return self.project_out(self.unit_codes())

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        y = self.project(z)
        codes = self.unit_codes()
        indices = largest_cosine(y.detach(), codes)
        y_q = y + (codes[indices] - y).detach()
        return QuantizeOutput(z_q=self.project_out(y_q), indices=indices, loss=z.new_zeros(()))
