"""VQBridge (FVQ, 2025): the codebook laid out as an image and re-mapped by a small ViT each step."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import nearest_code


class BridgeBlock(nn.Module):
    """A pre-norm transformer block: LayerNorm (no affine) -> attention, LayerNorm -> GELU MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def attention(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads), dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, t, c))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh"))


class Bridge(nn.Module):
    """ViT over the ``(D, s, s)`` codebook image: patchify, ``depth`` blocks, zero-initialised head."""

    def __init__(self, dim: int, patch: int, depth: int, heads: int, head_dim: int, mlp_ratio: float) -> None:
        super().__init__()
        width = heads * head_dim
        self.patch = patch
        self.embed = nn.Conv2d(dim, width, kernel_size=patch, stride=patch)
        self.blocks = nn.ModuleList(BridgeBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.head = nn.Linear(width, patch * patch * dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' init: Xavier-uniform weights and zero biases, the head all zeros."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.embed.weight.view(self.embed.weight.shape[0], -1))
        nn.init.zeros_(self.embed.bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, image: Tensor) -> Tensor:
        """``(1, D, s, s)`` in, ``(1, D, s, s)`` out."""
        _, d, s, _ = image.shape
        x = self.embed(image).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        x = self.head(self.norm(x))
        g, p = s // self.patch, self.patch
        x = x.reshape(1, g, g, p, p, d).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(1, d, s, s)


class VQBridge(Quantizer):
    """VQBridge (FVQ): codes are ``Bridge(C)``, a ViT's map of the learned codebook ``C``.

    Paper: Chang, Qin, Hong, Qiao, Wang, Zhu, Ma and Wang 2025, "Scalable Training for
    Vector-Quantized Networks with 100% Codebook Utilization" (arXiv 2509.10140); FVQ is
    VQ trained through VQBridge. Public code: yfChang-cv/FVQ,
    ``tokenizer/tokenizer_image/qbridge_ViT.py`` (``VQBridge``, the ViT version the README
    says matches the paper) and ``tokenizer/tokenizer_image/vq_model_qbridge_release.py``
    (``VectorQuantizer``).

    The ``(K, D)`` codebook is read as a ``D``-channel ``sqrt(K) x sqrt(K)`` image (code
    ``k`` at row ``k // sqrt(K)``, column ``k % sqrt(K)``), patchified, passed through
    ``depth`` pre-norm transformer blocks and a linear head back to the image; its pixels
    are the codes used. Every step moves every code (the point: 100% utilization). Nearest
    code, straight-through; loss ``mse(e, sg(z)) + beta mse(sg(e), z)``.

    Defaults, the authors' ``vq_train_qbridge_lr_release.py`` arguments: bridge
    ``QBridge-S/4`` (``patch_size = 4``, ``depth = 2``, ``heads = 4``, ``head_dim = 16``,
    ``mlp_ratio = 2``), ``beta = 0.25``, no entropy loss, no l2-normalised codes, ``C``
    uniform in ``(-1/K, 1/K)``; Xavier init with the head zeroed (so every code starts at
    0 and the first step sends every token to code 0). ``K`` must be a square whose side
    the patch divides (256, 1024, 4096 with patch 4).

    Deviations: the transformer is written here (the authors use timm's ``Attention``,
    ``Mlp`` and ``PatchEmbed``; the computation is the same). Their learning-rate recipe
    (warm-up, then linear decay after 30%) belongs to the suite, not the quantizer; their
    ImageNet scripts use ``QBridge-L/4`` at ``D = 256``.
    """

    name = "vqbridge"
    paper = "Chang et al. 2025, FVQ (VQBridge)"

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25, patch_size: int = 4,
                 depth: int = 2, heads: int = 4, head_dim: int = 16, mlp_ratio: float = 2.0) -> None:
        super().__init__(dim, codebook_size)
        side = math.isqrt(codebook_size)
        if side * side != codebook_size or side % patch_size:
            raise ValueError(f"vqbridge: codebook_size must be a square whose side is divisible by "
                             f"patch_size={patch_size} (e.g. 256, 1024, 4096 with patch 4), "
                             f"got {codebook_size}")
        self.beta, self.side = float(beta), side
        self.embedding = nn.Parameter(torch.empty(codebook_size, dim).uniform_(-1 / codebook_size,
                                                                               1 / codebook_size))
        self.bridge = Bridge(dim, patch_size, depth, heads, head_dim, mlp_ratio)

    def codebook(self) -> Tensor:
        image = self.embedding.t().reshape(1, self.dim, self.side, self.side)
        return self.bridge(image).reshape(self.dim, self.codebook_size).t()

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        codes = self.codebook()
        indices = nearest_code(z.detach(), codes.detach())
        e = codes[indices]
        codebook_loss, commitment_loss = F.mse_loss(e, z.detach()), F.mse_loss(z, e.detach())
        loss = codebook_loss + self.beta * commitment_loss
        logs = {"codebook_loss": codebook_loss.detach(), "commitment_loss": commitment_loss.detach()}
        return QuantizeOutput(z_q=z + (e - z).detach(), indices=indices, loss=loss, logs=logs)
