"""Peer libraries ``harness bench --peer`` compares against, configured like our plugins of the same name.

Kept out of the host: which peer module matches which of our methods, and
with which settings, is a choice about methods, not about the harness.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class ChannelsFirst(torch.nn.Module):
    """Adapts a peer module that takes ``(B, D, N)`` (LatentQuantize) to ``(B, N, D)`` tokens."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        quantized, *rest = self.module(x.transpose(1, 2))
        return (quantized.transpose(1, 2), *rest)


class AssignmentWithReadOut(torch.nn.Module):
    """A peer that only assigns codes (BEST-RQ's ``RandomProjectionQuantizer`` returns indices),
    given the read-out our ``best-rq`` adds, so both time the same training step."""

    def __init__(self, module: torch.nn.Module, dim: int, codebook_dim: int) -> None:
        super().__init__()
        self.module = module
        self.project_out = torch.nn.Linear(codebook_dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        indices = self.module(x)
        y = torch.nn.functional.normalize(self.module.norm(x) @ self.module.rand_projs[0], dim=-1)
        codes = torch.nn.functional.normalize(self.module.vq.codebook[0], dim=-1)[indices]
        return self.project_out(y + (codes - y).detach()), indices


def peer_builders() -> dict[str, Callable[[int, int], torch.nn.Module]]:
    """vector-quantize-pytorch modules configured like our plugins of the same name."""
    import vector_quantize_pytorch as vqp
    from vector_quantize_pytorch.random_projection_quantizer import RandomProjectionQuantizer

    from harness.plugins.quantizers.qlae import qlae_levels
    from harness.plugins.quantizers.residual_fsq import residual_levels

    def fsq_levels(k: int) -> list[int]:
        table = {256: [8, 6, 5], 1024: [8, 5, 5, 5], 4096: [7, 5, 5, 5, 5], 16384: [8, 8, 8, 6, 5],
                 65536: [8, 8, 8, 5, 5, 5]}
        return table[k]

    return {
        "vq": lambda d, k: vqp.VectorQuantize(dim=d, codebook_size=k, learnable_codebook=True, rotation_trick=False,
                                              ema_update=False, commitment_weight=0.25),
        "ema": lambda d, k: vqp.VectorQuantize(dim=d, codebook_size=k, decay=0.99, commitment_weight=0.25,
                                               rotation_trick=False),
        "simvq": lambda d, k: vqp.SimVQ(dim=d, codebook_size=k, rotation_trick=False),
        "fsq": lambda d, k: vqp.FSQ(levels=fsq_levels(k), dim=d),
        "lfq": lambda d, k: vqp.LFQ(dim=d, codebook_size=k, entropy_loss_weight=0.1, commitment_loss_weight=0.25),
        # BSQ: LFQ on the unit sphere, with the plugin's defaults (no commitment term, entropy
        # weight 0.1, both entropy terms at weight 1)
        "bsq": lambda d, k: vqp.LFQ(dim=d, codebook_size=k, spherical=True, entropy_loss_weight=0.1,
                                    commitment_loss_weight=0.0, diversity_gamma=1.0),
        # the rotation trick on the plugin's default path: an EMA codebook (decay 0.8), beta 1
        "rotation": lambda d, k: vqp.VectorQuantize(dim=d, codebook_size=k, rotation_trick=True, decay=0.8,
                                                    commitment_weight=1.0),
        "residual-vq": lambda d, k: vqp.ResidualVQ(dim=d, codebook_size=k, num_quantizers=4,
                                                   learnable_codebook=True, ema_update=False, rotation_trick=False),
        "residual-fsq": lambda d, k: vqp.ResidualFSQ(levels=list(residual_levels(k, None)), num_quantizers=4,
                                                     dim=d),
        "residual-lfq": lambda d, k: vqp.ResidualLFQ(dim=d, codebook_size=k, num_quantizers=4,
                                                     entropy_loss_weight=0.1, commitment_loss_weight=0.25),
        "grouped-residual-vq": lambda d, k: vqp.GroupedResidualVQ(
            dim=d, groups=2, codebook_size=k, num_quantizers=4, learnable_codebook=True, ema_update=False,
            rotation_trick=False),
        "qlae": lambda d, k: ChannelsFirst(vqp.LatentQuantize(
            levels=list(qlae_levels(k, None)), dim=d, commitment_loss_weight=0.01, quantization_loss_weight=0.01)),
        "best-rq": lambda d, k: AssignmentWithReadOut(
            RandomProjectionQuantizer(dim=d, codebook_size=k, codebook_dim=16), d, 16),
        # FSP: the plugin's defaults (no vector norm; the peer's default is "var_tanh")
        "fsp": lambda d, k: vqp.FSP(levels=fsq_levels(k), dim=d, vector_norm="none"),
        # DiVeQ: directional reparameterization with our noise (std 1e-3, variance 1e-6); the
        # peer insists on its per-step dead-code replacement, ours replaces every 100 steps
        "diveq": lambda d, k: vqp.VectorQuantize(dim=d, codebook_size=k, directional_reparam=True,
                                                 directional_reparam_variance=1e-6, threshold_ema_dead_code=2),
    }


def peer_forward(module: torch.nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = module(z[None])  # the peer takes (B, N, D) and returns (quantized, indices[, losses])
    z_q = out[0][0]
    aux = out[2] if len(out) > 2 else None
    if isinstance(aux, torch.Tensor) and aux.is_floating_point():
        return z_q, aux.sum()
    if isinstance(aux, (tuple, list)):
        return z_q, sum((a.sum() for a in aux if isinstance(a, torch.Tensor)), torch.zeros((), device=z.device))
    return z_q, torch.zeros((), device=z.device)
