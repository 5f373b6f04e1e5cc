"""The image models: shapes, downsampling factors, layer widths and parameter counts from the tables."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.host import get_host

IMAGE_MODELS = ("vqvae-celeba", "taming-3stage", "conv-small")


@pytest.fixture(scope="module")
def models():
    return get_host().models


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_registered_with_docs(models, name):
    cls = models.get(name).obj
    assert cls.name == name
    assert cls.paper
    assert cls.__doc__ and cls.__doc__.strip().splitlines()[0]


def convs(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_vqvae_celeba_downsamples_by_4(models):
    model = models.get("vqvae-celeba").obj(latent_dim=5, hidden=(8, 16), num_residual=2)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = model.encode(x)
    assert z.shape == (2, 5, 8, 8)  # f = 4 (64x64 tokens at 256)
    x_hat = model.decode(z)
    assert x_hat.shape == x.shape
    assert x_hat.abs().max() <= 1  # Tanh output


def test_vqvae_celeba_matches_table_1(models):
    """Table 1 with the public code's layers; the count is summed layer by layer from the table."""
    d = 64
    model = models.get("vqvae-celeba").obj(latent_dim=d)
    residual = 6 * (256 * 256 * 9 + 256 * 256)  # 3x3 then 1x1, no bias
    encoder = (3 * 128 * 16 + 128) + (128 * 256 * 16 + 256) + (256 * 256 * 9 + 256) + residual + (256 * d + d)
    decoder = (d * 256 * 9 + 256) + residual + (256 * 128 * 16 + 128) + (128 * 3 * 16 + 3)
    assert count(model.encoder) == encoder
    assert count(model.decoder) == decoder
    strided = [(m.in_channels, m.out_channels) for m in convs(model) if m.stride == (2, 2)]
    assert strided == [(3, 128), (128, 256), (256, 128), (128, 3)]
    assert sum(isinstance(m, nn.LeakyReLU) for m in model.encoder.modules()) == 5
    assert model.last_layer is model.decoder[-2].weight
    assert model.last_layer.shape == (128, 3, 4, 4)


def test_taming_downsamples_by_8(models):
    model = models.get("taming-3stage").obj(latent_dim=4, channels=(8, 16, 32), num_res_blocks=1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = model.encode(x)
    assert z.shape == (2, 4, 4, 4)  # f = 8 (16x16 tokens at 128)
    assert model.decode(z).shape == x.shape


def test_taming_matches_appendix_table(models):
    d = 3
    model = models.get("taming-3stage").obj(latent_dim=d)
    down = [(m.in_channels, m.out_channels) for m in convs(model.encoder) if m.stride == (2, 2)]
    assert down == [(3, 128), (128, 256), (256, 512)]
    up = [(m.in_channels, m.out_channels) for m in convs(model.decoder) if isinstance(m, nn.ConvTranspose2d)]
    assert up == [(512, 256), (256, 128), (128, 128)]  # the third is the one the table leaves out
    block = {c: 2 * (c * c * 9 + c) for c in (128, 256, 512)}  # 2 convs 3x3 with bias
    res = 2 * sum(block.values())  # 2 blocks per stage
    encoder = ((3 * 128 * 16 + 128) + (128 * 256 * 16 + 256) + (256 * 512 * 16 + 512) + res
               + (512 * d * 9 + d) + (d * d + d))
    decoder = ((d * d + d) + (d * 512 * 9 + 512) + res + (512 * 256 * 16 + 256) + (256 * 128 * 16 + 128)
               + (128 * 128 * 16 + 128) + (128 * 3 * 9 + 3))
    assert count(model.encoder) == encoder
    assert count(model.decoder) == decoder
    assert model.last_layer.shape == (3, 128, 3, 3)


def test_conv_small_gives_4x4_tokens_for_digits(models):
    model = models.get("conv-small").obj(latent_dim=6)
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    z = model.encode(x)
    assert z.shape == (3, 6, 4, 4)
    assert model.decode(z).shape == x.shape


@pytest.mark.parametrize("name,size,params", [
    ("vqvae-celeba", 16, {"hidden": (4, 8), "num_residual": 1}),
    ("taming-3stage", 16, {"channels": (4, 8, 8), "num_res_blocks": 1}),
    ("conv-small", 8, {}),
])
def test_last_layer_receives_the_reconstruction_gradient(models, name, size, params):
    model = models.get(name).obj(latent_dim=3, **params)
    x = torch.rand(2, 3, size, size) * 2 - 1
    loss = ((model.decode(model.encode(x)) - x) ** 2).mean()
    loss.backward()
    assert model.last_layer.grad is not None and model.last_layer.grad.abs().sum() > 0
    assert any(p is model.last_layer for p in model.decoder.parameters())


def test_bad_widths_are_rejected(models):
    with pytest.raises(ValueError, match="two widths"):
        models.get("vqvae-celeba").obj(latent_dim=4, hidden=(8, 16, 32))
