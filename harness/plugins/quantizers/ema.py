"""EMA codebook (VQ-VAE appendix, VQ-VAE-2): codes are running means of their assigned tokens;
vector-quantize-pytorch's options (cosine codes, orthogonal regularizer, heads, stochastic
sampling, affine re-normalisation) off by default."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import all_reduce_sum_, code_counts
from harness.plugins.quantizers.codebook_tools import (
    DeadCodeTracker,
    assign_codes,
    default_reset_noise,
    gather_codes,
    kmeans,
    l2norm,
    merge_heads,
    orthogonal_loss,
    replacement_vectors,
    split_heads,
)
from harness.plugins.quantizers.vq import check_head_options


@torch.no_grad()
def ema_update(cluster_size: Tensor, embed_sum: Tensor, counts: Tensor, sums: Tensor,
               decay: float, eps: float) -> Tensor:
    """One EMA step in place; returns the new codebook ``m_k / N_k'``.

    ``N_k <- g N_k + (1-g) n_k``, ``m_k <- g m_k + (1-g) sum_k z``, then Laplace
    smoothing ``N_k' = (N_k + eps) / (n + K eps) * n`` with ``n = sum_k N_k``,
    which keeps a code with no assignments from dividing by zero. Statistics of several
    codebooks, ``(C, K)`` and ``(C, K, d)``, are smoothed per codebook.
    """
    cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
    embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
    n = cluster_size.sum(-1, keepdim=True)
    smoothed = (cluster_size + eps) / (n + cluster_size.shape[-1] * eps) * n
    return embed_sum / smoothed[..., None]


class EMAQuantizer(Quantizer):
    """EMA codebook: nearest code, straight-through, codes updated as running means (VQ-VAE-2).

    Papers: van den Oord et al. 2017, appendix A.1; Razavi et al. 2019
    (VQ-VAE-2); background in the VQ-VAE notes (docs/references.md). The codebook is not trained by
    gradients: each training step, with ``n_k`` tokens and their sum assigned
    to code ``k`` (summed over DDP ranks), ``N_k <- g N_k + (1-g) n_k``,
    ``m_k <- g m_k + (1-g) sum``, ``e_k = m_k / N_k'`` with Laplace smoothing
    ``N_k' = (N_k + eps) / (n + K eps) * n``. Loss ``beta * mse(z, sg(e))`` only.

    Defaults: ``decay = 0.99`` and ``beta = 0.25`` (the papers), ``eps = 1e-5``
    (Sonnet). The output uses the codes from before the step's update (Sonnet).

    Debiasing (not fixed by the papers; Sonnet debiases, VQ-VAE-2's and
    taming's code do not): we do not debias. Instead every code starts as if it
    had been seen once at its initial position, ``N_k = 1`` and ``m_k = e_k``:
    zero-initialised statistics without debiasing would divide a near-zero sum
    by ``eps`` for unused codes, and debiasing would pull every never-used code
    to zero. With one pseudo-count an unused code stays where it is and the
    initial bias fades as ``g^t`` (vector-quantize-pytorch starts the same way).
    Codes start uniform in ``(-1/K, 1/K)`` as in ``vq``.

    Options: ``kmeans_init`` (as in ``vq``; also sets ``N_k = 1, m_k = e_k``) and
    ``dead_code_reset`` (a window in steps, 0 = off; the countdown variant of
    ``vq``: a code unused that long over all ranks gets a batch vector plus
    noise of std ``reset_noise``, default ``0.01 / sqrt(D)``, and ``N_k = 1``).

    vector-quantize-pytorch's options (lucidrains, ``vector_quantize_pytorch/
    vector_quantize_pytorch.py``, ``VectorQuantize`` and ``Codebook``, whose codebook is
    this EMA one), all off by default and matched to it on identical inputs
    (docs/methods.md, ``ema``):

    * ``cosine_sim``: tokens l2-normalized before the lookup, the loss and the statistics;
      codes l2-normalized at the start and after every update (``e_k = l2norm(m_k / N_k')``).
      ``kmeans_init`` runs Euclidean k-means on the unit tokens and normalizes the centroids
      (theirs runs a spherical k-means).
    * ``orthogonal_reg_weight``: as in ``vq`` (Shin et al. 2021). As theirs, the codebook
      then becomes a parameter: the regulariser's gradient step moves the codes, and the next
      EMA update overwrites them with ``m_k / N_k'`` (the running sums do not see it), so
      it only shifts the next step's assignment. Faithful, but weak by construction.
    * ``heads``, ``separate_codebook_per_head``: as in ``vq``; statistics per codebook.
    * ``sample_temperature``: as in ``vq``; the EMA counts the sampled codes (theirs too).
    * ``affine_param`` (Huh et al. 2023, "Straightening Out the Straight-Through
      Estimator", section 5.2; their ``affine_param``): the codes tokens see are
      ``(e - mu_c) sigma_z / sigma_c + mu_z``, with running per-channel means and variances
      (biased) of the codebook (``affine_param_codebook_decay = 0.9``) and of the batches
      (``affine_param_batch_decay = 0.99``), their defaults; the first training batch sets
      them. The EMA statistics receive the tokens mapped back,
      ``(z - mu_z) sigma_c / sigma_z + mu_c``; sigmas are ``sqrt(max(var, 1e-5))``.
      Deviation: theirs also updates the batch statistics in eval forwards; here eval changes
      no state (the harness's contract). Under DDP the batch statistics are each rank's own,
      as theirs by default (``sync_affine_param = False``; the EMA sums are still all-reduced).
      Not with ``cosine_sim`` (theirs refuses it too).

    Not offered: the synchronized update (``vq``'s ``sync_nu``): it sends the decoder's
    gradient to the codes, and these codes take none (vector-quantize-pytorch refuses it
    without a learned codebook too).
    """

    name = "ema"
    paper = "Razavi et al. 2019, VQ-VAE-2; van den Oord et al. 2017 appendix"

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, decay: float = 0.99,
                 eps: float = 1e-5, kmeans_init: bool = False, kmeans_iters: int = 10,
                 dead_code_reset: int = 0, reset_noise: float | None = None, cosine_sim: bool = False,
                 orthogonal_reg_weight: float = 0.0, heads: int = 1, separate_codebook_per_head: bool = False,
                 sample_temperature: float = 0.0, affine_param: bool = False,
                 affine_param_batch_decay: float = 0.99, affine_param_codebook_decay: float = 0.9) -> None:
        super().__init__(dim, codebook_size)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        if dead_code_reset < 0:
            raise ValueError(f"dead_code_reset is a window in steps (0 = off), got {dead_code_reset}")
        check_head_options(dim, heads, separate_codebook_per_head, sample_temperature, orthogonal_reg_weight)
        if affine_param and cosine_sim:
            raise ValueError("affine_param and cosine_sim do not combine (normalizing undoes the affine map)")
        if not affine_param and (affine_param_batch_decay, affine_param_codebook_decay) != (0.99, 0.9):
            raise ValueError("affine_param_*_decay set without affine_param = true: it would not be read")
        self.beta, self.decay, self.eps = beta, decay, eps
        k = codebook_size
        self.heads, self.separate = int(heads), bool(separate_codebook_per_head)
        self.num_codebooks = self.heads if self.separate else 1
        self.cosine_sim, self.orthogonal_reg_weight = bool(cosine_sim), float(orthogonal_reg_weight)
        self.sample_temperature = float(sample_temperature)
        code_dim = dim // self.heads
        lead = (self.num_codebooks,) if self.separate else ()
        embedding = torch.empty(*lead, k, code_dim).uniform_(-1.0 / k, 1.0 / k)
        if cosine_sim:
            embedding = l2norm(embedding)
        if self.orthogonal_reg_weight > 0:
            self.embedding = nn.Parameter(embedding)
        else:
            self.register_buffer("embedding", embedding)
        self.register_buffer("cluster_size", torch.ones(*lead, k))
        self.register_buffer("embed_sum", embedding.clone())
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        if kmeans_init:
            self.register_buffer("initted", torch.zeros((), dtype=torch.bool))
        self.tracker = DeadCodeTracker(self.num_codebooks * k, dead_code_reset) if dead_code_reset else None
        self.reset_noise = default_reset_noise(dim) if reset_noise is None else reset_noise
        self.affine_param = bool(affine_param)
        self.affine_decays = (float(affine_param_batch_decay), float(affine_param_codebook_decay))
        if affine_param:
            stats = torch.zeros(self.num_codebooks, 1, code_dim)
            for name in ("batch_mean", "batch_variance", "codebook_mean", "codebook_variance"):
                self.register_buffer(name, stats.clone())
            self.register_buffer("affine_initted", torch.zeros((), dtype=torch.bool))

    @property
    def num_stages(self) -> int:
        return self.heads

    def stored(self) -> Tensor:
        """The stored codes as ``(C, K, d)`` (a view: writes reach the buffer)."""
        return self.embedding.data.view(self.num_codebooks, self.codebook_size, -1)

    def codes(self) -> Tensor:
        """The ``(C, K, d)`` codes tokens are compared with (affine-mapped when ``affine_param``)."""
        codes = self.embedding.view(self.num_codebooks, self.codebook_size, -1)
        if self.affine_param:
            codes = (codes - self.codebook_mean) * (self.std("batch") / self.std("codebook")) + self.batch_mean
        return codes

    def std(self, which: str) -> Tensor:
        return getattr(self, f"{which}_variance").clamp_min(1e-5).sqrt()

    def codebook(self) -> Tensor | None:
        """The ``(K, D)`` codes with one head; ``None`` with several (a code covers one chunk)."""
        return self.codes()[0].detach() if self.heads == 1 else None

    def tokens(self, z: Tensor) -> Tensor:
        """``(C, M, d)`` tokens as the codebooks see them (split into heads, normalized)."""
        x = split_heads(z, self.heads, self.separate)
        return l2norm(x) if self.cosine_sim else x

    @torch.no_grad()
    def set_codes(self, mask: Tensor, codes: Tensor) -> None:
        """Place codes as fresh running means: ``e_k = m_k = code``, ``N_k = 1`` (``mask`` over ``C K`` codes)."""
        if self.cosine_sim:
            codes = l2norm(codes)
        self.embedding.data.view(-1, codes.shape[-1])[mask] = codes
        self.embed_sum.view(-1, codes.shape[-1])[mask] = codes
        self.cluster_size.view(-1)[mask] = 1.0

    @torch.no_grad()
    def prepare_codebook(self, z: Tensor) -> dict[str, Tensor]:
        logs: dict[str, Tensor] = {}
        if self.kmeans_init and not bool(self.initted):
            x = self.tokens(z)
            found = torch.stack([kmeans(x[c], self.codebook_size, self.kmeans_iters) for c in range(x.shape[0])])
            everything = torch.ones(found.shape[0] * found.shape[1], dtype=torch.bool, device=z.device)
            self.set_codes(everything, found.reshape(-1, found.shape[-1]))
            self.initted.fill_(True)
        if self.tracker is not None:
            dead = self.tracker.dead()
            if self.heads == 1:
                num = int(dead.sum())
                if num:
                    self.set_codes(dead, replacement_vectors(z, num, self.reset_noise))
            else:
                x, per_codebook = self.tokens(z), dead.view(self.num_codebooks, -1)
                for c in range(self.num_codebooks):
                    num = int(per_codebook[c].sum())
                    if num:
                        mask = torch.zeros_like(per_codebook)
                        mask[c] = per_codebook[c]
                        self.set_codes(mask.view(-1), replacement_vectors(x[c], num, self.reset_noise))
            self.tracker.revive(dead)
            logs["codes_reset"] = dead.sum().float()
        return logs

    @torch.no_grad()
    def update_affine(self, x: Tensor) -> None:
        """Running per-channel statistics of the stored codes and of the batch (first batch: set)."""
        codes = self.stored()
        batch_decay, codebook_decay = self.affine_decays
        first = not bool(self.affine_initted)
        for name, value, decay in (
                ("codebook_mean", codes.mean(1, keepdim=True), codebook_decay),
                ("codebook_variance", codes.var(1, unbiased=False, keepdim=True), codebook_decay),
                ("batch_mean", x.mean(1, keepdim=True), batch_decay),
                ("batch_variance", x.var(1, unbiased=False, keepdim=True), batch_decay)):
            buffer = getattr(self, name)
            buffer.copy_(value if first else buffer * decay + value * (1 - decay))
        self.affine_initted.fill_(True)

    @torch.no_grad()
    def update(self, x: Tensor, indices: Tensor) -> None:
        """EMA step on ``(C, M, d)`` tokens' statistics summed over ranks (every rank ends with the same codebook)."""
        if self.affine_param:
            x = (x - self.batch_mean) * (self.std("codebook") / self.std("batch")) + self.codebook_mean
        k = self.codebook_size
        flat = (indices + torch.arange(indices.shape[0], device=x.device)[:, None] * k).reshape(-1)
        counts = all_reduce_sum_(code_counts(flat, self.num_codebooks * k))
        sums = torch.zeros(self.num_codebooks * k, x.shape[-1], device=x.device, dtype=x.dtype)
        sums = all_reduce_sum_(sums.index_add_(0, flat, x.reshape(-1, x.shape[-1])))
        codes = ema_update(self.cluster_size, self.embed_sum, counts.view(self.cluster_size.shape),
                           sums.view(self.embed_sum.shape), self.decay, self.eps)
        self.embedding.data.copy_(l2norm(codes) if self.cosine_sim else codes)
        if self.tracker is not None:
            self.tracker.step(flat)

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        logs = self.prepare_codebook(z.detach()) if self.training else {}
        n = z.shape[0]
        x = self.tokens(z)
        if self.training and self.affine_param:
            self.update_affine(x.detach())
        codes = self.codes().detach()
        temperature = self.sample_temperature if self.training else 0.0
        indices = assign_codes(x.detach(), codes, self.cosine_sim, temperature)
        e = gather_codes(codes, indices)
        commitment_loss = F.mse_loss(x, e)
        loss = self.beta * commitment_loss
        if self.training:
            self.update(x.detach(), indices)
        if self.training and self.orthogonal_reg_weight > 0:  # on the updated codes, as theirs
            ortho = orthogonal_loss(self.embedding.view(self.num_codebooks, self.codebook_size, -1))
            loss = loss + self.orthogonal_reg_weight * ortho
            logs["orthogonal_loss"] = ortho.detach()
        z_q = merge_heads(x + (e - x).detach(), n, self.heads, self.separate)
        logs["commitment_loss"] = commitment_loss.detach()
        indices = merge_heads(indices, n, self.heads, self.separate) if self.heads > 1 else indices[0]
        return QuantizeOutput(z_q=z_q, indices=indices, loss=loss, logs=logs)
