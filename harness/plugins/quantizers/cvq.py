"""CVQ-VAE (Zheng & Vedaldi 2023): an online clustered codebook; rarely used codes move to encoder features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import DEFAULT_BLOCK_BYTES, all_reduce_sum_, broadcast_, code_counts, nearest_code

DISTANCES = ("cos", "l2")
ANCHORS = ("closest", "probrandom")


def similarity(z: Tensor, codes: Tensor, distance: str) -> Tensor:
    """``(N, K)`` closeness, larger is closer: cosine, or minus the squared distance (the authors' ``d``)."""
    if distance == "cos":
        return F.normalize(z, dim=1) @ F.normalize(codes, dim=1).t()
    return -(z.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * z @ codes.t())


@torch.no_grad()
def anchor_rows(z: Tensor, codes: Tensor, distance: str, anchor: str,
                max_block_bytes: int = DEFAULT_BLOCK_BYTES) -> Tensor:
    """For each code, the row of ``z`` chosen as its anchor: ``(K,)`` indices into ``z``.

    ``closest``: the token most similar to the code (the authors' ``d.sort(dim=0)``,
    last row). ``probrandom``: a token drawn from ``softmax`` over tokens of the
    code's similarities (their ``multinomial(softmax(d.t()))``), drawn here by the
    Gumbel-max trick so that tokens can be scanned in chunks: ``(chunk, K)`` at a
    time, never the ``(N, K)`` matrix.
    """
    n, k = z.shape[0], codes.shape[0]
    chunk = max(1, min(n, max_block_bytes // (4 * max(k, 1))))
    best = torch.full((k,), -torch.inf, device=z.device)
    rows = torch.zeros(k, dtype=torch.long, device=z.device)
    for start in range(0, n, chunk):
        score = similarity(z[start : start + chunk], codes, distance)
        if anchor == "probrandom":
            u = torch.rand_like(score).clamp_min_(torch.finfo(score.dtype).tiny)
            score = score - torch.log(-torch.log(u))
        value, row = score.max(0)
        better = value > best
        best = torch.where(better, value, best)
        rows = torch.where(better, row + start, rows)
    return rows


class CVQ(Quantizer):
    """CVQ-VAE: nearest code (cosine by default), VQ loss, and online re-anchoring of unused codes.

    Paper: Zheng & Vedaldi 2023, "Online Clustered Codebook" (ICCV 2023; arXiv
    2307.15139). Public code: lyndonzheng/CVQ-VAE ``quantise.py``
    (``VectorQuantiser``), whose argument defaults we follow.

    * Nearest code: ``distance = "cos"`` (their default) picks the code of highest
      cosine to ``z`` (tokens and codes l2-normalized for the search only);
      ``"l2"`` the nearest in Euclidean distance. ``z_q`` is the raw code
      ``e_k`` with straight-through.
    * Loss: ``beta mse(z, sg(e)) + mse(e, sg(z))``, ``beta = 0.25``.
    * In training, after the loss: a running average of code usage
      ``p_k <- g p_k + (1 - g) n_k / N`` (``g = decay = 0.99``), then each code moves
      toward an anchor feature, ``e_k <- (1 - a_k) e_k + a_k f_k`` with
      ``a_k = exp(-p_k K 10 / (1 - g) - 1e-3)``: a code in use (``p_k`` near
      ``1/K``) has ``a_k`` about ``exp(-1000)``, a never-used one about 0.999.
      ``anchor = "closest"`` (their default): ``f_k`` is the batch feature most
      similar to code ``k``; ``"probrandom"``: a feature drawn with probability
      ``softmax`` over the batch of its similarity to the code.
    * Codes start uniform in ``(-1/K, 1/K)`` (their init).

    Choices (not in the paper or code): the authors' ``random`` anchor (a pool of
    past features), the offline ``first_batch`` variant and the optional
    contrastive loss are not offered (off by default there too). Under DDP
    usage counts are summed over ranks and the anchors are rank 0's (copied to
    every rank), so ranks keep one codebook; the authors train on one GPU. The
    anchors are found in ``(chunk, K)`` blocks (``probrandom`` by the Gumbel-max
    trick, the same distribution as their ``multinomial``), so large codebooks
    stay memory-bounded. The loss is computed before the codes move, as in
    their code, so the gradient step lands on the re-anchored codes. Two codes
    anchored to the same feature are equal until gradients separate them; an
    exact tie goes to the lower index (their ``sort`` leaves the order unspecified).
    """

    name = "cvq"
    paper = "Zheng & Vedaldi 2023, Online Clustered Codebook (CVQ-VAE), arXiv 2307.15139"

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, distance: str = "cos",
                 anchor: str = "closest", decay: float = 0.99) -> None:
        super().__init__(dim, codebook_size)
        if distance not in DISTANCES:
            raise ValueError(f"cvq: distance must be one of {list(DISTANCES)}, got {distance!r}")
        if anchor not in ANCHORS:
            raise ValueError(f"cvq: anchor must be one of {list(ANCHORS)}, got {anchor!r}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"cvq: decay must lie in [0, 1), got {decay}")
        self.beta, self.distance, self.anchor, self.decay = float(beta), distance, anchor, float(decay)
        k = codebook_size
        self.embedding = nn.Parameter(torch.empty(k, dim).uniform_(-1.0 / k, 1.0 / k))
        self.register_buffer("embed_prob", torch.zeros(k))

    def codebook(self) -> Tensor:
        return self.embedding

    def search(self, z: Tensor) -> Tensor:
        codes = self.embedding.detach()
        if self.distance == "cos":
            return nearest_code(F.normalize(z, dim=1), F.normalize(codes, dim=1))
        return nearest_code(z, codes)

    @torch.no_grad()
    def reanchor(self, z: Tensor, indices: Tensor) -> Tensor:
        """Update the usage average and move each code toward its anchor; returns the mixing weights."""
        counts = all_reduce_sum_(code_counts(indices, self.codebook_size))
        self.embed_prob.mul_(self.decay).add_(counts / counts.sum().clamp_min(1.0), alpha=1 - self.decay)
        codes = self.embedding.detach()
        anchors = broadcast_(z[anchor_rows(z, codes, self.distance, self.anchor)].clone())
        weight = torch.exp(-(self.embed_prob * self.codebook_size * 10) / (1 - self.decay) - 1e-3)[:, None]
        self.embedding.data.copy_(codes * (1 - weight) + anchors * weight)
        return weight

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        indices = self.search(z.detach())
        e = F.embedding(indices, self.embedding)
        commitment_loss = F.mse_loss(z, e.detach())
        codebook_loss = F.mse_loss(e, z.detach())
        logs: dict[str, Tensor | float] = {"commitment_loss": commitment_loss.detach(),
                                           "codebook_loss": codebook_loss.detach()}
        if self.training:
            weight = self.reanchor(z.detach(), indices)
            logs["codes_reanchored"] = (weight > 0.5).sum().float()
        return QuantizeOutput(z_q=z + (e - z).detach(),
                              indices=indices, loss=self.beta * commitment_loss + codebook_loss, logs=logs)
