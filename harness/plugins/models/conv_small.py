"""A small conv encoder/decoder for 8x8 images (the digits suite), fast on a CPU."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from harness.contracts import Model


class ConvSmall(Model):
    """Small conv VQ-VAE for 8x8 images: one stride-2 stage, f = 2 (4x4 tokens).

    Not from a paper: a CPU-sized stand-in with the shape of Beyond Stationarity's Table 1
    net, for the ``digits`` sanity suite. Encoder: Conv3x3 3->32, LReLU;
    Conv4x4 s2 32->64, LReLU; Conv3x3 64->64, LReLU; Conv1x1 64->D. Decoder:
    Conv3x3 D->64, LReLU; ConvTranspose4x4 s2 64->32, LReLU; Conv3x3 32->3, Tanh.

    Defaults: ``hidden=(32, 64)``; LeakyReLU slope 0.01 (PyTorch's default, as
    in Table 1's public code). Why f = 2: an 8x8 digit at f = 4 leaves 2x2
    tokens, too few for codebook usage to mean anything; 4x4 = 16 tokens per
    image keeps a few thousand tokens per batch. The latent has no activation
    so the quantizer sees signed values (unlike Table 1's final LReLU).
    """

    name = "conv-small"
    paper = "none (harness stand-in for CPU suites)"

    def __init__(self, latent_dim: int = 16, hidden: Sequence[int] = (32, 64), in_channels: int = 3) -> None:
        super().__init__(latent_dim)
        if len(hidden) != 2:
            raise ValueError(f"conv-small: hidden must give two widths, got {hidden!r}")
        c1, c2 = (int(c) for c in hidden)
        act = nn.LeakyReLU
        self._encoder = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), act(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), act(),
            nn.Conv2d(c2, c2, 3, padding=1), act(),
            nn.Conv2d(c2, latent_dim, 1),
        )
        self._decoder = nn.Sequential(
            nn.Conv2d(latent_dim, c2, 3, padding=1), act(),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), act(),
            nn.Conv2d(c1, in_channels, 3, padding=1), nn.Tanh(),
        )

    @property
    def last_layer(self) -> Tensor:
        return self._decoder[-2].weight
