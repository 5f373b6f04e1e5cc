"""Latent quantization (QLAE): each latent channel snaps to the nearest of its own learned values."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.plugins.quantizers.fsq import LEVELS_FOR_SIZE
from harness.plugins.quantizers.residual_fsq import SMALL_LEVELS_FOR_SIZE


def qlae_levels(codebook_size: int, levels: Sequence[int] | None) -> tuple[int, ...]:
    """Explicit ``levels`` (values per latent), else the grid ``residual-fsq`` uses for ``codebook_size``."""
    table = {**SMALL_LEVELS_FOR_SIZE, **LEVELS_FOR_SIZE}
    if levels is None:
        if codebook_size not in table:
            raise ValueError(f"qlae: no grid for codebook_size {codebook_size}; sizes with one: "
                             f"{sorted(table)}, or pass levels=[...] (values per latent)")
        return table[codebook_size]
    out = tuple(int(v) for v in levels)
    if not out or any(v < 2 or v != lv for v, lv in zip(out, levels, strict=True)):
        raise ValueError(f"qlae: levels must be integers >= 2 (values per latent), got {list(levels)}")
    if math.prod(out) > codebook_size:
        raise ValueError(f"qlae: levels {list(out)} give {math.prod(out)} codes, more than "
                         f"codebook_size {codebook_size}")
    return out


class LatentQuantization(Quantizer):
    """QLAE: latent ``i`` takes the nearest of its ``L_i`` learned scalar values; straight-through.

    Paper: Hsu, Dorrell, Whittington, Wu and Finn 2023, "Disentanglement via Latent
    Quantization" (NeurIPS 2023). Public code: kylehkhsu/latent_quantization (JAX),
    ``disentangle/latents/quantized.py`` (``QuantizedLatent``) and
    ``disentangle/models/quantized_ae.py`` (its two losses).

    ``x = project_in(z)``; ``q_i = v_i[argmin_j |x_i - v_ij|]`` (ties: the first value);
    ``z_q = project_out(x + sg(q - x))``; loss ``quantization_weight mse(q, sg(x)) +
    commitment_weight mse(x, sg(q))`` (means over tokens and latents, as the authors'
    per-example means averaged over the batch). The values ``v_i`` learn only through
    the quantization term. The index packs the per-latent choices with basis
    ``[1, L_1, L_1 L_2, ...]`` (latent 0 the least significant digit, as ``fsq``).

    Defaults and where they come from: values initialised to ``linspace(-0.5, 0.5, L_i)``,
    ``quantization_weight = commitment_weight = 0.01`` and learned values
    (``optimize_values = True``): the authors' ``quantized_ae`` configs. Deviations:
    the authors use 10 values on each of ``2 x (number of factors)`` latents; the
    harness compares methods at equal rate, so the values per latent come from
    ``levels`` or, by default, the FSQ paper's grid for ``codebook_size`` (2^8 ->
    [8, 6, 5], 2^10 -> [8, 5, 5, 5], 2^12 -> [7, 5, 5, 5, 5]: 7.9, 10.0 and 12.1 bits;
    below 2^8 the power-of-two grids of ``residual-fsq``, e.g. 2^4 -> [4, 4]);
    when ``dim != len(levels)`` a ``Linear`` maps tokens to the latents and one maps
    them back (as vector-quantize-pytorch's ``LatentQuantize``), where the authors
    size the encoder's output instead; their AdamW weight decay (0.1) is an
    optimiser setting, left to the suite.
    """

    name = "qlae"
    paper = "Hsu et al. 2023, Disentanglement via Latent Quantization"

    def __init__(self, dim: int, codebook_size: int, levels: Sequence[int] | None = None,
                 quantization_weight: float = 0.01, commitment_weight: float = 0.01,
                 optimize_values: bool = True) -> None:
        chosen = qlae_levels(codebook_size, levels)
        super().__init__(dim, math.prod(chosen))
        self.levels = chosen
        self.quantization_weight = float(quantization_weight)
        self.commitment_weight = float(commitment_weight)
        self.optimize_values = bool(optimize_values)
        self.values = nn.ParameterList(
            nn.Parameter(torch.linspace(-0.5, 0.5, n), requires_grad=self.optimize_values) for n in chosen)
        basis = torch.cumprod(torch.tensor([1, *chosen[:-1]], dtype=torch.long), 0)
        self.register_buffer("basis", basis, persistent=False)
        width = len(chosen)
        self.project_in: nn.Module = nn.Linear(dim, width) if dim != width else nn.Identity()
        self.project_out: nn.Module = nn.Linear(width, dim) if dim != width else nn.Identity()

    def decode(self, indices: Tensor) -> Tensor:
        """Latent vectors ``(..., D)`` of the given indices."""
        digits = torch.div(indices[..., None], self.basis, rounding_mode="floor")
        digits = digits % torch.tensor(self.levels, device=indices.device)
        q = torch.stack([v[digits[..., i]] for i, v in enumerate(self.values)], dim=-1)
        return self.project_out(q)

    def codebook(self) -> Tensor:
        """Every combination of values mapped to latent space, ``(prod(levels), D)``."""
        return self.decode(torch.arange(self.codebook_size, device=self.basis.device))

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        x = self.project_in(z)
        digits = torch.stack([(x.detach()[:, i, None] - v.detach()).abs().argmin(-1)
                              for i, v in enumerate(self.values)], dim=-1)
        q = torch.stack([v[digits[:, i]] for i, v in enumerate(self.values)], dim=-1)
        quantization = F.mse_loss(q, x.detach())
        commitment = F.mse_loss(x, q.detach())
        loss = self.quantization_weight * quantization + self.commitment_weight * commitment
        z_q = self.project_out(x + (q - x).detach())
        return QuantizeOutput(z_q=z_q, indices=(digits * self.basis).sum(-1), loss=loss,
                              logs={"quantization_loss": quantization.detach(),
                                    "commitment_loss": commitment.detach()})
