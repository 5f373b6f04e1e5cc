"""The rotation trick (Fifty et al. 2024): a nearest-code VQ whose gradient is rotated, not copied."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import nearest_code


def rotate_to(z: Tensor, q: Tensor, eps: float = 1e-6) -> Tensor:
    """``lam R z`` with ``R`` the rotation taking ``z``'s direction to ``q``'s, all of it detached.

    ``u = z/||z||``, ``q_hat = q/||q||``, ``r = (u + q_hat)/||u + q_hat||``,
    ``lam = ||q|| / ||z||`` and ``R z = z - 2 (z.r) r + 2 (z.u) q_hat``. Its value is
    ``q`` (up to float rounding); its gradient with respect to ``z`` is
    ``lam R^T g``: the upstream gradient rotated back and rescaled. Norms are
    clamped at ``eps`` so ``z = 0`` or ``u = -q_hat`` give no NaN.
    """
    with torch.no_grad():
        z_norm = z.norm(dim=1, keepdim=True).clamp_min(eps)
        q_norm = q.norm(dim=1, keepdim=True).clamp_min(eps)
        u = z / z_norm
        q_hat = q / q_norm
        w = u + q_hat
        r = w / w.norm(dim=1, keepdim=True).clamp_min(eps)
        lam = q_norm / z_norm
    z_dot_r = (z * r).sum(1, keepdim=True)
    z_dot_u = (z * u).sum(1, keepdim=True)
    return lam * (z - 2 * z_dot_r * r + 2 * z_dot_u * q_hat)


class RotationTrickVQ(Quantizer):
    """Rotation-trick VQ: nearest code; the encoder gradient is rotated onto the code's direction.

    Paper: Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation
    Trick" (METHODS.md, "Rotation trick"). The nearest code ``q`` replaces ``z``
    through ``lam R z`` (see :func:`rotate_to`) instead of the straight-through
    copy: the forward value is ``q`` and the gradient reaching ``z`` is ``lam R^T g``.
    ``r``, ``u``, ``q_hat`` and ``lam`` are treated as constants, so the
    codebook gets no gradient through ``z_q``.

    Loss: ``codebook_weight * mse(e, sg(z)) + beta * mse(z, sg(e))``, the VQ-VAE
    codebook and commitment terms, which Fifty et al. keep to train the codebook.

    Defaults: ``beta = 0.25`` and ``codebook_weight = 1.0`` (VQ-VAE's values, the
    paper's VQ baseline); ``eps = 1e-6`` in the norms. Choices the paper leaves open:

    * the codebook is trained by the codebook loss, not EMA (the paper reports
      both; the loss keeps this plugin a one-line change from ``vq``);
    * codes start uniform in ``(-1/K, 1/K)`` like ``vq``, so the two differ only
      in the gradient path;
    * the forward value is pinned to ``q`` by adding ``sg(q - lam R z)``: it removes
      the float rounding of ``lam R z`` (and the ``z = 0`` corner) without changing
      the gradient.
    """

    name = "rotation"
    paper = "Fifty et al. 2024, Restructuring Vector Quantization with the Rotation Trick"

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25,
                 codebook_weight: float = 1.0, eps: float = 1e-6) -> None:
        super().__init__(dim, codebook_size)
        self.beta, self.codebook_weight, self.eps = float(beta), float(codebook_weight), float(eps)
        k = codebook_size
        self.embedding = nn.Parameter(torch.empty(k, dim).uniform_(-1.0 / k, 1.0 / k))

    def codebook(self) -> Tensor:
        return self.embedding

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        indices = nearest_code(z.detach(), self.embedding.detach())
        e = F.embedding(indices, self.embedding)
        codebook_loss = F.mse_loss(e, z.detach())
        commitment_loss = F.mse_loss(z, e.detach())
        q = e.detach()
        rotated = rotate_to(z, q, self.eps)
        z_q = rotated + (q - rotated).detach()
        return QuantizeOutput(
            z_q=z_q,
            indices=indices,
            loss=self.codebook_weight * codebook_loss + self.beta * commitment_loss,
            logs={"codebook_loss": codebook_loss.detach(),
                  "commitment_loss": commitment_loss.detach()},
        )
