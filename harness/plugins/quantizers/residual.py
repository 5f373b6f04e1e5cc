"""Residual VQ (SoundStream): a stack of quantizers, each coding what the previous ones missed."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer


def build_base(name: str, dim: int, codebook_size: int, params: dict[str, Any]) -> nn.Module:
    """One stage: the registered quantizer ``name``, which must be single-stage."""
    from harness.host import get_host  # the host imports plugins: import it late

    if name == ResidualVQ.name:
        raise ValueError("residual-vq: base cannot be residual-vq itself")
    stage = get_host().quantizers.get(name).obj(dim=dim, codebook_size=codebook_size, **params)
    if getattr(stage, "num_stages", 1) != 1:
        raise ValueError(f"residual-vq: base {name!r} is multi-stage; use a single-stage quantizer")
    return stage


#: how beam search ranks partial encodings (see :class:`ResidualVQ`)
BEAM_SCORES = ("residual", "sum")
#: upper bound on one token chunk's candidate block in :meth:`ResidualVQ.beam_search`
BEAM_BLOCK_BYTES = 256 * 2**20


class ResidualVQ(Quantizer):
    """Residual VQ: L stages quantize successive residuals; the output is the sum of stage outputs.

    Paper: Zeghidour et al. 2021, "SoundStream" (docs/methods.md, ``residual-vq``).
    ``r_1 = z``; stage ``l`` returns ``q_l = base_l(r_l)``; ``r_{l+1} = r_l - sg(q_l)``;
    ``z_q = sum_l q_l``. Indices are ``(N, L)``, one column per stage; the loss is
    the sum of the stages' losses, and each stage's logs appear as ``stage<l>/<name>``.

    Defaults: ``stages = 4``; ``base = "vq"`` (any registered single-stage
    quantizer, built through the host registry with ``base_params``, each stage
    with its own parameters); ``quantizer_dropout = 0.0``. Choices:

    * the gradient path (our choice; docs/methods.md, ``residual-vq``): each stage keeps its own
      (e.g. straight-through) path to its input and ``r_{l+1}`` depends on ``z``
      through ``r_l`` only, so with a straight-through base ``z`` receives the
      upstream gradient once per stage (L times it). EnCodec instead subtracts
      ``q_l`` without ``sg``, which leaves only the first stage's copy;
    * quantizer dropout (SoundStream): in training, with probability
      ``quantizer_dropout`` a token keeps only its first ``n ~ U{1..L}`` stages in
      ``z_q``. A residual does not depend on later stages, so every stage still
      runs on every token: its codebook keeps learning and its index stays
      defined (the contract needs an index per stage); only the sum is cut.
      SoundStream applies it to every example, i.e. ``quantizer_dropout = 1``;
    * beam search at encode time (``beam_size``, 1 = off, the greedy stage-by-stage
      assignment): in eval, ``B`` partial encodings are kept per token; stage ``l`` extends
      each with every code of ``codebook()`` and keeps the ``B`` best (1 after the last stage).
      ``beam_score = "residual"`` (default) ranks by the squared reconstruction error so far,
      ``||z - sum_{i<=l} e_i||^2``, as QINCo's encoder (facebookresearch/Qinco,
      ``qinco/model/qinco_base.py``; Huijben et al. 2024); ``"sum"`` ranks by the sum of the
      stages' errors ``sum_{j<=l} ||r_{j+1}||^2``, as vector-quantize-pytorch's ``ResidualVQ``
      (``beam_size``, ``vector_quantize_pytorch/residual_vq.py``), whose final pick need not
      be the best reconstruction. Training stays greedy (the stages' own forwards, their
      losses and updates: theirs also searches in training when ``beam_size`` is set, ours is
      their ``eval_beam_size``). The search needs each stage's ``(K, D)`` ``codebook()`` and
      compares squared Euclidean errors, so a stage that assigns by another rule (cosine
      codes) is encoded by reconstruction error instead. Under the search the eval loss is
      the sum over stages of ``mse(r_l, e_l)`` (their per-layer losses at weight 1), not the
      stages' own loss forms.
    """

    name = "residual-vq"
    paper = "Zeghidour et al. 2021, SoundStream"

    def __init__(self, dim: int, codebook_size: int, stages: int = 4, base: str = "vq",
                 base_params: dict[str, Any] | None = None, quantizer_dropout: float = 0.0,
                 beam_size: int = 1, beam_score: str = "residual") -> None:
        super().__init__(dim, codebook_size)
        if stages < 1:
            raise ValueError(f"residual-vq: stages must be >= 1, got {stages}")
        if not 0.0 <= quantizer_dropout <= 1.0:
            raise ValueError(f"residual-vq: quantizer_dropout must be in [0, 1], got {quantizer_dropout}")
        self.base = base
        self.quantizer_dropout = float(quantizer_dropout)
        self.stages = nn.ModuleList(
            build_base(base, dim, codebook_size, dict(base_params or {})) for _ in range(stages))
        # a base may report its real size (e.g. fsq's prod(levels))
        self.codebook_size = int(self.stages[0].codebook_size)
        if beam_size < 1:
            raise ValueError(f"residual-vq: beam_size must be >= 1 (1 = greedy), got {beam_size}")
        if beam_score not in BEAM_SCORES or (beam_size == 1 and beam_score != "residual"):
            raise ValueError(f"residual-vq: beam_score must be one of {BEAM_SCORES} and needs beam_size > 1, "
                             f"got {beam_score!r} with beam_size {beam_size}")
        if beam_size > 1 and any(getattr(s, "codebook", lambda: None)() is None for s in self.stages):
            raise ValueError(f"residual-vq: beam search needs each stage's (K, D) codebook(); base {base!r} has none")
        self.beam_size, self.beam_score = int(beam_size), beam_score

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        return tuple(int(s.codebook_size) for s in self.stages)

    def codebook(self) -> None:
        """Multi-stage: there is no single ``(K, D)`` codebook."""
        return None

    def on_epoch_end(self, epoch: int) -> None:
        for stage in self.stages:
            if hasattr(stage, "on_epoch_end"):
                stage.on_epoch_end(epoch)

    def kept_stages(self, n: int, device: torch.device) -> Tensor:
        """``(N, L)`` float mask of the stages each token keeps (quantizer dropout, training only)."""
        big_l = self.num_stages
        keep = torch.ones(n, big_l, device=device)
        if self.training and self.quantizer_dropout > 0:
            drop = torch.rand(n, device=device) < self.quantizer_dropout
            count = torch.randint(1, big_l + 1, (n,), device=device)
            count = torch.where(drop, count, big_l)
            keep = (torch.arange(big_l, device=device)[None, :] < count[:, None]).float()
        return keep

    @torch.no_grad()
    def beam_search(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Indices ``(N, L)``, their codes' sum ``(N, D)`` and each stage's mean error ``(L,)``.

        Tokens go in chunks so one chunk's ``(n, B, K)`` error block stays under ``BEAM_BLOCK_BYTES``.
        """
        codes = [stage.codebook().detach().to(z.dtype) for stage in self.stages]
        widest = max(c.shape[0] for c in codes) * self.beam_size
        chunk = max(1, BEAM_BLOCK_BYTES // (z.element_size() * widest * (z.shape[1] + 1)))
        parts = [self._beam_chunk(z[i : i + chunk], codes) for i in range(0, z.shape[0], chunk)]
        indices, approx, errors = (torch.cat(t) for t in zip(*parts, strict=True))
        return indices, approx, errors.mean(0)

    def _beam_chunk(self, z: Tensor, codes: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        n, d = z.shape
        approx = z.new_zeros(n, 1, d)  # the beams' partial sums
        score = z.new_zeros(n, 1)
        history = torch.zeros(n, 1, 0, dtype=torch.long, device=z.device)
        stage_errors = z.new_zeros(n, 1, 0)
        for level, c in enumerate(codes):
            k = c.shape[0]
            residual = z[:, None, :] - approx  # (n, b, d)
            error = (residual[:, :, None, :] - c).pow(2).mean(-1)  # (n, b, K): mse(r, e) per candidate
            total = error if self.beam_score == "residual" else score[:, :, None] + error
            keep = min(self.beam_size if level < len(codes) - 1 else 1, total.shape[1] * k)
            score, pick = total.reshape(n, -1).topk(keep, dim=1, largest=False)
            beam, code = pick // k, pick % k
            approx = approx.gather(1, beam[..., None].expand(-1, -1, d)) + c[code]
            history = torch.cat([history.gather(1, beam[..., None].expand(-1, -1, level)), code[..., None]], 2)
            chosen = error.reshape(n, -1).gather(1, pick)
            stage_errors = torch.cat([stage_errors.gather(1, beam[..., None].expand(-1, -1, level)),
                                      chosen[..., None]], 2)
        return history[:, 0], approx[:, 0], stage_errors[:, 0]

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        if self.beam_size > 1 and not self.training:
            indices, approx, errors = self.beam_search(z)
            logs = {f"stage{level}/beam_error": e for level, e in enumerate(errors)}
            return QuantizeOutput(z_q=z + (approx - z).detach(), indices=indices, loss=errors.sum(), logs=logs)
        keep = self.kept_stages(z.shape[0], z.device)
        residual = z
        z_q = torch.zeros_like(z)
        loss = z.new_zeros(())
        indices, logs = [], {}
        for level, stage in enumerate(self.stages):
            out = stage(residual)
            if out.indices.dim() != 1:
                raise ValueError(f"residual-vq: stage {level} returned indices of shape "
                                 f"{tuple(out.indices.shape)}, expected (N,)")
            z_q = z_q + out.z_q * keep[:, level : level + 1]
            residual = residual - out.z_q.detach()
            loss = loss + out.loss
            indices.append(out.indices)
            logs.update({f"stage{level}/{k}": v for k, v in out.logs.items()})
        return QuantizeOutput(z_q=z_q, indices=torch.stack(indices, dim=1), loss=loss, logs=logs)
