"""CVQ-VAE (Zheng & Vedaldi 2023): an online clustered codebook; rarely used codes move to encoder features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import DEFAULT_BLOCK_BYTES, all_reduce_sum_, broadcast_, code_counts

DISTANCES = ("cos", "l2")
ANCHORS = ("closest", "random", "probrandom")
#: the temperature of the authors' contrastive term (``/ 0.07`` in ``quantise.py``)
CONTRAST_TEMPERATURE = 0.07


def similarity(z: Tensor, codes: Tensor, distance: str) -> Tensor:
    """``(N, K)`` closeness, larger is closer: cosine, or minus the squared distance (the authors' ``d``).

    The same float32 expression as theirs, term for term: codes re-anchored onto one
    feature are near-duplicates whose similarities differ by rounding alone, so any
    other formula (a centred distance, a different sum order) picks other codes.
    """
    if distance == "cos":
        return F.normalize(z, dim=1) @ F.normalize(codes, dim=1).t()
    return -z.pow(2).sum(1, keepdim=True) - codes.pow(2).sum(1) + 2 * (z @ codes.t())


def sort_argmax(x: Tensor, dim: int) -> Tensor:
    """``argmax`` along ``dim`` with exact ties settled as the authors settle them.

    They take the last entry of an ascending ``x.sort(dim)``. Among equal maxima that
    is the highest index only when the sort is stable, which ``torch.sort`` does not
    promise (on CPU, beyond 16 entries, tied entries come out in an order that depends
    on the whole row). So where a row has one maximum it is ``argmax``; where it has
    several (the first and the last maximal index differ), that row alone is sorted as
    theirs is, which gives their pick on the same device and torch version: a row's
    sort does not depend on the other rows (checked on CPU, rows and columns alike).
    Re-anchoring makes exactly equal codes, so
    these ties are not rare: they decide which duplicate a token uses, and with it
    which one is re-anchored next.
    """
    moved = x.movedim(dim, -1)
    first = moved.argmax(-1)
    last = moved.shape[-1] - 1 - moved.flip(-1).argmax(-1)
    tied = first != last
    if bool(tied.any()):
        first[tied] = moved[tied].sort(dim=-1).indices[..., -1]
    return first


@torch.no_grad()
def closest_codes(z: Tensor, codes: Tensor, distance: str,
                  max_block_bytes: int = DEFAULT_BLOCK_BYTES) -> Tensor:
    """Each token's most similar code, ties settled as the authors' sort does, in ``(chunk, K)`` blocks."""
    n, k = z.shape[0], codes.shape[0]
    chunk = max(1, min(n, max_block_bytes // (4 * max(k, 1))))
    return torch.cat([sort_argmax(similarity(z[s : s + chunk], codes, distance), 1)
                      for s in range(0, n, chunk)])


def contrastive_loss(sim: Tensor, codebook_size: int) -> Tensor:
    """The authors' ``contras_loss``: each code's closest tokens against the batch's farthest half.

    Per code (a column of ``sim``, tokens sorted ascending by their very call, so tied
    entries fall where theirs do and take the same gradient): the positive is the
    mean of its ``max(1, N // K)`` largest similarities, the negatives its ``N // 2``
    smallest; cross-entropy of the positive among them at temperature 0.07, averaged
    over codes. Its gradient reaches the codes only (the tokens enter detached).
    """
    n = sim.shape[0]
    ordered = sim.sort(dim=0).values
    positive = ordered[-max(1, int(n / codebook_size)):].mean(0, keepdim=True)
    logits = torch.cat([positive, ordered[: int(n / 2)]], 0).t() / CONTRAST_TEMPERATURE
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=sim.device))


@torch.no_grad()
def anchor_rows(z: Tensor, codes: Tensor, distance: str, anchor: str,
                max_block_bytes: int = DEFAULT_BLOCK_BYTES) -> Tensor:
    """For each code, the row of ``z`` chosen as its anchor: ``(K,)`` indices into ``z``.

    ``closest``: the token most similar to the code (the authors' ``d.sort(dim=0)``,
    last row; a code whose best similarity several tokens share has its column sorted
    as theirs, see :func:`sort_argmax`). ``probrandom``: a token drawn from ``softmax``
    over tokens of the code's similarities (their ``multinomial(softmax(d.t()))``), drawn here by the
    Gumbel-max trick so that tokens can be scanned in chunks: ``(chunk, K)`` at a
    time, never the ``(N, K)`` matrix.
    """
    n, k = z.shape[0], codes.shape[0]
    chunk = max(1, min(n, max_block_bytes // (4 * max(k, 1))))
    best = torch.full((k,), -torch.inf, device=z.device)
    rows = torch.zeros(k, dtype=torch.long, device=z.device)
    ties = torch.zeros(k, dtype=torch.bool, device=z.device)
    for start in range(0, n, chunk):
        score = similarity(z[start : start + chunk], codes, distance)
        if anchor == "probrandom":
            u = torch.rand_like(score).clamp_min_(torch.finfo(score.dtype).tiny)
            score = score - torch.log(-torch.log(u))
        value, row = score.max(0)
        if anchor == "closest":
            twice = row != score.shape[0] - 1 - score.flip(0).argmax(0)  # within this chunk
            ties = torch.where(value > best, twice, ties | (value == best))
        better = value > best
        best = torch.where(better, value, best)
        rows = torch.where(better, row + start, rows)
    if bool(ties.any()):  # settled by the whole column's sort, as theirs
        rows[ties] = sort_argmax(similarity(z, codes[ties], distance), 0)
    return rows


@torch.no_grad()
def pool_query(pool: Tensor, count: int, z: Tensor) -> int:
    """The authors' ``FeaturePool.query``: store the batch's features in ``pool`` in place; the new count.

    While the pool is filling (``count < K``) a batch larger than the pool replaces it
    with ``K`` tokens drawn with replacement, a smaller one is appended; once full, a
    larger batch replaces it the same way and a smaller one overwrites ``N`` rows chosen
    by a random permutation. The draws are theirs (``torch.randint``/``torch.randperm``
    on the CPU generator, in their order). Deviation: a batch that overflows the
    filling pool fills the rows left (their slice assignment raises there).
    """
    k, n = pool.shape[0], z.shape[0]
    if n > k:
        pool.copy_(z[torch.randint(0, n, (k,)).to(z.device)])
        return k
    if count < k:
        fit = min(n, k - count)
        pool[count : count + fit] = z[:fit]
        return count + fit
    pool[torch.randperm(k)[:n].to(z.device)] = z
    return count


class CVQ(Quantizer):
    """CVQ-VAE: nearest code (cosine by default), VQ loss, and online re-anchoring of unused codes.

    Paper: Zheng & Vedaldi 2023, "Online Clustered Codebook" (ICCV 2023; arXiv
    2307.15139). Public code: lyndonzheng/CVQ-VAE ``quantise.py``
    (``VectorQuantiser``, ``FeaturePool``); defaults from its ``main.py`` arguments.

    * Nearest code: ``distance = "cos"`` (their default) picks the code of highest
      cosine to ``z`` (tokens and codes l2-normalized for the search only);
      ``"l2"`` the nearest in Euclidean distance. Both are their similarity ``d``
      computed as theirs (:func:`similarity`), and exact ties are settled by their
      ``sort`` (:func:`sort_argmax`; the highest index where the sort is stable, as on
      CPU up to 16 codes, its own order otherwise). Re-anchoring makes
      near-duplicate (often exactly equal) codes whose similarities differ by float rounding, so these
      near-ties are constant: the same float32 formula is what keeps a run in
      lockstep with theirs past the first re-anchoring. ``z_q`` is the raw code
      ``e_k`` with straight-through.
    * Loss: ``beta mse(z, sg(e)) + mse(e, sg(z))``, ``beta = 0.25``.
    * In training, after the loss: a running average of code usage
      ``p_k <- g p_k + (1 - g) n_k / N`` (``g = decay = 0.99``), then each code moves
      toward an anchor feature, ``e_k <- (1 - a_k) e_k + a_k f_k`` with
      ``a_k = exp(-p_k K 10 / (1 - g) - 1e-3)``: a code in use (``p_k`` near
      ``1/K``) has ``a_k`` about ``exp(-1000)``, a never-used one about 0.999.
      ``anchor = "closest"`` (their ``main.py`` default): ``f_k`` is the batch feature most
      similar to code ``k``; ``"probrandom"`` (their class default): a feature drawn
      with probability ``softmax`` over the batch of its similarity to the code;
      ``"random"``: row ``k`` of a pool of past features (their ``FeaturePool`` of
      ``K`` rows, starting uniform in ``(-1/K, 1/K)``, updated by each training batch
      as :func:`pool_query`; a buffer, so a resumed run keeps it).
    * ``contrastive = True`` (their ``--contras_loss``, off by default there, their
      Table 3): adds :func:`contrastive_loss` in training, each code's mean similarity
      to its ``N // K`` closest tokens against the ``N // 2`` farthest, temperature
      0.07. As in their code it is computed from the similarities taken before the
      codes move, and its backward reads the codes after re-anchoring (their
      ``weight.data`` assignment, our in-place copy: both change the codes under the
      graph). It needs the whole ``(N, K)`` similarity matrix and its sort.
    * Codes start uniform in ``(-1/K, 1/K)`` (their init).

    Choices (not in the paper or code): the offline ``first_batch`` variant is not
    offered. Under DDP usage counts are summed over ranks and the anchors (and the
    ``random`` pool) are rank 0's (copied to every rank), so ranks keep one codebook;
    the contrastive term is per rank. The authors train on one GPU. The
    ``closest``/``probrandom`` anchors are found in ``(chunk, K)`` blocks
    (``probrandom`` by the Gumbel-max trick, the same distribution as their
    ``multinomial``), so large codebooks stay memory-bounded. The loss is computed
    before the codes move, as in their code, so the gradient step lands on the
    re-anchored codes. Two codes anchored to the same feature are equal until
    gradients separate them.
    """

    name = "cvq"
    paper = "Zheng & Vedaldi 2023, Online Clustered Codebook (CVQ-VAE), arXiv 2307.15139"

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, distance: str = "cos",
                 anchor: str = "closest", decay: float = 0.99, contrastive: bool = False) -> None:
        super().__init__(dim, codebook_size)
        if distance not in DISTANCES:
            raise ValueError(f"cvq: distance must be one of {list(DISTANCES)}, got {distance!r}")
        if anchor not in ANCHORS:
            raise ValueError(f"cvq: anchor must be one of {list(ANCHORS)}, got {anchor!r}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"cvq: decay must lie in [0, 1), got {decay}")
        self.beta, self.distance, self.anchor, self.decay = float(beta), distance, anchor, float(decay)
        self.contrastive = bool(contrastive)
        k = codebook_size
        if anchor == "random":
            self.register_buffer("pool", (torch.rand(k, dim) * 2 - 1) / k)
            self.register_buffer("pool_count", torch.zeros((), dtype=torch.long))
        self.embedding = nn.Parameter(torch.empty(k, dim).uniform_(-1.0 / k, 1.0 / k))
        self.register_buffer("embed_prob", torch.zeros(k))

    def codebook(self) -> Tensor:
        return self.embedding

    def search(self, z: Tensor) -> Tensor:
        return closest_codes(z, self.embedding.detach(), self.distance)

    @torch.no_grad()
    def anchors(self, z: Tensor) -> Tensor:
        """``(K, D)``: the feature each code moves toward, rank 0's."""
        if self.anchor == "random":
            self.pool_count.fill_(pool_query(self.pool, int(self.pool_count), z))
            return broadcast_(self.pool).clone()
        rows = anchor_rows(z, self.embedding.detach(), self.distance, self.anchor)
        return broadcast_(z[rows].clone())

    @torch.no_grad()
    def reanchor(self, z: Tensor, indices: Tensor) -> Tensor:
        """Update the usage average and move each code toward its anchor; returns the mixing weights."""
        counts = all_reduce_sum_(code_counts(indices, self.codebook_size))
        self.embed_prob.mul_(self.decay).add_(counts / counts.sum().clamp_min(1.0), alpha=1 - self.decay)
        anchors = self.anchors(z)
        weight = torch.exp(-(self.embed_prob * self.codebook_size * 10) / (1 - self.decay) - 1e-3)[:, None]
        self.embedding.data.copy_(self.embedding.detach() * (1 - weight) + anchors * weight)
        return weight

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        contrast = self.training and self.contrastive
        sim = similarity(z.detach(), self.embedding, self.distance) if contrast else None
        indices = sort_argmax(sim.detach(), 1) if sim is not None else self.search(z.detach())
        e = F.embedding(indices, self.embedding)
        commitment_loss = F.mse_loss(z, e.detach())
        codebook_loss = F.mse_loss(e, z.detach())
        loss = self.beta * commitment_loss + codebook_loss
        logs: dict[str, Tensor | float] = {"commitment_loss": commitment_loss.detach(),
                                           "codebook_loss": codebook_loss.detach()}
        if self.training:
            weight = self.reanchor(z.detach(), indices)
            logs["codes_reanchored"] = (weight > 0.5).sum().float()
        if sim is not None:
            contrast_term = contrastive_loss(sim, self.codebook_size)
            loss = loss + contrast_term
            logs["contrastive_loss"] = contrast_term.detach()
        return QuantizeOutput(z_q=z + (e - z).detach(), indices=indices, loss=loss, logs=logs)
