"""The rotation trick (Fifty et al. 2024): a nearest-code VQ whose gradient is rotated, not copied."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import DEFAULT_BLOCK_BYTES, all_reduce_sum_, code_counts, nearest_code
from harness.plugins.quantizers.ema import ema_update

#: the authors' two code paths (docs/methods.md, ``rotation``)
PATHS = ("vqvae", "vqgan")


def rotate_to(z: Tensor, q: Tensor, eps: float = 1e-6, detach_norm: bool = True) -> Tensor:
    """``lam R z`` with ``R`` the rotation taking ``z``'s direction to ``q``'s; ``R`` and ``lam`` detached.

    ``u = z/(||z|| + eps)``, ``q_hat = q/(||q|| + eps)``, ``r = (u + q_hat)/||u + q_hat||``
    and ``R x = x - 2 (x.r) r + 2 (x.u) q_hat``. Its value is ``q`` (up to float
    rounding).

    * ``detach_norm=True`` (the authors' VQ-VAE code): ``lam = ||q|| / (||z|| + eps)``
      detached and ``R`` applied to ``z``: the gradient reaching ``z`` is ``lam R^T g``.
    * ``detach_norm=False`` (the authors' VQGAN code): ``R`` applied to ``z/||z||``,
      which keeps its gradient, times ``||q||`` detached: the gradient is
      ``lam (I - u u^T) R^T g``, the rotated gradient without its radial part.

    The eps placement is the authors' VQ-VAE code's (their VQGAN code has none);
    ``||u + q_hat||`` (no eps there, so ``u = -q_hat`` gives NaN) is clamped at
    ``eps`` instead.
    """
    with torch.no_grad():
        z_norm = z.norm(dim=1, keepdim=True) + eps
        q_norm = q.norm(dim=1, keepdim=True)
        u = z / z_norm
        q_hat = q / (q_norm + eps)
        w = u + q_hat
        r = w / w.norm(dim=1, keepdim=True).clamp_min(eps)
    if detach_norm:
        x, scale = z, q_norm / z_norm
    else:
        x, scale = z / (z.norm(dim=1, keepdim=True) + eps), q_norm
    x_dot_r = (x * r).sum(1, keepdim=True)
    x_dot_u = (x * u).sum(1, keepdim=True)
    return scale * (x - 2 * x_dot_r * r + 2 * x_dot_u * q_hat)


@torch.no_grad()
def max_cosine(x: Tensor, codes: Tensor, max_block_bytes: int = DEFAULT_BLOCK_BYTES) -> Tensor:
    """``argmax_k x_n . c_k`` for unit tokens and codes, the first index on ties.

    The authors' cosine lookup (vector-quantize-pytorch's ``CosineSimCodebook``: dot
    products, ``argmax``), not the Euclidean search: near-duplicate codes then pick the
    code theirs picks. Tokens go in ``(chunk, K)`` blocks, so memory stays bounded.
    """
    n, k = x.shape[0], codes.shape[0]
    chunk = max(1, min(n, max_block_bytes // (4 * max(k, 1))))
    return torch.cat([(x[s : s + chunk] @ codes.t()).argmax(1) for s in range(0, n, chunk)])


def kaiming_uniform_codes(codebook_size: int, dim: int) -> Tensor:
    """vector-quantize-pytorch's ``uniform_init``: kaiming-uniform on a ``(1, K, D)`` tensor.

    Its fan-in is ``K * D``, so codes are uniform in ``+-sqrt(6 / (K D))``.
    """
    codes = torch.empty(1, codebook_size, dim)
    nn.init.kaiming_uniform_(codes)
    return codes[0]


class RotationTrickVQ(Quantizer):
    """Rotation-trick VQ: nearest code; the encoder gradient is rotated onto the code's direction.

    Paper: Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation
    Trick" (ICLR 2025; arXiv 2410.06424). Public code: cfifty/rotation_trick. The
    nearest code ``q`` replaces ``z`` through ``lam R z`` (see :func:`rotate_to`)
    instead of the straight-through copy: the forward value is ``q``, the
    gradient reaching ``z`` is ``lam R^T g``. ``R`` and ``lam`` are constants, so
    the codebook gets no gradient through ``z_q``: it learns by EMA or by a
    codebook loss. The paper fixes neither; the authors' code has two paths:

    * ``path = "vqvae"`` (default; ``src/models/vq_vae.py`` with their copy of
      vector-quantize-pytorch's ``VectorQuantize``): codebook by EMA, ``decay =
      0.8``, Laplace smoothing ``eps = 1e-5``, statistics starting at zero counts
      with the running sums at the initial codes; codes kaiming-uniform
      (``+-sqrt(6 / (K D))``); loss ``beta * mse(z, sg(e))``, ``beta = 1.0``
      (their ``--commit_weight`` default); the norm is detached (``lam``).
      As in their code, a code no token has chosen keeps a zero count, so
      smoothing divides its decaying sum by about ``eps``: such codes jump far
      from the data and drift back as ``0.8^t``. We keep it: their results come from it.
    * ``path = "vqgan"`` (``exp_weights_and_configs/table_3/rot_vqgan.py`` on
      taming's ``VectorQuantizer2``, ``legacy=True``): codebook trained by
      gradient, loss ``beta * mse(z, sg(e)) + codebook_weight * mse(e, sg(z))``
      with ``beta = 1.0``, ``codebook_weight = 0.25`` (taming's weighting), codes
      uniform in ``(-1/K, 1/K)`` (taming); ``R`` is applied to ``z/||z||`` whose
      gradient is kept, so the radial part of the gradient is lost.

    ``cosine = True`` (off by default: their ``--codebook`` argument defaults to
    ``euclidean``) is the cosine codebook of their ImageNet runs (``src/scripts.sh``,
    ``--codebook cosine``, on the ``vqvae`` path of ``src/models/vq_vae.py`` with their
    copy's ``CosineSimCodebook``). The token is l2-normalised with its gradient kept,
    ``x = z/||z||`` (their model does it before the lookup, "as ViT-VQGAN"); codes
    start as unit kaiming-uniform rows and are re-normalised after every EMA step
    (which averages the normalised ``x``); the code is ``argmax_k x.e_k``; the
    commitment loss is ``beta mse(x, sg(e))``; ``lam R x`` is normalised once more,
    gradient kept, so ``z_q`` is a unit vector and the gradient reaching ``z`` is
    ``lam/||z|| (I - x x^T) R^T g``: the rotated gradient without its radial part.
    Deviations there: ``||z||`` and ``||lam R x||`` are clamped at ``eps`` (theirs
    divide by the bare norm: ``z = 0`` gives NaN); their second normalisation of the
    already-unit ``x`` (vector-quantize-pytorch's ``transform_input``) is left out
    (it moves ``x`` by float rounding only); the ``LayerNorm`` after their input
    projection belongs to the model, not the quantizer. It changes nothing on the
    ``vqgan`` path, whose code has no cosine form, so asking for both is an error.

    ``decay`` belongs to the ``vqvae`` path and ``codebook_weight`` to the
    ``vqgan`` path: passing one to the other path is an error, never ignored.
    Choices the code leaves open: the commitment term is also computed in eval
    (their module returns 0 there) so eval losses are comparable; the forward value is
    pinned to ``q`` by adding ``sg(q - lam R z)`` (removes float rounding, same
    gradient). EMA statistics are summed over DDP ranks, as in ``ema``.
    """

    name = "rotation"
    paper = "Fifty et al. 2024, Restructuring Vector Quantization with the Rotation Trick"

    def __init__(self, dim: int, codebook_size: int, path: str = "vqvae", beta: float = 1.0,
                 decay: float | None = None, codebook_weight: float | None = None,
                 eps: float = 1e-6, cosine: bool = False) -> None:
        super().__init__(dim, codebook_size)
        if path not in PATHS:
            raise ValueError(f"rotation: path must be one of {list(PATHS)}, got {path!r}")
        if cosine and path != "vqvae":
            raise ValueError("rotation: cosine is the authors' vqvae-path codebook (src/models/vq_vae.py, "
                             "--codebook cosine); their vqgan path has no cosine form")
        if path == "vqvae" and codebook_weight is not None:
            raise ValueError("rotation: codebook_weight belongs to path='vqgan' (the vqvae path trains "
                             "its codebook by EMA); set path='vqgan' or drop it")
        if path == "vqgan" and decay is not None:
            raise ValueError("rotation: decay belongs to path='vqvae' (the EMA codebook); "
                             "set path='vqvae' or drop it")
        self.path, self.beta, self.eps, self.cosine = path, float(beta), float(eps), bool(cosine)
        k = codebook_size
        if path == "vqvae":
            self.decay = 0.8 if decay is None else float(decay)
            if not 0.0 <= self.decay < 1.0:
                raise ValueError(f"rotation: decay must lie in [0, 1), got {self.decay}")
            codes = kaiming_uniform_codes(k, dim)
            if self.cosine:
                codes = F.normalize(codes, dim=1)
            self.register_buffer("embedding", codes)
            self.register_buffer("cluster_size", torch.zeros(k))
            self.register_buffer("embed_sum", codes.clone())
        else:
            self.codebook_weight = 0.25 if codebook_weight is None else float(codebook_weight)
            self.embedding = nn.Parameter(torch.empty(k, dim).uniform_(-1.0 / k, 1.0 / k))

    def codebook(self) -> Tensor:
        return self.embedding

    @torch.no_grad()
    def ema_step(self, z: Tensor, indices: Tensor) -> None:
        """vector-quantize-pytorch's EMA step (Laplace ``eps = 1e-5``), statistics summed over ranks."""
        counts = all_reduce_sum_(code_counts(indices, self.codebook_size))
        sums = all_reduce_sum_(torch.zeros_like(self.embed_sum).index_add_(0, indices, z))
        codes = ema_update(self.cluster_size, self.embed_sum, counts, sums, self.decay, 1e-5)
        self.embedding.copy_(F.normalize(codes, dim=1) if self.cosine else codes)

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        if self.cosine:
            return self.quantize_cosine(z)
        indices = nearest_code(z.detach(), self.embedding.detach())
        e = F.embedding(indices, self.embedding)
        q = e.detach()
        commitment_loss = F.mse_loss(z, q)
        logs: dict[str, Tensor | float] = {"commitment_loss": commitment_loss.detach()}
        loss = self.beta * commitment_loss
        if self.path == "vqgan":
            codebook_loss = F.mse_loss(e, z.detach())
            loss = loss + self.codebook_weight * codebook_loss
            logs["codebook_loss"] = codebook_loss.detach()
        elif self.training:
            self.ema_step(z.detach(), indices)
        rotated = rotate_to(z, q, self.eps, detach_norm=self.path == "vqvae")
        z_q = rotated + (q - rotated).detach()
        return QuantizeOutput(z_q=z_q, indices=indices, loss=loss, logs=logs)

    def quantize_cosine(self, z: Tensor) -> QuantizeOutput:
        """The authors' ``--codebook cosine`` path: unit tokens and codes, output normalised again."""
        x = z / z.norm(dim=1, keepdim=True).clamp_min(self.eps)
        indices = max_cosine(x.detach(), self.embedding)
        q = F.embedding(indices, self.embedding)
        commitment_loss = F.mse_loss(x, q)
        if self.training:
            self.ema_step(x.detach(), indices)
        rotated = rotate_to(x, q, self.eps, detach_norm=True)
        unit = rotated / rotated.norm(dim=1, keepdim=True).clamp_min(self.eps)
        return QuantizeOutput(z_q=unit + (q - unit).detach(), indices=indices,
                              loss=self.beta * commitment_loss,
                              logs={"commitment_loss": commitment_loss.detach()})
