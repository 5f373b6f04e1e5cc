"""SQ-VAE's reconstruction term: a Gaussian likelihood whose variance is set to its maximum-likelihood value."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from harness.contracts import Loss, QuantizeOutput


class GaussianMLE(Loss):
    """``(D_x / 2T) log(sum of squared errors per item)``: the ``rec`` term SQ-VAE trains with.

    Takida et al. 2022, "Preventing Posterior Collapse Induced by Oversmoothing in
    Gaussian VAE" (arXiv 2102.08663), as sony/sqvae ``vision/model.py`` uses it
    (``flg_arelbo``, on by default): the negative log-likelihood of ``x`` under
    ``N(x_hat, s^2 I)`` with ``s^2`` at its maximum-likelihood value ``mse / D_x``
    is ``D_x/2 log(mse) + const``, where ``mse`` is the squared error summed over
    an item's ``D_x`` elements and averaged over items. Its gradient is the
    squared-error gradient divided by ``2 s^2``: the weight of reconstruction
    grows as it improves, which keeps a stochastic quantizer's KL term from
    collapsing the posterior.

    The authors' latent terms are sums over an item's ``T`` tokens; the harness's
    quantizers report means over tokens, so this term is divided by ``T`` (read
    from the quantizer's indices) to keep the authors' balance between the two.
    ``eps = 1e-12`` inside the log guards a perfect reconstruction.
    """

    name = "gaussian-mle"
    paper = "Takida et al. 2022 (arXiv 2102.08663), SQ-VAE's reconstruction term (sony/sqvae)"
    term = "rec"

    def terms(self, state: Any, x: Tensor, x_hat: Tensor, out: QuantizeOutput) -> dict[str, Tensor]:
        items = x.shape[0]
        tokens_per_item = max(1, out.indices.shape[0] // max(items, 1))
        sum_sq = (x_hat - x).pow(2).sum() / items
        dim_x = x[0].numel()
        return {"rec": dim_x / (2 * tokens_per_item) * torch.log(sum_sq + 1e-12)}
