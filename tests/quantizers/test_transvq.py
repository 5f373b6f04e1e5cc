"""transvq and transvq-mlp: the paper's architecture, linear attention by hand, loss, code coupling."""

from __future__ import annotations

import pytest
import torch

from harness.plugins.quantizers.transvq import LinearAttention, TransVQ, TransVQMLP
from harness.testing import QuantizerConformance


def test_default_architecture_is_the_papers():
    q = TransVQ(dim=64, codebook_size=32)
    shapes = {name: tuple(p.shape) for name, p in q.named_parameters()}
    assert shapes == {
        "proj_in.weight": (256, 64),
        "code_embedding": (32, 256),
        "blocks.0.norm1.weight": (256,), "blocks.0.norm1.bias": (256,),
        "blocks.0.attn.to_q.weight": (256, 256), "blocks.0.attn.to_k.weight": (256, 256),
        "blocks.0.attn.to_v.weight": (256, 256), "blocks.0.attn.to_out.weight": (256, 256),
        "blocks.0.norm2.weight": (256,), "blocks.0.norm2.bias": (256,),
        "blocks.0.ffn.0.weight": (512, 256), "blocks.0.ffn.0.bias": (512,),
        "blocks.0.ffn.2.weight": (256, 512), "blocks.0.ffn.2.bias": (256,),
        "norm.weight": (256,), "norm.bias": (256,),
        "proj_out.weight": (64, 256),
    }
    assert q.blocks[0].attn.heads == 1
    assert "frozen_codes" in dict(q.named_buffers())
    torch.manual_seed(0)
    big = TransVQ(dim=16, codebook_size=4096, width=8)
    assert abs(float(big.frozen_codes.std()) - 0.25) < 0.01  # randn / sqrt(16)


def test_linear_attention_by_hand():
    attn = LinearAttention(width=2, heads=1)
    with torch.no_grad():
        for lin in (attn.to_q, attn.to_k, attn.to_v, attn.to_out):
            lin.weight.copy_(torch.eye(2))
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # phi(x) = elu(x) + 1 = x + 1 here: (1, 2), (2, 1); v = x
    # sum_j phi(k_j)^T v_j = [[2, 1], [1, 2]]; sum_j phi(k_j) = (3, 3)
    # out_1 = (1, 2) [[2, 1], [1, 2]] / ((1, 2) . (3, 3)) = (4, 5) / 9; out_2 = (5, 4) / 9
    expected = torch.tensor([[4.0, 5.0], [5.0, 4.0]]) / 9.0
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_loss_and_decoding_through_the_full_codebook():
    torch.manual_seed(0)
    q = TransVQ(dim=3, codebook_size=6, width=8)
    z = torch.randn(10, 3, requires_grad=True)
    out = q(z)
    codes = q.codebook()
    torch.testing.assert_close(out.z_q, codes[out.indices])
    mse = (codes[out.indices] - z).pow(2).mean()
    torch.testing.assert_close(out.loss, 1.25 * mse)  # mse(sg(z), q) + 0.25 mse(z, sg(q))
    out.loss.backward()
    torch.testing.assert_close(z.grad, 0.25 * 2 * (z - codes[out.indices]).detach() / z.numel())


def test_every_code_moves_and_c_stays_frozen():
    torch.manual_seed(0)
    q = TransVQ(dim=3, codebook_size=6, width=8)
    frozen, before = q.frozen_codes.clone(), q.codebook().detach().clone()
    opt = torch.optim.SGD(q.parameters(), lr=0.1)
    q(torch.randn(1, 3)).loss.backward()  # one token: one chosen code
    opt.step()
    assert torch.equal(q.frozen_codes, frozen)
    assert ((q.codebook().detach() - before).abs().sum(1) > 0).all()


@pytest.mark.parametrize(("cls", "coupled"), [(TransVQ, True), (TransVQMLP, False)])
def test_attention_couples_the_codes_and_the_mlp_does_not(cls, coupled):
    torch.manual_seed(0)
    q = cls(dim=3, codebook_size=5, width=8)
    before = q.codebook().detach().clone()
    with torch.no_grad():
        q.frozen_codes[0] += 1.0
    after = q.codebook().detach()
    assert not torch.allclose(after[0], before[0])
    assert (not torch.allclose(after[1:], before[1:])) == coupled


def test_mlp_variant_has_no_attention():
    q = TransVQMLP(dim=4, codebook_size=8)
    assert not any(isinstance(m, LinearAttention) for m in q.modules())
    assert q.blocks[0].ffn[0].weight.shape == (512, 256)


def test_bad_widths_are_rejected():
    with pytest.raises(ValueError, match="divisible"):
        TransVQ(dim=4, codebook_size=8, width=10, heads=3)


class TestTransVQTwoHeadsTwoBlocks(QuantizerConformance):
    """The conformance kit on a deeper, multi-head TransVQ than the paper's default."""

    quantizer = TransVQ
    params = {"width": 16, "heads": 2, "depth": 2}


class TestTransVQMLPDeep(QuantizerConformance):
    quantizer = TransVQMLP
    params = {"width": 16, "depth": 2}
