"""The Taming-style three-stage conv net of Beyond Stationarity's ImageNet appendix (f = 8)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from harness.contracts import Model


class ResidualBlock(nn.Module):
    """``x + Conv3x3(LReLU(Conv3x3(LReLU(x))))``: taming's pre-activation block, no norm."""

    def __init__(self, channels: int, negative_slope: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.LeakyReLU(negative_slope), nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(negative_slope), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class Taming3Stage(Model):
    """Taming-style 3-stage conv VQ-VAE of NS-VQ's ImageNet appendix: 128-256-512, f = 8.

    Beyond Stationarity, supplementary section 12 (table "Encoder | Decoder").
    Encoder: per stage a Conv4x4 s2 (3->128, 128->256,
    256->512) with LeakyReLU, then 2 residual blocks at that width; then
    Conv3x3 512->D and ``quant_conv`` (1x1, D->D). Decoder: ``post_quant_conv``
    (1x1, D->D); Conv3x3 D->512, LeakyReLU; per stage 2 residual blocks then a
    ConvTranspose4x4 s2 to the next width (512->256, 256->128), LeakyReLU;
    Conv3x3 128->3, Tanh. No self-attention, no normalization layers (the table
    shows none). 128x128 images give 16x16 tokens.

    Defaults: ``channels=(128, 256, 512)``, ``num_res_blocks=2``.
    Values the table leaves out, and the choices made here:

    - The table's decoder has two ConvTranspose layers against the encoder's
      three stride-2 convs, which cannot invert f = 8 (the appendix text
      says f = 8, 16x16 tokens at 128). We add the missing third
      upsampling as ConvTranspose4x4 s2 128->128 + LeakyReLU after the last
      residual blocks, just before the output conv: the smallest change that
      mirrors the encoder.
    - "ResidualBlock" is not defined: we use taming's pre-activation form
      ``x + conv(act(conv(act(x))))`` with both convs 3x3, biases on, and the
      table's LeakyReLU in place of taming's GroupNorm + swish.
    - LeakyReLU slope: 0.01 (PyTorch's default, as in the same authors'
      CelebA code, which calls ``nn.LeakyReLU()``).
    - The table's "3" after the last encoder conv is the embedding dimension;
      here it is the cell's latent dimension D.
    """

    name = "taming-3stage"
    paper = "Beyond Stationarity"

    def __init__(self, latent_dim: int = 3, channels: Sequence[int] = (128, 256, 512),
                 num_res_blocks: int = 2, negative_slope: float = 0.01, in_channels: int = 3) -> None:
        super().__init__(latent_dim)
        widths = [int(c) for c in channels]
        if not widths:
            raise ValueError("taming-3stage: channels must name at least one stage width")

        def act() -> nn.Module:
            return nn.LeakyReLU(negative_slope)

        def blocks(c: int) -> list[nn.Module]:
            return [ResidualBlock(c, negative_slope) for _ in range(num_res_blocks)]

        enc: list[nn.Module] = []
        prev = in_channels
        for c in widths:
            enc += [nn.Conv2d(prev, c, 4, stride=2, padding=1), act(), *blocks(c)]
            prev = c
        enc += [nn.Conv2d(prev, latent_dim, 3, padding=1), nn.Conv2d(latent_dim, latent_dim, 1)]

        dec: list[nn.Module] = [nn.Conv2d(latent_dim, latent_dim, 1),
                                nn.Conv2d(latent_dim, widths[-1], 3, padding=1), act()]
        rev = widths[::-1]
        for i, c in enumerate(rev):
            out = rev[i + 1] if i + 1 < len(rev) else c
            dec += [*blocks(c), nn.ConvTranspose2d(c, out, 4, stride=2, padding=1), act()]
        dec += [nn.Conv2d(rev[-1], in_channels, 3, padding=1), nn.Tanh()]
        self._encoder = nn.Sequential(*enc)
        self._decoder = nn.Sequential(*dec)

    @property
    def last_layer(self) -> Tensor:
        return self._decoder[-2].weight
