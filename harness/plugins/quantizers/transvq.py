"""TransVQ (Beyond Stationarity): a frozen codebook mapped by a one-layer linear-attention transformer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.plugins.quantizers.codebook_tools import float32_region, straight_through_vq


class LinearAttention(nn.Module):
    """Linear attention, ``phi(x) = elu(x) + 1``, no biases: cost linear in the number of codes.

    ``out_i = phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i) . sum_j phi(k_j) + eps)`` per head,
    then an output projection.
    """

    def __init__(self, width: int, heads: int = 1, eps: float = 1e-6) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.eps = heads, eps
        self.to_q = nn.Linear(width, width, bias=False)
        self.to_k = nn.Linear(width, width, bias=False)
        self.to_v = nn.Linear(width, width, bias=False)
        self.to_out = nn.Linear(width, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        length, width = x.shape
        split = (length, self.heads, width // self.heads)
        q = (F.elu(self.to_q(x)) + 1.0).view(split).transpose(0, 1)  # (H, L, d)
        k = (F.elu(self.to_k(x)) + 1.0).view(split).transpose(0, 1)
        v = self.to_v(x).view(split).transpose(0, 1)
        kv = k.transpose(1, 2) @ v  # (H, d, d)
        norm = q @ k.sum(1, keepdim=True).transpose(1, 2)  # (H, L, 1)
        out = (q @ kv) / (norm + self.eps)
        return self.to_out(out.transpose(0, 1).reshape(length, width))


class FeedForward(nn.Sequential):
    """``Linear(width, hidden) -> GELU -> Linear(hidden, width)``, with biases as in the public code."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))


class CodebookBlock(nn.Module):
    """Pre-LayerNorm block: ``x + Attn(LN(x))``, then ``x + FFN(LN(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = LinearAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.ffn = FeedForward(width, int(width * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class MLPBlock(nn.Module):
    """The MLP variant's block: ``x + FFN(LN(x))``, a two-layer MLP without attention."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.ffn = FeedForward(width, int(width * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.ffn(self.norm(x))


class TransVQ(Quantizer):
    """TransVQ: nearest code in ``T(C)``, a frozen codebook mapped by a linear-attention transformer.

    "Beyond Stationarity" (section 3.4); architecture from
    CAIR-LAB-WFUSM/NS-VQ-TransVQ ``sim_vq.py`` (``CodebookTransformer``).
    ``C (K, D)`` is frozen, ``randn / sqrt(D)``. ``T``: ``Linear(D, width, no
    bias)`` plus a learned per-code embedding ``(K, width)``; ``depth``
    pre-LayerNorm blocks over the sequence of all ``K`` codes (linear attention,
    ``phi = elu + 1``, no biases, residual; FFN ``width -> mlp_ratio*width ->
    width`` with GELU, residual); a final LayerNorm; ``Linear(width, D, no
    bias)``. ``T(C)`` is recomputed every forward, so every code moves with
    each update; indices decode through the full transformed codebook.

    Loss ``mse(sg(z), q) + beta mse(z, sg(q))``, ``beta = 0.25``; straight-through.
    Defaults are the paper's CelebA setting: ``depth = 1``, ``heads = 1``,
    ``width = 256``, ``mlp_ratio = 2``. Like the public code we use PyTorch's
    default initialisation (per-code embedding ``N(0, 1)``) and no dropout.
    """

    name = "transvq"
    paper = "Beyond Stationarity (TransVQ)"
    block = CodebookBlock

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, width: int = 256,
                 heads: int = 1, mlp_ratio: float = 2.0, depth: int = 1) -> None:
        super().__init__(dim, codebook_size)
        if depth < 1 or width < 1 or heads < 1 or mlp_ratio <= 0:
            raise ValueError("width, heads, depth and mlp_ratio must be positive, got "
                             f"{width}, {heads}, {depth} and {mlp_ratio}")
        self.beta = beta
        self.register_buffer("frozen_codes", torch.randn(codebook_size, dim) / dim**0.5)
        self.proj_in = nn.Linear(dim, width, bias=False)
        self.code_embedding = nn.Parameter(torch.randn(codebook_size, width))
        self.blocks = nn.ModuleList(self.block(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, dim, bias=False)

    def codebook(self) -> Tensor:
        with float32_region(self.frozen_codes):
            x = self.proj_in(self.frozen_codes) + self.code_embedding
            for block in self.blocks:
                x = block(x)
            return self.proj_out(self.norm(x))

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        return straight_through_vq(z, self.codebook(), self.beta)


class TransVQMLP(TransVQ):
    """TransVQ-MLP: TransVQ with a two-layer MLP in place of the attention block.

    Beyond Stationarity, discussion (section 6): "replacing the transformer block with a
    two-layer MLP slightly reduces performance but significantly improves
    speed". The paper gives no further detail and the public code has no such
    module; we keep everything of ``transvq`` (frozen ``C``, input projection,
    per-code embedding, final LayerNorm, output projection, loss, defaults) and
    replace each block by ``x + MLP(LN(x))`` with ``MLP = Linear(width,
    mlp_ratio*width) -> GELU -> Linear(mlp_ratio*width, width)``: the block
    minus its attention sublayer, so codes no longer interact and the cost is
    linear in ``K`` with a smaller constant.
    """

    name = "transvq-mlp"
    block = MLPBlock
