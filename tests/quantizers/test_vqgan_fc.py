"""vqgan-fc: cosine lookup in a low-dimensional space, the chosen code projected back."""

from __future__ import annotations

import math

import torch

from harness.plugins.quantizers.vqgan_fc import VQGANFC
from harness.testing import QuantizerConformance


def hand_fc() -> VQGANFC:
    q = VQGANFC(dim=2, codebook_size=3, lookup_dim=2)
    with torch.no_grad():
        q.proj_in.weight.copy_(torch.eye(2))
        q.proj_in.bias.zero_()
        q.proj_out.weight.copy_(2.0 * torch.eye(2))
        q.proj_out.bias.copy_(torch.tensor([1.0, 1.0]))
        q.embedding.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0], [-1.0, -1.0]]))
    return q


def test_default_lookup_dim_is_8():
    q = VQGANFC(dim=64, codebook_size=16)
    assert q.proj_in.out_features == 8 and q.embedding.shape == (16, 8)


def test_lookup_is_by_cosine_and_the_code_is_projected_back():
    q = hand_fc()
    z = torch.tensor([[10.0, 9.0]], requires_grad=True)
    # raw squared distances to the codes: 162, 136, 221 -> code 1 would win in Euclidean terms;
    # cosines: 10/sqrt(181) = 0.743 with code 0, 9/sqrt(181) = 0.669 with code 1 -> code 0
    out = q(z)
    assert out.indices.tolist() == [0]
    # W_out (1, 0) + b = (2, 0) + (1, 1)
    torch.testing.assert_close(out.z_q, torch.tensor([[3.0, 1.0]]))
    # loss in the lookup space, h = z / |z|, c = (1, 0): mse = ((h0 - 1)^2 + h1^2) / 2 = 1 - h0
    h0 = 10.0 / math.sqrt(181.0)
    torch.testing.assert_close(out.loss, torch.tensor((1.0 + 0.25) * (1.0 - h0)))
    torch.testing.assert_close(q.codebook()[0], torch.tensor([3.0, 1.0]))
    (out.z_q.sum() + out.loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert q.embedding.grad[0].abs().sum() > 0 and q.embedding.grad[1:].abs().sum() == 0


def test_code_scale_does_not_matter():
    q = hand_fc()
    z = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    first = q(z).indices
    with torch.no_grad():
        q.embedding.mul_(torch.tensor([[5.0], [0.1], [7.0]]))
    assert torch.equal(q(z).indices, first)


class TestVQGANFCWideLookup(QuantizerConformance):
    """The conformance kit on vqgan-fc with the paper's other lookup size, 32 (wider than dim)."""

    quantizer = VQGANFC
    params = {"lookup_dim": 32}
