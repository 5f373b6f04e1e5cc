"""NS-VQ (Beyond Stationarity): kernel-weighted updates of non-selected codes and a modified straight-through."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import DEFAULT_BLOCK_BYTES, nearest_code, squared_distances

#: per-epoch factor of the kernel temperature: the public code, the paper's text
KERNEL_DECAYS = {"code": 0.5, "paper": 0.9}
VARIANTS = ("kernel-loss", "vq_new")


@torch.no_grad()
def kernel_weights(distances: Tensor, winner: Tensor, lam: float, tau: float,
                   winner_weight: float = 1.0) -> Tensor:
    """``c_nk``: ``winner_weight`` for the chosen code, ``lam K softmax_k(-d_nk / tau)`` for the others.

    Clipped to ``[0, 1]`` and detached (Beyond Stationarity, eq. 15-17; the public code).
    Each row is shifted by its minimum first (softmax is unchanged) and ``tau``
    is floored at ``1e-30`` (float32 range), so a late-training ``tau = 0.5^epoch``
    cannot produce ``inf / inf``; at that floor the weights are already one-hot
    for any distance gap above ``1e-28``.
    """
    k = distances.shape[1]
    shifted = distances - distances.min(dim=1, keepdim=True).values
    weights = torch.softmax(-shifted / max(tau, 1e-30), dim=1).mul_(lam * k)
    weights.scatter_(1, winner[:, None], winner_weight)
    return weights.clamp_(0.0, 1.0)


def kernel_embedding_loss(z: Tensor, codes: Tensor, lam: float, tau: float,
                          max_block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[Tensor, Tensor]:
    """``L_emb = (1/N) sum_n sum_k c_nk ||sg(z_n) - e_k||^2 / D`` and the winners, in bounded memory.

    Tokens are processed in chunks whose ``(chunk, K)`` distance block stays
    under ``max_block_bytes``. Because ``c`` is detached, the gradient of
    ``L_emb`` with respect to ``e_k`` only needs ``w_k = sum_n c_nk`` and
    ``m_k = sum_n c_nk z_n``: ``P = (sum_k w_k ||e_k||^2 - 2 e_k . m_k) / (N D)``
    has exactly that gradient, so the loss is returned as
    ``value + P - sg(P)`` (exact value, exact gradient, no ``(N, K)`` graph).
    """
    z = z.detach().float()
    n, dim = z.shape
    k = codes.shape[0]
    chunk = max(1, min(n, max_block_bytes // (4 * max(k, 1))))
    winners = torch.empty(n, dtype=torch.long, device=z.device)
    mass = torch.zeros(k, device=z.device)
    pull = torch.zeros(k, dim, device=z.device)
    value = torch.zeros((), device=z.device)
    with torch.no_grad():
        detached = codes.detach().float()
        for start in range(0, n, chunk):
            zc = z[start : start + chunk]
            d = squared_distances(zc, detached)
            win = d.argmin(1)
            c = kernel_weights(d, win, lam, tau)
            winners[start : start + zc.shape[0]] = win
            mass += c.sum(0)
            pull += c.t() @ zc
            value += (c * d).sum()
    scale = 1.0 / (n * dim)
    surrogate = ((mass * codes.pow(2).sum(1)).sum() - 2.0 * (codes * pull).sum()) * scale
    return value * scale + surrogate - surrogate.detach(), winners


def modified_ste(z: Tensor, e: Tensor, a: float) -> Tensor:
    """``z + a e + sg((1 - a) e - z)``: value ``e``; ``z`` gets the upstream gradient, ``e`` a times it."""
    return z + a * e + ((1.0 - a) * e - z).detach()


class NonStationaryVQ(Quantizer):
    """NS-VQ: kernel-weighted codebook loss over all codes plus a modified straight-through.

    "Beyond Stationarity" (sections 3.3 and 9-10); details from
    CAIR-LAB-WFUSM/NS-VQ-TransVQ ``NS_Trans_VQ_CelebA/models/vq_vae.py`` (the
    reference; its ImageNet port does not run as committed).

    In training, with squared distances ``d_nk`` and winner ``k*``:
    ``c_nk = 1`` for ``k*``, else ``clip(lam K softmax_k(-d_nk / tau_t), 0, 1)``,
    detached; ``L_emb = (1/N) sum_n sum_k c_nk ||sg(z_n) - e_k||^2 / D``;
    ``L_VQ = beta mse(sg(e_k*), z) + alpha L_emb``. The modified straight-through
    (``q_flag``) ``z_hat = z + a e_k* + sg((1 - a) e_k* - z)``, ``a = 2 alpha / (N D)``,
    gives the chosen code ``a`` times the decoder's gradient (delay-free update).
    In eval the kernel is off: ``L_emb`` is the plain codebook term.

    Defaults: ``beta = 0.25``, ``alpha = 1``, ``lam = 0.01`` (the public code),
    codes uniform in ``(-1/K, 1/K)`` (the public code).
    ``kernel_decay = "code"``: ``tau_t = 0.5^epoch`` (the public code, epoch from 0);
    ``"paper"``: ``tau_t = 0.9^epoch``. The paper's text says only that "the
    hyperparameter was initialized to 1 and decayed by a factor of 0.9 after each
    epoch"; the public code's config calls the decayed quantity the kernel
    variance and starts it at 1, so we read it as the same temperature. As
    ``tau`` shrinks the weights vanish and NS-VQ becomes vanilla VQ.
    ``tau_t`` advances in :meth:`on_epoch_end`; the epoch is a buffer (resumable).

    Temperature floor: the public code floors ``tau`` at ``1e-8`` (``get_decay_p``
    returns ``max(p, 1e-8)``), so from epoch 27 on (``0.5^27 = 7.5e-9``) its
    ``tau`` stays at ``1e-8``. It computes ``softmax(-d / tau)`` on raw
    distances: at ``tau = 1e-8`` the logits are about ``-1e8``, where float32's
    spacing is 8, so two codes whose distances differ by less than about ``1e-7``
    relative get equal logits and a near-tie can turn into a second weight-1 code
    (and with no floor, ``-d / tau`` overflows to ``-inf`` in every entry of a row,
    giving NaN). :func:`kernel_weights` subtracts each row's minimum first: the
    winner's logit is exactly 0 and the others keep the precision of the
    distance gap, so no floor is needed for accuracy or finiteness (``tau`` is
    only kept above ``1e-30`` against ``0.5^epoch`` underflowing to 0). Past
    epoch 27 the two differ only for codes within about ``1e-6`` of the winner's
    distance, whose weight ``exp(-gap / tau)`` is then negligible either way.

    ``variant = "vq_new"`` (appendix 10, the code's ``VQ_new``): the kernel
    acts through the straight-through instead of the loss: ``L_emb`` is the
    plain codebook term and ``z_hat`` also gets ``A - sg(A)``,
    ``A_n = sum_{k != k*} s_nk e_k``, so each unselected code receives ``s_nk``
    times the decoder's gradient. This variant holds the ``(N, K)`` weights.
    """

    name = "ns-vq"
    paper = "Beyond Stationarity (NS-VQ)"

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, alpha: float = 1.0,
                 lam: float = 0.01, kernel_decay: str = "code", modified_ste: bool = True,
                 variant: str = "kernel-loss") -> None:
        super().__init__(dim, codebook_size)
        if kernel_decay not in KERNEL_DECAYS:
            raise ValueError(f"kernel_decay must be one of {sorted(KERNEL_DECAYS)}, got {kernel_decay!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
        self.beta, self.alpha, self.lam = beta, alpha, lam
        self.kernel_decay, self.use_modified_ste, self.variant = kernel_decay, modified_ste, variant
        k = codebook_size
        self.embedding = nn.Parameter(torch.empty(k, dim).uniform_(-1.0 / k, 1.0 / k))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))

    @property
    def tau(self) -> float:
        """Kernel temperature ``tau_t = decay ** epoch``."""
        return KERNEL_DECAYS[self.kernel_decay] ** int(self.epoch)

    def on_epoch_end(self, epoch: int) -> None:
        self.epoch.fill_(epoch + 1)

    def codebook(self) -> Tensor:
        return self.embedding

    def embedding_loss(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``L_emb`` and the winners: kernel-weighted in training, the plain codebook term otherwise."""
        if self.training and self.variant == "kernel-loss" and self.lam > 0:
            return kernel_embedding_loss(z, self.embedding, self.lam, self.tau)
        indices = nearest_code(z.detach(), self.embedding.detach())
        return F.mse_loss(F.embedding(indices, self.embedding), z.detach()), indices

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        embedding_loss, indices = self.embedding_loss(z)
        e = F.embedding(indices, self.embedding)
        commitment_loss = F.mse_loss(z, e.detach())
        loss = self.beta * commitment_loss + self.alpha * embedding_loss
        if self.use_modified_ste:
            z_q = modified_ste(z, e, 2.0 * self.alpha / z.numel())
        else:
            z_q = z + (e - z).detach()
        if self.training and self.variant == "vq_new" and self.lam > 0:
            weights = kernel_weights(squared_distances(z.detach(), self.embedding.detach()), indices,
                                     self.lam, self.tau, winner_weight=0.0)
            push = weights @ self.embedding
            z_q = z_q + push - push.detach()
        logs: dict[str, Tensor | float] = {"embedding_loss": embedding_loss.detach(),
                                           "commitment_loss": commitment_loss.detach(),
                                           "kernel_tau": self.tau}
        return QuantizeOutput(z_q=z_q, indices=indices, loss=loss, logs=logs)
