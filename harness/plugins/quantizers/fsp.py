"""FSP (finite scalar perturbation, VP-VAE 2026): FSQ's grid at eval, in-cell noise while training."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.plugins.quantizers.fsq import choose_levels

#: the standard deviation of U(0, 1), sqrt(1/12): FSP divides by it so codes have unit variance
UNIFORM_STD = 1.0 / math.sqrt(12.0)


class FSP(Quantizer):
    """FSP: map each channel to ``[0, 1]`` by ``(tanh + 1)/2``, cut it into ``L`` equal cells.

    Paper: Zhai, Ding, Lin, Zhao, Wang, Wang, Wang and Xi 2026, "VP-VAE: Rethinking
    Vector Quantization via Adaptive Vector Perturbation" (arXiv 2602.17133), its
    scalar variant FSP. Public code: zhai-lw/vp-vae, ``fsp/fsp.py`` (class ``FSP``)
    and ``fsp/cdf_act.py``.

    Per channel with ``L`` levels: ``a = (tanh(z) + 1)/2``; digit ``d = floor(min(a,
    1 - eps) L)``; the cell centre ``q = (d + 1/2)/L`` (the Lloyd-Max centroids of a
    uniform ``a``), straight-through to ``a``. Output ``(q - 1/2) / sqrt(1/12)``,
    unit variance for uniform ``a``. Index: digits packed with basis ``[1, L1, L1 L2,
    ...]`` (first channel least significant), as ``fsq``. No loss, no parameters.

    Training (the method): each element is, with probability ``1 - quantize_rate``,
    *perturbed* instead of quantized: ``a + u``, ``u ~ U(-1/(2L), 1/(2L))`` (the
    width of one cell), and kept at ``a`` when ``a + u`` leaves ``(0, 1)``; its
    gradient is the identity to ``a``. Training indices are the quantized digits
    (what eval would emit). Eval always quantizes. The accept rate is logged
    as ``perturb_accept``.

    Defaults, the authors' class defaults: ``quantize_rate = 0`` (training never
    quantizes), activation ``tanh``, no inverse activation (``need_inv_act =
    False``), no vector norm (``vector_norm = 'none'``: no loss), ``eps`` the float
    machine epsilon (their ``torch.finfo(dtype).eps``). Levels: ``levels`` when
    given, else the FSQ paper's table as ``fsq`` (2^8 -> [8,6,5], 2^10 -> [8,5,5,5],
    2^12 -> [7,5,5,5,5]): the authors' code takes any levels and the paper
    compares FSP with FSQ at FSQ's levels. ``dim != len(levels)`` adds the same
    ``Linear`` in and out as ``fsq``.

    Deviations: the other activations (sigmoid, normal, laplace, cauchy), the
    inverse activation and the moment-matching vector norms of the authors' code
    are not offered (off by default there).
    """

    name = "fsp"
    paper = "Zhai et al. 2026, VP-VAE (FSP)"

    def __init__(self, dim: int, codebook_size: int, levels: Sequence[int] | None = None,
                 quantize_rate: float = 0.0) -> None:
        chosen = choose_levels(codebook_size, levels)
        super().__init__(dim, math.prod(chosen))
        if not 0.0 <= quantize_rate <= 1.0:
            raise ValueError(f"fsp: quantize_rate must be in [0, 1], got {quantize_rate}")
        self.requested_codebook_size = int(codebook_size)
        self.levels, self.quantize_rate = chosen, float(quantize_rate)
        self.register_buffer("level_counts", torch.tensor(chosen, dtype=torch.float32), persistent=False)
        basis = torch.cumprod(torch.tensor([1, *chosen[:-1]], dtype=torch.long), 0)
        self.register_buffer("basis", basis, persistent=False)
        width = len(chosen)
        self.project_in: nn.Module = nn.Linear(dim, width) if dim != width else nn.Identity()
        self.project_out: nn.Module = nn.Linear(width, dim) if dim != width else nn.Identity()

    def digits(self, a: Tensor) -> Tensor:
        """Cell numbers ``floor(min(a, 1 - eps) L)`` of activations ``a`` in ``[0, 1]``."""
        eps = torch.finfo(a.dtype).eps
        return (a.clamp_max(1 - eps) * self.level_counts).floor()

    def perturbed(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """``a + u`` with ``u ~ U(-1/(2L), 1/(2L))``, ``a`` where that leaves ``(0, 1)``; and the accept mask."""
        proposal = a + (torch.rand_like(a) * 2 - 1) / (2 * self.level_counts)
        accept = (proposal > 0.0) & (proposal < 1.0)
        return torch.where(accept, proposal, a), accept

    def to_latent(self, q: Tensor) -> Tensor:
        """Cell values in ``[0, 1]`` to latent codes: ``(q - 1/2) / sqrt(1/12)``, then ``project_out``."""
        return self.project_out((q - 0.5) / UNIFORM_STD)

    def codebook(self) -> Tensor:
        """Every grid point in latent space, ``(prod(levels), D)``."""
        idx = torch.arange(self.codebook_size, device=self.basis.device)
        digits = torch.div(idx[:, None], self.basis, rounding_mode="floor") % self.basis.new_tensor(self.levels)
        return self.to_latent((digits.float() + 0.5) / self.level_counts)

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        a = (torch.tanh(self.project_in(z)) + 1) / 2
        digits = self.digits(a)
        q = a + ((digits + 0.5) / self.level_counts - a).detach()
        logs: dict[str, Tensor] = {}
        if self.training and self.quantize_rate < 1.0:
            moved, accept = self.perturbed(a)
            use_noise = torch.rand_like(q) > self.quantize_rate
            q = torch.where(use_noise, moved, q)
            logs["perturb_accept"] = accept.float().mean().detach()
        indices = (digits.long() * self.basis).sum(-1)
        return QuantizeOutput(z_q=self.to_latent(q), indices=indices, loss=z.new_zeros(()), logs=logs)
