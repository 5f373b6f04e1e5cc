"""Pixel reconstruction losses; both fill the ``rec`` term (so ``loss_weights["rec"]`` scales either)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from harness.contracts import Loss, QuantizeOutput


class MSE(Loss):
    """Mean squared error over all elements: the papers' ``rec`` term (Beyond Stationarity's protocol)."""

    name = "mse"
    term = "rec"

    def terms(self, state: Any, x: Tensor, x_hat: Tensor, out: QuantizeOutput) -> dict[str, Tensor]:
        return {"rec": F.mse_loss(x_hat, x)}  # one fused op: the loop's cost on a toy step


class L1(Loss):
    """Mean absolute error over all elements (taming's VQGAN pixel term)."""

    name = "l1"
    term = "rec"

    def terms(self, state: Any, x: Tensor, x_hat: Tensor, out: QuantizeOutput) -> dict[str, Tensor]:
        return {"rec": F.l1_loss(x_hat, x)}
