"""Finite scalar quantization (Mentzer et al. 2023): round each bounded channel to a few levels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer

#: the paper's recommended levels per target codebook size (FSQ paper, section 4.1)
LEVELS_FOR_SIZE: dict[int, tuple[int, ...]] = {
    2**8: (8, 6, 5),
    2**10: (8, 5, 5, 5),
    2**12: (7, 5, 5, 5, 5),
    2**14: (8, 8, 8, 6, 5),
    2**16: (8, 8, 8, 5, 5, 5),
}

BOUND_EPS = 1e-3


def choose_levels(codebook_size: int, levels: Sequence[int] | None) -> tuple[int, ...]:
    """Explicit ``levels`` if given, else the paper's levels for ``codebook_size``.

    Raises ``ValueError`` naming the supported sizes when there is no table entry,
    and when explicit levels give more codes than ``codebook_size``.
    """
    if levels is None:
        if codebook_size not in LEVELS_FOR_SIZE:
            sizes = ", ".join(f"{k} (levels {list(v)})" for k, v in LEVELS_FOR_SIZE.items())
            raise ValueError(
                f"fsq: no published levels for codebook_size {codebook_size}; the paper's table "
                f"covers {sizes}. Use one of those sizes or pass levels=[...] explicitly "
                f"(their product is the number of codes and must be <= codebook_size)")
        return LEVELS_FOR_SIZE[codebook_size]
    out = tuple(int(v) for v in levels)
    if not out or any(v < 2 for v in out) or any(v != lv for v, lv in zip(out, levels, strict=True)):
        raise ValueError(f"fsq: levels must be a non-empty list of integers >= 2, got {list(levels)}")
    if math.prod(out) > codebook_size:
        raise ValueError(f"fsq: levels {list(out)} give {math.prod(out)} codes, more than "
                         f"codebook_size {codebook_size}")
    return out


def round_ste(x: Tensor) -> Tensor:
    """Round in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


def floor_ste(x: Tensor) -> Tensor:
    """Floor in the forward pass, identity in the backward pass."""
    return x + (torch.floor(x) - x).detach()


def symmetric_channels(levels: Sequence[int], symmetric_even: bool) -> tuple[bool, ...]:
    """Which channels use the symmetric form: every ``L = 2`` channel, every even one if asked."""
    return tuple(lv == 2 or (symmetric_even and lv % 2 == 0) for lv in levels)


class FSQCodec(nn.Module):
    """The parameter-free part of FSQ: bound, round, pack indices and unpack them.

    Channel ``i`` uses the paper's form, or the symmetric form where
    ``symmetric[i]`` (see :class:`FSQ`). Both give digits ``0 .. L-1`` and
    normalized codes ``(digit - c) / c`` with ``c = floor(L/2)`` (paper) or
    ``c = (L-1)/2`` (symmetric): the two agree for odd ``L``.
    """

    def __init__(self, levels: Sequence[int], symmetric: Sequence[bool] | None = None) -> None:
        super().__init__()
        symmetric = tuple(symmetric) if symmetric is not None else symmetric_channels(levels, False)
        if len(symmetric) != len(levels):
            raise ValueError(f"fsq: {len(symmetric)} symmetry flags for {len(levels)} levels")
        lv = torch.tensor(levels, dtype=torch.float64)
        sym = torch.tensor(symmetric, dtype=torch.bool)
        half_l = (lv - 1) * (1 - BOUND_EPS) / 2
        offset = torch.where(lv.remainder(2) == 0, 0.5, 0.0)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]], dtype=torch.long), 0)
        # constants, not state: rebuilt from ``levels`` so they stay out of the state dict
        self.register_buffer("levels", lv.long(), persistent=False)
        self.register_buffer("symmetric", sym, persistent=False)
        self.register_buffer("half_l", half_l.float(), persistent=False)
        self.register_buffer("offset", offset.float(), persistent=False)
        self.register_buffer("shift", torch.tan(offset / half_l).float(), persistent=False)
        self.register_buffer("half_width", (lv // 2).float(), persistent=False)
        self.register_buffer("centre", torch.where(sym, (lv - 1) / 2, lv // 2).float(), persistent=False)
        self.register_buffer("basis", basis, persistent=False)

    def bound(self, z: Tensor) -> Tensor:
        """The paper's ``tanh(z + shift) * h - offset``: ``L`` integers lie in its range, 0 maps to about 0.

        ``shift = tan(offset / h)`` is the official notebook's; an exact centring
        would use ``atanh``, the difference (``f(0) = -1.4e-5`` for ``L = 8``) never
        changes a rounded level.
        """
        return torch.tanh(z + self.shift) * self.half_l - self.offset

    def symmetric_digits(self, z: Tensor) -> Tensor:
        """The symmetric form's digits ``floor((L-1)(tanh(z) + 1)/2 + 1/2)`` (straight-through floor)."""
        return floor_ste((self.levels - 1) * (torch.tanh(z) + 1) / 2 + 0.5)

    def quantize(self, z: Tensor) -> Tensor:
        """Normalized codes: ``round(bound(z)) / floor(L/2)``, or ``digit / ((L-1)/2) - 1`` where symmetric."""
        paper = round_ste(self.bound(z)) / self.half_width
        if not bool(self.symmetric.any()):
            return paper
        symmetric = self.symmetric_digits(z) / self.centre - 1
        return torch.where(self.symmetric, symmetric, paper)

    def codes_to_indices(self, z_hat: Tensor) -> Tensor:
        """``sum_i (z_hat_i c_i + c_i) * b_i`` with ``b = [1, L1, L1 L2, ...]`` (``c_i`` as in the class doc)."""
        digits = torch.round(z_hat.detach() * self.centre + self.centre).long()
        return (digits * self.basis).sum(-1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Inverse of :meth:`codes_to_indices`: digit ``i`` is ``(index // b_i) mod L_i``."""
        digits = torch.div(indices[..., None], self.basis, rounding_mode="floor") % self.levels
        return (digits.float() - self.centre) / self.centre


class FSQ(Quantizer):
    """FSQ: bound each of a few channels, round it to L_i levels; implicit grid, no codebook loss.

    Paper: Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple"
    (official notebook: google-research/google-research ``fsq/fsq.ipynb``). ``f(z) = tanh(z + shift) h - offset``
    with ``h = (L - 1)(1 - 1e-3)/2``, ``offset = 0.5`` for even ``L`` else 0,
    ``shift = tan(offset / h)``; ``z_hat = round_ste(f(z)) / floor(L/2)``. The index
    packs the digits ``z_hat_i floor(L_i/2) + floor(L_i/2)`` with basis
    ``[1, L1, L1 L2, ...]`` (the first channel is the least significant digit).
    No auxiliary loss (the loss is 0) and no codebook parameters.

    Levels: ``levels`` when given (their product must be <= ``codebook_size``),
    else the paper's table: 2^8 -> [8,6,5] (240 codes), 2^10 -> [8,5,5,5] (1000),
    2^12 -> [7,5,5,5,5] (4375), 2^14 -> [8,8,8,6,5] (15360), 2^16 ->
    [8,8,8,5,5,5] (64000). ``codebook_size`` then reports the real number of
    codes, ``prod(levels)``, so utilization is measured against the real grid.
    Any other size is an error naming the supported ones: inventing levels the
    paper never tested would make a sweep's FSQ rows quietly non-comparable.

    Even levels: the paper's form puts no level at 0 for even ``L`` and its
    ``shift`` makes it asymmetric (``L = 8``: levels ``-4 .. 3`` over 4). At ``L = 2``
    that breaks down: the formula gives levels ``{-1, 0}`` with the boundary at
    ``z = -1.56``, not 0 (``h = 0.4995``, ``shift = tan(0.5 / h) = 1.56``); the paper
    never uses ``L = 2``. So every ``L = 2`` channel uses the symmetric form of
    arXiv 2411.19842, section 3.2 (vector-quantize-pytorch's ``preserve_symmetry``,
    which refuses ``L = 2`` without it): digit ``floor((L - 1)(tanh(z) + 1)/2 + 1/2)``, code
    ``digit / ((L-1)/2) - 1``, i.e. levels ``{-1, +1}`` split at ``z = 0`` for ``L = 2``.
    ``symmetric_even = True`` uses that form on every even channel (``L = 4``:
    ``{-1, -1/3, 1/3, 1}``); odd channels keep the paper's form, which the
    symmetric one equals up to the ``1e-3`` bound margin. The default keeps the
    paper's form for every ``L >= 3``, so the table's levels are the paper's.

    Projection: when ``dim != len(levels)`` a ``Linear(dim, len(levels))`` maps
    tokens into the grid and a ``Linear(len(levels), dim)`` maps codes back (both
    with bias), as the reference implementations do; the paper's own models set
    the encoder's output width to ``len(levels)`` instead.

    Option ``random_rotation`` (off by default, so ``fsq`` stays the paper's method):
    the projected token is multiplied by a random orthogonal ``R`` (``len(levels)``
    square, drawn once under the seed by QR of a Gaussian, ``nn.init.orthogonal_``;
    a saved buffer, never trained) before bounding and rounding, and the code by
    ``R^T`` after, so the grid is the paper's but turned at random: the incoherence
    processing of Chee et al. 2023, "QuIP: 2-Bit Quantization of Large Language
    Models With Guarantees", as vector-quantize-pytorch's ``FSQ(orthogonal_rotation=True)``
    applies it (v1.32, ``finite_scalar_quantization.py``), which recommends equal
    levels on every channel. Indices are the rotated grid's digits.
    """

    name = "fsq"
    paper = "Mentzer et al. 2023, Finite Scalar Quantization: VQ-VAE Made Simple"

    def __init__(self, dim: int, codebook_size: int, levels: Sequence[int] | None = None,
                 symmetric_even: bool = False, random_rotation: bool = False) -> None:
        chosen = choose_levels(codebook_size, levels)
        super().__init__(dim, math.prod(chosen))
        self.requested_codebook_size = int(codebook_size)
        self.levels = chosen
        self.symmetric_even = bool(symmetric_even)
        self.codec = FSQCodec(chosen, symmetric_channels(chosen, self.symmetric_even))
        width = len(chosen)
        self.project_in: nn.Module = nn.Linear(dim, width) if dim != width else nn.Identity()
        self.project_out: nn.Module = nn.Linear(width, dim) if dim != width else nn.Identity()
        self.random_rotation = bool(random_rotation)
        if self.random_rotation:
            self.register_buffer("rotation", nn.init.orthogonal_(torch.empty(width, width)))

    def unrotate(self, codes: Tensor) -> Tensor:
        """Codes back from the rotated grid (``codes R^T``); the identity without ``random_rotation``."""
        return codes @ self.rotation.t() if self.random_rotation else codes

    def decode(self, indices: Tensor) -> Tensor:
        """Latent vectors ``(..., D)`` of the given indices."""
        return self.project_out(self.unrotate(self.codec.indices_to_codes(indices)))

    def codebook(self) -> Tensor:
        """Every grid point mapped to latent space, ``(prod(levels), D)``."""
        return self.decode(torch.arange(self.codebook_size, device=self.codec.basis.device))

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        x = self.project_in(z)
        z_hat = self.codec.quantize(x @ self.rotation if self.random_rotation else x)
        indices = self.codec.codes_to_indices(z_hat)
        return QuantizeOutput(z_q=self.project_out(self.unrotate(z_hat)), indices=indices,
                              loss=z.new_zeros(()))
