"""QINCo (2024): residual quantization whose later codebooks are generated from what is decoded so far."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import nearest_code
from harness.plugins.quantizers.codebook_tools import kmeans


class QINCoStep(nn.Module):
    """One stage after the first: a base codebook re-made for each token by an MLP of ``xhat``.

    ``f(c, xhat) = c' + sum of L residual blocks``, ``c' = c + W [c, xhat] + b``, each
    block ``u + W2 relu(W1 u)`` (no biases). The stage adds ``f(c_k, xhat)`` to ``xhat``.
    """

    def __init__(self, dim: int, codebook_size: int, blocks: int, hidden: int) -> None:
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim))
        self.concat = nn.Linear(2 * dim, dim)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, dim, bias=False))
            for _ in range(blocks))

    def generate(self, codes: Tensor, xhat: Tensor) -> Tensor:
        """``f(codes, xhat)`` row by row: ``codes`` and ``xhat`` of the same leading shape."""
        u = codes + self.concat(torch.cat((codes, xhat), dim=-1))
        for block in self.blocks:
            u = u + block(u)
        return u

    def candidates(self, xhat: Tensor) -> Tensor:
        """``(N, K, D)``: every code of this stage, generated for each token's ``xhat``."""
        n, k = xhat.shape[0], self.codebook.shape[0]
        base = self.codebook.unsqueeze(0).expand(n, -1, -1)
        return self.generate(base, xhat.unsqueeze(1).expand(-1, k, -1))


class QINCo(Quantizer):
    """QINCo: residual quantization with implicit neural codebooks, straight-through to the encoder.

    Paper: Huijben, Douze, Muckley, van Sloun and Verbeek 2024, "Residual Quantization with
    Implicit Neural Codebooks" (ICML 2024, arXiv 2401.14732). Public code:
    facebookresearch/Qinco, ``qinco_v1/model_qinco.py`` (``QINCo``, ``QINCoStep``) and
    ``qinco_v1/train_qinco.py`` (initialisation, loss).

    Encode (no gradient): stage 1 picks the nearest code of a plain codebook; stage ``m``
    generates all ``K`` candidates ``xhat + f_m(c_k, xhat)`` for the token's current
    ``xhat`` and picks the one nearest ``z`` (greedy, as the authors' ``encode``). Decode
    (with gradient): the same sums for the chosen codes. Indices ``(N, stages)``.

    Loss: ``sum_m mse(xhat_m, sg(z))``, the authors' training loss (sum over stages of the
    squared error after each stage, over ``N * D``), plus ``beta * mse(z, sg(xhat_M))``;
    ``z_q = z + sg(xhat_M - z)``.

    Defaults: ``stages = 8``, ``blocks = 4`` (their ``L``), ``hidden = 256`` (their ``h``)
    and ``K = 256`` in their scripts (``train_qinco.py`` arguments); codebooks ``N(0, 1)``
    and PyTorch's default ``Linear`` init (their modules'), then ``rq_init``: on the first
    training batch, every codebook becomes a greedy residual k-means (``kmeans_iters =
    10``) of the batch, as the authors copy a trained residual quantizer's codebooks in
    before training (faiss ``ResidualQuantizer``, beam 1 by default).

    Deviations: QINCo compresses fixed vectors, so its loss has no encoder to train; here
    ``z`` gets the straight-through gradient and a VQ-VAE commitment term with ``beta =
    0.25`` (our choice, VQ-VAE's weight; 0 turns it off). The residual k-means stands in
    for faiss's RQ training (no faiss dependency); their learning-rate schedule on
    validation loss is the suite's business; no IVF, low-rank or PQ variants.
    """

    name = "qinco"
    paper = "Huijben et al. 2024, QINCo"

    def __init__(self, dim: int, codebook_size: int, stages: int = 8, blocks: int = 4,
                 hidden: int = 256, beta: float = 0.25, rq_init: bool = True, kmeans_iters: int = 10) -> None:
        super().__init__(dim, codebook_size)
        if stages < 1 or blocks < 0 or hidden < 1:
            raise ValueError(f"qinco: need stages >= 1, blocks >= 0, hidden >= 1; got stages={stages}, "
                             f"blocks={blocks}, hidden={hidden}")
        self.beta, self.rq_init, self.kmeans_iters = float(beta), bool(rq_init), int(kmeans_iters)
        self.codebook0 = nn.Parameter(torch.randn(codebook_size, dim))
        self.steps = nn.ModuleList(QINCoStep(dim, codebook_size, blocks, hidden) for _ in range(stages - 1))
        self.register_buffer("initted", torch.tensor(not rq_init))

    @property
    def num_stages(self) -> int:
        return len(self.steps) + 1

    def codebook(self) -> None:
        """Implicit and per token: there is no single ``(K, D)`` codebook."""
        return None

    @torch.no_grad()
    def residual_kmeans(self, z: Tensor) -> None:
        """Each codebook a k-means of the residual the previous plain codebooks leave (greedy RQ)."""
        residual = z.detach()
        for codes in [self.codebook0, *(step.codebook for step in self.steps)]:
            codes.copy_(kmeans(residual, self.codebook_size, self.kmeans_iters))
            residual = residual - codes[nearest_code(residual, codes)]
        self.initted.fill_(True)

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """Greedy codes ``(N, stages)``: at each stage the candidate nearest ``z``."""
        first = nearest_code(z, self.codebook0)
        xhat, codes = self.codebook0[first], [first]
        for step in self.steps:
            options = step.candidates(xhat) + xhat.unsqueeze(1)
            pick = ((options - z.unsqueeze(1)) ** 2).sum(-1).argmin(1)
            xhat = options[torch.arange(z.shape[0], device=z.device), pick]
            codes.append(pick)
        return torch.stack(codes, dim=1)

    def decode_stages(self, codes: Tensor) -> list[Tensor]:
        """``xhat`` after each stage, with gradient to every codebook and MLP."""
        xhat = F.embedding(codes[:, 0], self.codebook0)
        out = [xhat]
        for m, step in enumerate(self.steps, start=1):
            xhat = xhat + step.generate(F.embedding(codes[:, m], step.codebook), xhat)
            out.append(xhat)
        return out

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        if self.training and not bool(self.initted):
            self.residual_kmeans(z)
        codes = self.encode(z.detach())
        stages = self.decode_stages(codes)
        target = z.detach()
        stage_losses = [F.mse_loss(x, target) for x in stages]
        commitment = F.mse_loss(z, stages[-1].detach())
        loss = torch.stack(stage_losses).sum() + self.beta * commitment
        logs: dict[str, Tensor] = {f"stage{m}/mse": v.detach() for m, v in enumerate(stage_losses)}
        logs["commitment_loss"] = commitment.detach()
        return QuantizeOutput(z_q=z + (stages[-1] - z).detach(), indices=codes, loss=loss, logs=logs)
