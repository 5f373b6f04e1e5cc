"""Vanilla VQ-VAE quantizer, with optional k-means init, dead-code reset, entropy penalty and
the vector-quantize-pytorch / vqtorch options (cosine codes, orthogonal regularizer, heads,
stochastic sampling, synchronized update, affine reparameterization)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.plugins.quantizers.codebook_tools import (
    DeadCodeTracker,
    assign_codes,
    default_reset_noise,
    entropy_penalty_for,
    gather_codes,
    kmeans,
    l2norm,
    merge_heads,
    orthogonal_loss,
    replacement_vectors,
    reseed_dead_codes,
    split_heads,
)


class VectorQuantizer(Quantizer):
    """Vanilla VQ-VAE: nearest code, codebook + beta commitment loss, straight-through.

    Paper: van den Oord et al. 2017, "Neural Discrete Representation Learning"
    (background: the VQ-VAE notes, docs/references.md). Loss ``||sg(z) - e||^2 + beta ||z - sg(e)||^2``
    (the paper's form, not taming's ``legacy`` form that moves beta to the
    codebook term); both terms are means over elements.

    Defaults: ``beta = 0.25`` (the paper); codebook initialised uniform in
    ``(-1/K, 1/K)`` as in taming-transformers and LDM (the paper gives none).

    Options, all off by default so ``vq`` stays the paper's method:

    * ``kmeans_init``: k-means (SoundStream) on the first training batch (under
      DDP, on all ranks' first batches: sums and counts are all-reduced),
      ``kmeans_iters = 10`` Lloyd iterations from randomly sampled batch
      vectors; an empty cluster keeps its centroid. Done once; the ``initted``
      buffer records it, so a reloaded model is not re-initialised.
    * ``dead_code_reset``: a window in training steps (0 = off). We follow
      vqtorch's countdown variant (docs/methods.md, ``vq``): a code chosen by no token for
      that many consecutive steps (over all ranks) is re-seeded, at the start
      of the next training step, with a random encoder output of that step's
      batch (rank 0's, copied to every rank) plus Gaussian noise of std ``reset_noise`` (default Jukebox's
      ``0.01 / sqrt(D)``, so two codes seeded from one vector separate).
    * ``entropy_weight`` (0 = off) and ``entropy_temperature``: the VQ-VAE notes /
      MAGVIT-v2 diversity penalty ``mean_n H(p_n) - H(mean_n p_n)`` with
      ``p_n = softmax(-||z_n - e_k||^2 / temperature)``, added to the loss in
      training. Temperature 0.01 follows MAGVIT-v2's logits ``2<z, c> / 0.01``;
      MAGVIT-v2 configs weigh it 0.1, and the VQ-VAE notes warn strong weights hurt
      reconstruction. Its gradient reaches both the tokens and the codes; it is
      computed per rank (no all-reduce) and needs the full ``(N, K)`` distances.
      With several codebooks it is the mean of each codebook's penalty.

    The options of vector-quantize-pytorch (lucidrains, ``vector_quantize_pytorch/
    vector_quantize_pytorch.py``, ``VectorQuantize``) and vqtorch (minyoungg/vqtorch,
    ``vqtorch/nn/vq.py``, ``VectorQuant``), all off by default (docs/methods.md, ``vq``):

    * ``cosine_sim`` (vector-quantize-pytorch ``use_cosine_sim``; Yu et al. 2021, ViT-VQGAN):
      tokens and codes are l2-normalized (``eps = 1e-6``) before the lookup and both loss
      terms, so ``z_q`` is a unit code. The stored codes stay free; the forward normalizes
      them (that code refuses a gradient-trained cosine codebook, so this variant is ours).
    * ``orthogonal_reg_weight`` (Shin et al. 2021, "Translation-equivariant Image
      Quantizer for Bi-directional Image-Text Generation", eq. 2; their ``orthogonal_loss_fn``):
      adds ``w (sum cos(e_i, e_j)^2 / K^2 - 1/K)`` over all stored codes in training
      (their defaults: every code, not only the batch's active ones, no cap on their number).
    * ``heads`` and ``separate_codebook_per_head`` (their names): each token splits into
      ``heads`` chunks of ``D / heads`` channels, quantized with one shared ``(K, D/heads)``
      codebook or one codebook per head. Indices are ``(N, heads)``, ``num_stages = heads``
      and ``bits_per_token = heads log2 K``: the rate grows with the heads, so a suite
      row at equal rate lowers ``K``. The losses are means over all chunks.
    * ``sample_temperature`` (their ``stochastic_sample_codes = True`` with
      ``sample_codebook_temp = T``; 0 = off): in training the code is drawn by Gumbel-max from
      ``softmax(-||z - e|| / T)`` (distance, not squared, as theirs; ``<z, e> / T`` with
      cosine codes) instead of the nearest; eval takes the nearest code. Their one knob
      pair is one knob here: a temperature that is not used cannot be set.
    * ``sync_nu`` (Huh et al. 2023, "Straightening Out the Straight-Through Estimator",
      eq. 21; vqtorch's ``sync_nu``): ``z_q = z + sg(e - z) + nu (e - sg(e))``, the same
      value, but the code also receives ``nu`` times the gradient the decoder sends the
      token, so codes move with the encoder. We follow the authors' vqtorch; vector-quantize-
      pytorch's ``sync_update_v`` applies the term after its straight-through, where the
      code is detached, so there it scales the token's gradient by ``1 + v`` and the code
      gets nothing (tests/quantizers/test_vq_library_options.py shows both).
    * ``affine_lr`` (Huh et al. 2023, section 5.2; vqtorch's ``affine_lr`` with
      ``AffineTransform(use_running_statistics=False)``; 0 = off): the effective codes are
      ``(1 + a s) * e + a b`` with learned per-channel ``s, b`` (one pair per codebook)
      starting at 0, ``a = affine_lr`` scaling their learning rate, so one gradient step moves
      every code's scale and shift together. Not with ``cosine_sim`` (the normalization would
      undo the scale, as vector-quantize-pytorch refuses it too).
    """

    name = "vq"
    paper = "van den Oord et al. 2017"

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, kmeans_init: bool = False,
                 kmeans_iters: int = 10, dead_code_reset: int = 0, reset_noise: float | None = None,
                 entropy_weight: float = 0.0, entropy_temperature: float = 0.01, cosine_sim: bool = False,
                 orthogonal_reg_weight: float = 0.0, heads: int = 1, separate_codebook_per_head: bool = False,
                 sample_temperature: float = 0.0, sync_nu: float = 0.0, affine_lr: float = 0.0) -> None:
        super().__init__(dim, codebook_size)
        if dead_code_reset < 0:
            raise ValueError(f"dead_code_reset is a window in steps (0 = off), got {dead_code_reset}")
        if entropy_temperature <= 0:
            raise ValueError(f"entropy_temperature must be positive, got {entropy_temperature}")
        check_head_options(dim, heads, separate_codebook_per_head, sample_temperature, orthogonal_reg_weight)
        if sync_nu < 0:
            raise ValueError(f"sync_nu must be >= 0 (0 = off), got {sync_nu}")
        if affine_lr < 0 or (affine_lr > 0 and cosine_sim):
            raise ValueError(f"affine_lr must be >= 0 (0 = off) and not combined with cosine_sim, got {affine_lr}")
        self.beta = beta
        k = codebook_size
        self.heads, self.separate = int(heads), bool(separate_codebook_per_head)
        self.num_codebooks = self.heads if self.separate else 1
        shape = (self.num_codebooks, k, dim // self.heads) if self.separate else (k, dim // self.heads)
        self.embedding = nn.Parameter(torch.empty(shape).uniform_(-1.0 / k, 1.0 / k))
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        if kmeans_init:
            self.register_buffer("initted", torch.zeros((), dtype=torch.bool))
        self.tracker = DeadCodeTracker(self.num_codebooks * k, dead_code_reset) if dead_code_reset else None
        self.reset_noise = default_reset_noise(dim) if reset_noise is None else reset_noise
        self.entropy_weight, self.entropy_temperature = entropy_weight, entropy_temperature
        self.cosine_sim, self.orthogonal_reg_weight = bool(cosine_sim), float(orthogonal_reg_weight)
        self.sample_temperature, self.sync_nu = float(sample_temperature), float(sync_nu)
        self.affine_lr = float(affine_lr)
        if affine_lr > 0:
            self.affine_scale = nn.Parameter(torch.zeros(self.num_codebooks, 1, dim // self.heads))
            self.affine_bias = nn.Parameter(torch.zeros(self.num_codebooks, 1, dim // self.heads))

    @property
    def num_stages(self) -> int:
        return self.heads

    def codes(self) -> Tensor:
        """The ``(C, K, d)`` codes tokens are compared with: stored, affine-mapped, normalized."""
        codes = self.embedding.reshape(self.num_codebooks, self.codebook_size, -1)
        if self.affine_lr > 0:
            codes = (1 + self.affine_lr * self.affine_scale) * codes + self.affine_lr * self.affine_bias
        return l2norm(codes) if self.cosine_sim else codes

    def codebook(self) -> Tensor | None:
        """The ``(K, D)`` codes with one head; ``None`` with several (a code covers one chunk).

        Without a map (cosine, affine) it is the stored parameter itself, as schedules that
        rescale the initial codebook (``codebook-init-scale``) require.
        """
        if self.heads > 1:
            return None
        return self.embedding if not (self.cosine_sim or self.affine_lr > 0) else self.codes()[0]

    def tokens(self, z: Tensor) -> Tensor:
        """``(C, M, d)`` tokens as the codebooks see them (split into heads, normalized)."""
        x = split_heads(z, self.heads, self.separate)
        return l2norm(x) if self.cosine_sim else x

    @torch.no_grad()
    def prepare_codebook(self, z: Tensor) -> dict[str, Tensor]:
        """Training-time codebook surgery before the step's graph: k-means init, dead-code reset."""
        logs: dict[str, Tensor] = {}
        if self.kmeans_init and not bool(self.initted):
            x = self.tokens(z)
            found = torch.stack([kmeans(x[c], self.codebook_size, self.kmeans_iters) for c in range(x.shape[0])])
            self.embedding.copy_(found.reshape(self.embedding.shape))
            self.initted.fill_(True)
        if self.tracker is not None:
            if self.heads == 1:
                reset = reseed_dead_codes(self.embedding, self.tracker, z, self.reset_noise)
            else:
                reset = reseed_per_codebook(self.embedding, self.tracker, self.tokens(z), self.reset_noise)
            logs["codes_reset"] = reset.sum().float()
        return logs

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        logs = self.prepare_codebook(z) if self.training else {}
        n = z.shape[0]
        x, codes = self.tokens(z), self.codes()
        temperature = self.sample_temperature if self.training else 0.0
        indices = assign_codes(x.detach(), codes.detach(), self.cosine_sim, temperature)
        e = gather_codes(codes, indices)
        codebook_loss = F.mse_loss(e, x.detach())
        commitment_loss = F.mse_loss(x, e.detach())
        loss = codebook_loss + self.beta * commitment_loss
        logs.update(codebook_loss=codebook_loss.detach(), commitment_loss=commitment_loss.detach())
        if self.training and self.entropy_weight > 0:
            terms = [entropy_penalty_for(x[c], codes[c], self.entropy_temperature) for c in range(x.shape[0])]
            penalty, per_token, avg = (torch.stack(t).mean() for t in zip(*terms, strict=True))
            loss = loss + self.entropy_weight * penalty
            logs.update(entropy_penalty=penalty.detach(), token_entropy=per_token.detach(),
                        usage_entropy=avg.detach())
        if self.training and self.orthogonal_reg_weight > 0:
            ortho = orthogonal_loss(self.embedding.reshape(self.num_codebooks, self.codebook_size, -1))
            loss = loss + self.orthogonal_reg_weight * ortho
            logs["orthogonal_loss"] = ortho.detach()
        if self.tracker is not None and self.training:
            offsets = torch.arange(indices.shape[0], device=z.device)[:, None] * self.codebook_size
            self.tracker.step(indices + offsets)
        z_q = x + (e - x).detach()
        if self.sync_nu > 0:
            z_q = z_q + self.sync_nu * (e - e.detach())
        z_q = merge_heads(z_q, n, self.heads, self.separate)
        indices = merge_heads(indices, n, self.heads, self.separate) if self.heads > 1 else indices[0]
        return QuantizeOutput(z_q=z_q, indices=indices, loss=loss, logs=logs)


def check_head_options(dim: int, heads: int, separate: bool, temperature: float, orthogonal: float) -> None:
    """Refuse options that cannot take effect or make no sense (shared by ``vq`` and ``ema``)."""
    if heads < 1 or dim % heads:
        raise ValueError(f"heads must be a positive divisor of dim {dim}, got {heads}")
    if separate and heads == 1:
        raise ValueError("separate_codebook_per_head needs heads > 1 (one head has one codebook)")
    if temperature < 0:
        raise ValueError(f"sample_temperature must be >= 0 (0 = nearest code), got {temperature}")
    if orthogonal < 0:
        raise ValueError(f"orthogonal_reg_weight must be >= 0, got {orthogonal}")


@torch.no_grad()
def reseed_per_codebook(embedding: Tensor, tracker: DeadCodeTracker, x: Tensor, noise_std: float) -> Tensor:
    """Dead-code reset with several heads: codebook ``c``'s dead codes get vectors of its own tokens ``x[c]``."""
    dead = tracker.dead()
    codes = embedding.view(x.shape[0], -1, x.shape[-1])
    per_codebook = dead.view(x.shape[0], -1)
    for c in range(x.shape[0]):
        num = int(per_codebook[c].sum())
        if num:
            codes[c][per_codebook[c]] = replacement_vectors(x[c], num, noise_std).to(codes.dtype)
    tracker.revive(dead)
    return dead
