"""Multi-scale residual VQ as VAR tokenizes: one code map per scale, one shared codebook, phi convs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import nearest_code


class Phi(nn.Conv2d):
    """``(1 - r) h + r conv3x3(h)``: VAR's refinement of each upsampled code map."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__(dim, dim, kernel_size=3, stride=1, padding=1)
        self.ratio = abs(ratio)

    def forward(self, h: Tensor) -> Tensor:
        return h * (1 - self.ratio) + super().forward(h) * self.ratio


def phi_choice(scale: int, scales: int, phis: int) -> int:
    """Which of ``phis`` shared convs scale ``scale`` of ``scales`` uses: the nearest of VAR's ticks."""
    ticks = np.linspace(1 / 3 / phis, 1 - 1 / 3 / phis, phis) if phis == 4 else \
        np.linspace(1 / 2 / phis, 1 - 1 / 2 / phis, phis)
    at = scale / (scales - 1) if scales > 1 else 0.0
    return int(np.argmin(np.abs(ticks - at)))


class MultiScaleVQ(Quantizer):
    """Multi-scale residual VQ: a code map per scale, each coding what the coarser ones missed.

    Paper: Tian, Jiang, Yuan, Peng and Wang 2024, "Visual Autoregressive Modeling: Scalable
    Image Generation via Next-Scale Prediction" (VAR, NeurIPS 2024; arXiv 2404.02905). Public
    code: FoundationVision/VAR, ``models/quant.py`` (``VectorQuantizer2.forward``, ``Phi``,
    ``PhiPartiallyShared``).

    Tokens arrive as ``(B * g * g, D)`` (the host flattens ``(B, D, g, g)`` maps row-major),
    ``g = scales[-1]``. With ``r = sg(f)``, ``f_hat = 0``, for each scale ``s`` (coarse to fine):
    area-downsample ``r`` to ``s x s``, take each cell's nearest code (one codebook for all
    scales), bicubic-upsample the code map to ``g x g``, pass it through a phi conv, add it to
    ``f_hat`` and subtract it from ``r``. Loss: the mean over scales of ``beta mse(sg(f_hat),
    f) + mse(f_hat, sg(f))`` (``f_hat`` so far); ``z_q = f + sg(f_hat - f)``.

    Indices ``(N, S)``: column ``s`` holds, for each grid token, the code of the scale-``s`` cell
    that covers it (repeated over the cell), so per-stage usage counts are area-weighted.
    Rate: an image carries ``sum_s s^2`` codes of ``log2 K`` bits, so ``bits_per_image =
    sum_s s^2 log2 K`` and ``bits_per_token = bits_per_image / g^2`` (per grid token, which is
    what the leaderboard multiplies by tokens per image); ``tokens_per_image = sum_s s^2``.

    Defaults: VAR's ``beta = 0.25``, ``quant_resi = 0.5`` (``phi_ratio``),
    ``share_quant_resi = 4`` (``shared_phi``: 4 convs, scale ``s`` of ``S`` takes the one whose
    tick is nearest ``s / (S - 1)``; with fewer scales than convs, the unused ones are not
    built), Euclidean codes (``using_znorm = False``), codebook
    ``N(0, 1)`` (``nn.Embedding``'s; VAR's training init is not public), Conv2d's default init.
    ``scales = (1, 2, 3, 4)``: VAR's ``(1, 2, 3, 4, 5, 6, 8, 10, 13, 16)`` ends at a 16 x 16
    map; the harness's small image models give 4 x 4, and VAR's scales up to 4 are these.

    Deviations: the residual ``r`` is detached (VAR's in-place ``f_rest -= h`` records a graph
    that no loss uses); the loss is computed in eval too; VAR's usage EMA is not kept.
    """

    name = "msvq"
    paper = "Tian et al. 2024, VAR"

    def __init__(self, dim: int, codebook_size: int, scales: Sequence[int] = (1, 2, 3, 4),
                 beta: float = 0.25, phi_ratio: float = 0.5, shared_phi: int = 4) -> None:
        super().__init__(dim, codebook_size)
        scales = tuple(int(s) for s in scales)
        if not scales or any(s < 1 for s in scales) or list(scales) != sorted(set(scales)):
            raise ValueError(f"msvq: scales must be increasing positive sizes, got {list(scales)}")
        if shared_phi < 1:
            raise ValueError(f"msvq: shared_phi must be >= 1, got {shared_phi}")
        self.scales, self.grid, self.beta = scales, scales[-1], float(beta)
        self.embedding = nn.Parameter(torch.randn(codebook_size, dim))
        choice = [phi_choice(i, len(scales), shared_phi) for i in range(len(scales))]
        used = sorted(set(choice))  # a conv no scale selects (fewer scales than convs) is not built
        self.phi_of = [used.index(c) for c in choice]
        self.phis = nn.ModuleList(
            Phi(dim, phi_ratio) if abs(phi_ratio) > 1e-6 else nn.Identity() for _ in used)

    @property
    def num_stages(self) -> int:
        return len(self.scales)

    @property
    def tokens_per_image(self) -> int:
        """Codes one image carries: ``sum_s s^2`` (not the grid's ``g^2``)."""
        return sum(s * s for s in self.scales)

    @property
    def bits_per_image(self) -> float:
        return self.tokens_per_image * math.log2(self.codebook_size)

    @property
    def bits_per_token(self) -> float:
        """Bits per grid token: ``bits_per_image / g^2``."""
        return self.bits_per_image / (self.grid * self.grid)

    def codebook(self) -> None:
        """Multi-scale: a token's value mixes several codes through upsampling and convs."""
        return None

    def to_maps(self, z: Tensor) -> Tensor:
        g = self.grid
        if z.shape[0] % (g * g):
            raise ValueError(f"msvq: {z.shape[0]} tokens are not whole {g} x {g} maps "
                             f"(scales {list(self.scales)} need a {g} x {g} token grid per image)")
        return z.reshape(-1, g, g, self.dim).permute(0, 3, 1, 2)

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        f = self.to_maps(z)
        b, g = f.shape[0], self.grid
        rest, f_hat = f.detach().clone(), torch.zeros_like(f)
        loss, columns = f.new_zeros(()), []
        for i, s in enumerate(self.scales):
            small = F.interpolate(rest, size=(s, s), mode="area") if s != g else rest
            idx = nearest_code(small.permute(0, 2, 3, 1).reshape(-1, self.dim), self.embedding.detach())
            h = F.embedding(idx.view(b, s, s), self.embedding).permute(0, 3, 1, 2)
            h = F.interpolate(h, size=(g, g), mode="bicubic") if s != g else h
            h = self.phis[self.phi_of[i]](h)
            f_hat = f_hat + h
            rest = rest - h.detach()
            loss = loss + self.beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f.detach())
            up = F.interpolate(idx.view(b, 1, s, s).float(), size=(g, g), mode="nearest").long()
            columns.append(up.reshape(-1))
        z_q = (f + (f_hat - f).detach()).permute(0, 2, 3, 1).reshape(-1, self.dim)
        indices = torch.stack(columns, 1) if len(columns) > 1 else columns[0]  # (N,) for one scale
        return QuantizeOutput(z_q=z_q, indices=indices, loss=loss / len(self.scales))
