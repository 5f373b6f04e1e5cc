"""The conv VQ-VAE of Beyond Stationarity's Table 1 (CelebA-HQ), as its public code builds it."""

from __future__ import annotations

from torch import Tensor, nn

from harness.contracts import Model


class ResidualLayer(nn.Module):
    """``x + Conv1x1(ReLU(Conv3x3(x)))`` without biases (the public code's residual layer)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ConvVQVAE(Model):
    """Conv VQ-VAE of NS-VQ's Table 1: two stride-2 convs, 6 residual layers, f = 4.

    Beyond Stationarity (NS-VQ / TransVQ), Table 1, with the layer details of its public
    code (``NS_Trans_VQ_CelebA/models/vq_vae.py``):

    - encoder: Conv4x4 s2 3->128, LReLU; Conv4x4 s2 128->256, LReLU;
      Conv3x3 256->256, LReLU; 6 residual layers; LReLU; Conv1x1 256->D, LReLU;
    - decoder: Conv3x3 D->256, LReLU; 6 residual layers; LReLU;
      ConvTranspose4x4 s2 256->128, LReLU; ConvTranspose4x4 s2 128->3, Tanh.

    Downsampling factor 4: 256x256 images give 64x64 tokens, 128x128 give 32x32.
    Defaults: ``hidden=(128, 256)`` (the table's widths), ``num_residual=6``.
    Values the table leaves out: the LeakyReLU slope is PyTorch's default 0.01
    (the public code uses ``nn.LeakyReLU()``); the residual layers' inner width
    equals the outer width (256), as in the public code; the residual convs have
    no bias, every other conv has one (PyTorch's default).
    """

    name = "vqvae-celeba"
    paper = "Beyond Stationarity"

    def __init__(self, latent_dim: int = 64, hidden: tuple[int, int] | list[int] = (128, 256),
                 num_residual: int = 6, in_channels: int = 3) -> None:
        super().__init__(latent_dim)
        if len(hidden) != 2:
            raise ValueError(f"vqvae-celeba: hidden must give two widths (f = 4), got {hidden!r}")
        c1, c2 = (int(c) for c in hidden)
        act = nn.LeakyReLU
        self._encoder = nn.Sequential(
            nn.Conv2d(in_channels, c1, 4, stride=2, padding=1), act(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), act(),
            nn.Conv2d(c2, c2, 3, padding=1), act(),
            *(ResidualLayer(c2) for _ in range(num_residual)), act(),
            nn.Conv2d(c2, latent_dim, 1), act(),
        )
        self._decoder = nn.Sequential(
            nn.Conv2d(latent_dim, c2, 3, padding=1), act(),
            *(ResidualLayer(c2) for _ in range(num_residual)), act(),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), act(),
            nn.ConvTranspose2d(c1, in_channels, 4, stride=2, padding=1), nn.Tanh(),
        )

    @property
    def last_layer(self) -> Tensor:
        return self._decoder[-2].weight
