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
      SoundStream applies it to every example, i.e. ``quantizer_dropout = 1``.
    """

    name = "residual-vq"
    paper = "Zeghidour et al. 2021, SoundStream"

    def __init__(self, dim: int, codebook_size: int, stages: int = 4, base: str = "vq",
                 base_params: dict[str, Any] | None = None, quantizer_dropout: float = 0.0) -> None:
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

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
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
