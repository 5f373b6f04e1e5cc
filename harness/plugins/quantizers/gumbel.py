"""Gumbel-softmax VQ: a categorical sample over the codes instead of a nearest-code search."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer


def kl_to_uniform(logits: Tensor) -> Tensor:
    """Mean over tokens of ``KL(softmax(logits) || uniform) = sum_k q_k log(K q_k)``."""
    log_q = F.log_softmax(logits, dim=1)
    return (log_q.exp() * (log_q + math.log(logits.shape[1]))).sum(1).mean()


class GumbelQuantizer(Quantizer):
    """Gumbel-softmax VQ: a hard Gumbel sample over codes (straight-through), argmax in eval.

    Paper: Jang et al. 2017 / Maddison et al. 2017 (Gumbel-softmax), as used for
    image tokens by DALL-E (Ramesh et al. 2021) and taming-transformers'
    ``GumbelQuantize`` (docs/methods.md, ``gumbel``).

    Logits over the K codes come from a linear map D -> K (taming's 1x1 conv on
    a feature map is the same map per token). In training ``y`` is a hard
    one-hot Gumbel sample at temperature ``tau`` whose gradient is the soft
    sample's (straight-through); in eval ``y`` is the one-hot argmax of the
    logits, so evaluation is deterministic. ``z_q = y @ codebook``. The loss is
    ``kl_weight * KL(softmax(logits) || uniform)``.

    Defaults: ``tau = 1.0`` (taming's ``temp_init``; DALL-E anneals 1 -> 1/16, so
    ``tau`` is a plain attribute a schedule may change), ``kl_weight = 5e-4``
    (taming). Choices the sources leave open:

    * eval takes the argmax (our choice); taming instead keeps sampling in eval,
      which makes evaluation random;
    * the codebook starts N(0, 1), the ``nn.Embedding`` default taming's module
      keeps; the logit map keeps PyTorch's default ``nn.Linear`` init;
    * the KL term is computed in eval too (it is cheap), so eval losses are comparable.
    """

    name = "gumbel"
    paper = "Jang et al. 2017; taming-transformers GumbelQuantize (Esser et al. 2021)"

    def __init__(self, dim: int, codebook_size: int, tau: float = 1.0,
                 kl_weight: float = 5e-4) -> None:
        super().__init__(dim, codebook_size)
        if tau <= 0:
            raise ValueError(f"gumbel: tau must be positive, got {tau}")
        self.tau = float(tau)
        self.kl_weight = float(kl_weight)
        self.proj = nn.Linear(dim, codebook_size)
        self.embedding = nn.Parameter(torch.randn(codebook_size, dim))

    def codebook(self) -> Tensor:
        return self.embedding

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        if self.tau <= 0:
            raise ValueError(f"gumbel: tau must be positive, got {self.tau}")
        logits = self.proj(z)
        if self.training:
            y = F.gumbel_softmax(logits, tau=self.tau, hard=True, dim=1)
        else:
            y = F.one_hot(logits.argmax(1), self.codebook_size).to(logits.dtype)
        indices = y.detach().argmax(1)
        z_q = y @ self.embedding
        kl = kl_to_uniform(logits)
        return QuantizeOutput(
            z_q=z_q,
            indices=indices,
            loss=self.kl_weight * kl,
            logs={"kl": kl.detach(), "tau": self.tau},
        )
