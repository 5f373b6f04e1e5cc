"""SQ-VAE (Takida et al. 2022): a Gaussian stochastic quantizer whose learned variance anneals itself."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import DEFAULT_BLOCK_BYTES, squared_distances

#: bytes of one block's ``(block, K)`` logits (a few such tensors are alive per block)
BLOCK_BYTES = DEFAULT_BLOCK_BYTES // 4
#: the authors' Gumbel noise: -log(-log(U + eps) + eps)
GUMBEL_EPS = 1e-10


def gumbel_noise(shape: torch.Size, device: torch.device) -> Tensor:
    u = torch.rand(shape, device=device)
    return -torch.log(-torch.log(u + GUMBEL_EPS) + GUMBEL_EPS)


class SQVAE(Quantizer):
    """SQ-VAE, Gaussian quantizer: Gumbel-softmax over ``-||z - b_k||^2 / (2 s^2)`` in training, argmax in eval.

    Paper: Takida et al. 2022, "SQ-VAE: Variational Bayes on Discrete Representation
    with Self-annealed Stochastic Quantization" (ICML 2022). Public code:
    sony/sqvae ``vision/quantizer.py`` (``GaussianVectorQuantizer``, ``gaussian_1``:
    one learned scalar variance) and ``vision/model.py``.

    * Logits ``l_nk = -||z_n - b_k||^2 / (2 s^2)`` with the variance
      ``s^2 = 1 + exp(v)`` by default (their ``param_q = exp(log_var_q) + exp(log_param_q_scalar)``
      with ``log_var_q = 0`` for ``gaussian_1``), ``v`` a learned scalar.
    * Training: ``y = softmax((l + G) / t)`` with Gumbel noise ``G`` (a soft
      relaxed sample, no straight-through), ``z_q = y B``; the index is ``argmax y``.
      Eval: ``z_q = b_k`` for ``k = argmax l`` (their ``flg_quant_det``).
    * Loss (their ``kld_discrete + kld_continuous``, per token here):
      ``mean_n sum_k p_nk log p_nk + mean_n ||z_n - z_q,n||^2 / (2 s^2)``,
      ``p = softmax(l)``. As ``s^2`` is learned, the second term pulls it down as
      tokens and codes agree: the self-annealing of the title.
    * Temperature ``t = max(t0 exp(-r step), t_min)`` with the step counted from
      1 at the first training forward (their trainer), ``t0 = 1``, ``r = 1e-5``,
      ``t_min = 0`` (their defaults); the step is a buffer, so a resumed run continues it.
    * Codebook ``N(0, 1)``, ``v = log 10`` (their MNIST config; CIFAR-10's is
      ``log 20``, and their note says larger values suit larger code dimensions).
    * ``variance_offset = 1.0``: the ``exp(0)`` their ``gaussian_1`` adds, which
      floors ``s^2`` at 1; ``0`` makes ``s^2 = exp(v)`` a plain learned scalar.
      The floor is harmless at their scale (dim 64, codes ``N(0, 1)``: squared
      distances near 128) but not in a low-dimensional latent at unit scale.

    Pair it with the ``gaussian-mle`` loss, the authors' reconstruction term (the
    method's ``loss = ["gaussian-mle"]`` in a suite, as digits and toy2d do); in a
    latent at unit scale, start ``s`` below the codes' spacing.
    Measured on toy2d (K = 10, 2D latents at unit scale; eval utilization per
    seed): ``mse`` at the defaults collapsed the posterior to uniform (0.1, 0.1);
    ``gaussian-mle`` at the defaults too (0.3, 0.1); with ``log_var_init = -5``
    (0.1, 0.9); with ``variance_offset = 0, log_var_init = -4.6`` (0.8, 0.1, 0.6).
    On digits (K = 256, dim 8, the defaults; pages/digits.md): ``mse`` uses
    one code (PSNR 11.4 dB), ``gaussian-mle`` 47% of them (21.5 dB).

    Choices: the authors divide both terms by the number of images, i.e. sum
    over an image's tokens; the harness sees tokens only, so the loss is their
    value divided by the tokens per image. Their reconstruction term is a
    Gaussian log-likelihood (``dim_x/2 log mse``) that weighs itself; the
    harness's is its own (the suite's ``train.loss``), so the balance of the two
    terms differs from the paper's and is set by the suite's loss weights. Only
    ``gaussian_1`` is offered (``gaussian_2..4`` need a variance from the encoder).
    The index reported in training is the relaxed sample's argmax (their code
    reports none there); eval is deterministic (their ``flg_quant_det``, the
    model's default), not a draw from ``p``.
    Tokens are processed in blocks of bounded ``(block, K)`` logits, recomputed in
    the backward pass when there are several (their code holds all ``(N, K)`` at once).
    """

    name = "sqvae"
    paper = "Takida et al. 2022, SQ-VAE (ICML 2022)"

    def __init__(self, dim: int, codebook_size: int, log_var_init: float = math.log(10.0),
                 temperature: float = 1.0, temperature_decay: float = 1e-5,
                 temperature_min: float = 0.0, variance_offset: float = 1.0) -> None:
        super().__init__(dim, codebook_size)
        if temperature <= 0 or min(temperature_decay, temperature_min, variance_offset) < 0:
            raise ValueError("sqvae: temperature must be positive and temperature_decay, temperature_min, "
                             f"variance_offset non-negative, got {temperature}, {temperature_decay}, "
                             f"{temperature_min}, {variance_offset}")
        self.variance_offset = float(variance_offset)
        self.temperature0, self.temperature_decay = float(temperature), float(temperature_decay)
        self.temperature_min = float(temperature_min)
        self.embedding = nn.Parameter(torch.randn(codebook_size, dim))
        self.log_param_q = nn.Parameter(torch.tensor(float(log_var_init)))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def codebook(self) -> Tensor:
        return self.embedding

    def variance(self) -> Tensor:
        """``s^2 = offset + exp(v)`` (``gaussian_1``: offset 1), clamped at ``1e-10`` like theirs."""
        return (self.variance_offset + self.log_param_q.exp()).clamp_min(1e-10)

    def temperature(self) -> float:
        """The Gumbel-softmax temperature of the next training step."""
        step = int(self.step) + 1
        return max(self.temperature0 * math.exp(-self.temperature_decay * step), self.temperature_min)

    def token_block(self, z: Tensor, codes: Tensor, log_param_q: Tensor,
                    temperature: float | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One block of tokens: ``z_q``, indices and the two loss terms summed over the block.

        ``temperature`` is ``None`` in eval (argmax), the Gumbel-softmax temperature in training.
        """
        precision = 1.0 / (self.variance_offset + log_param_q.exp()).clamp_min(1e-10)
        logits = -0.5 * precision * squared_distances(z, codes)
        log_p = F.log_softmax(logits, dim=1)
        if temperature is not None:
            y = F.softmax((logits + gumbel_noise(logits.shape, logits.device)) / temperature, dim=1)
            z_q, indices = y @ codes, y.detach().argmax(1)
        else:
            indices = logits.detach().argmax(1)
            z_q = F.embedding(indices, codes)
        kld_discrete = (log_p.exp() * log_p).sum()
        kld_continuous = 0.5 * precision * (z - z_q).pow(2).sum()
        return z_q, indices, kld_discrete, kld_continuous

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``).

        Tokens go in blocks whose ``(block, K)`` logits stay under ``BLOCK_BYTES``;
        with several blocks each is recomputed in the backward pass (checkpointing,
        which replays the same Gumbel noise), so memory stays bounded for large ``K``.
        """
        n = z.shape[0]
        chunk = max(1, min(n, BLOCK_BYTES // (4 * self.codebook_size)))
        temperature = self.temperature() if self.training else None
        blocks = []
        for start in range(0, n, chunk):
            args = (z[start : start + chunk], self.embedding, self.log_param_q, temperature)
            if chunk < n and torch.is_grad_enabled():
                blocks.append(checkpoint(self.token_block, *args, use_reentrant=False))
            else:
                blocks.append(self.token_block(*args))
        z_q = torch.cat([b[0] for b in blocks])
        indices = torch.cat([b[1] for b in blocks])
        kld_discrete = sum(b[2] for b in blocks) / n
        kld_continuous = sum(b[3] for b in blocks) / n
        logs: dict[str, Tensor | float] = {"variance": self.variance().detach(),
                                           "kld_discrete": kld_discrete.detach(),
                                           "kld_continuous": kld_continuous.detach()}
        if self.training:
            self.step += 1
            logs["temperature"] = temperature
        return QuantizeOutput(z_q=z_q, indices=indices, loss=kld_discrete + kld_continuous, logs=logs)
