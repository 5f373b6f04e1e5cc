"""Rescale a quantizer's initial codebook: a declared option for a regime its authors' init does not fit."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.contracts import Schedule


class CodebookInitScale(Schedule):
    """Multiplies the stored codebook by ``scale`` once, before the first step.

    A method keeps its authors' initialisation by default (IBQ: ``N(0, 1)``
    codes). When a cell's diagnosis (``harness diagnose``) shows codes far
    longer than the encoder's first latents (IBQ on digits: 11x), this schedule,
    named in the suite or with ``--set``, starts the same method from
    ``scale`` times its codebook (``N(0, scale^2)`` for IBQ), so the choice is
    recorded in the run's config and never a changed default. A resumed cell
    keeps its checkpointed codebook (the hook runs at step 0 only).

    Only a codebook the quantizer trains as a parameter is scaled: an EMA
    codebook (its running sums would no longer match) or a derived one (a
    projection of frozen codes) is refused with the reason.
    """

    name = "codebook-init-scale"

    def __init__(self, scale: float = 1.0) -> None:
        if not scale > 0:
            raise ValueError(f"codebook-init-scale: scale must be positive, got {scale!r}")
        self.scale = float(scale)

    def on_train_start(self, state: Any) -> None:
        quantizer = state.quantizer
        codes = quantizer.codebook() if callable(getattr(quantizer, "codebook", None)) else None
        if not isinstance(codes, nn.Parameter):
            kind = "has no codebook" if codes is None else "has no codebook stored as a trained parameter"
            raise ValueError(f"codebook-init-scale: quantizer {type(quantizer).__name__} {kind} "
                             "(EMA, derived or implicit codes): scaling it would not be its initialisation")
        with torch.no_grad():
            codes.mul_(self.scale)
