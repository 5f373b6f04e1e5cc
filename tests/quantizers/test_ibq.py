"""ibq: hard argmax of z C^T, softmax straight-through to every code, the authors' three-term loss."""

from __future__ import annotations

import math

import pytest
import torch

from harness.plugins.quantizers import ibq
from harness.plugins.quantizers.ibq import IBQ, index_backprop


def hand_ibq(entropy_weight: float = 0.0) -> IBQ:
    q = IBQ(dim=2, codebook_size=3, entropy_weight=entropy_weight)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    return q


def test_forward_value_and_loss_by_hand():
    q = hand_ibq().train()
    z = torch.tensor([[2.0, 1.0]], requires_grad=True)
    out = q(z)
    # logits <z, c_k> = (2, 1, -3): argmax is code 0 (not the nearest-code rule: it is an inner product)
    assert out.indices.tolist() == [0]
    assert torch.equal(out.z_q, torch.tensor([[1.0, 0.0]]))
    # mse(C[0], z) = ((1-2)^2 + (0-1)^2) / 2 = 1; loss = mse(z_q, z) + mse(sg e, z) + 0.25 mse(e, sg z)
    assert out.loss.item() == pytest.approx(2.25)


def test_every_code_gets_the_softmax_gradient_by_hand():
    q = hand_ibq().train()
    z = torch.tensor([[2.0, 1.0]])
    g = torch.tensor([[0.5, -1.0]])
    (q(z).z_q * g).sum().backward()
    # the decoder gradient g reaches the chosen code through the hard one-hot (dC_0 += g) and,
    # through soft = softmax(z C^T), every code k: dlogit_k = s_k (g.c_k - sum_j s_j g.c_j), dC_k += dlogit_k z
    codes = q.embedding.detach()
    s = torch.softmax(torch.tensor([2.0, 1.0, -3.0]), 0)
    gc = codes @ g[0]  # (0.5, -1, 0.5)
    dlogit = s * (gc - (s * gc).sum())
    expected = dlogit[:, None] * z
    expected[0] += g[0]
    torch.testing.assert_close(q.embedding.grad, expected)
    assert bool((q.embedding.grad[2].abs() > 0).all()), "the unchosen code 2 must get a gradient"


def test_entropy_term_at_collapsed_and_spread_usage():
    q = hand_ibq(entropy_weight=0.05).train()
    # temperature 0.01 makes p one-hot: sample entropy 0; usage entropy log 2 for two codes, 0 for one
    spread = q(torch.tensor([[3.0, 0.0], [0.0, 3.0]]))
    assert spread.logs["sample_entropy"].item() == pytest.approx(0.0, abs=1e-6)
    assert spread.logs["codebook_entropy"].item() == pytest.approx(-math.log(0.5 + 1e-5), rel=1e-6)
    collapsed = q(torch.tensor([[3.0, 0.0], [4.0, 0.0]]))
    assert collapsed.logs["codebook_entropy"].item() == pytest.approx(-math.log(1 + 1e-5), abs=1e-6)
    assert "sample_entropy" not in q.eval()(torch.tensor([[3.0, 0.0]])).logs  # training only


def test_chunked_pass_matches_the_whole_matrix_with_the_same_gradients():
    torch.manual_seed(3)
    z1 = torch.randn(50, 6, requires_grad=True)
    c1 = torch.randn(40, 6, requires_grad=True)
    z2, c2 = (t.detach().clone().requires_grad_(True) for t in (z1, c1))
    g = torch.randn(50, 6)
    whole = index_backprop(z1, c1, 0.5, True)
    chunked = index_backprop(z2, c2, 0.5, True, block_bytes=4 * 40 * 7)  # 7 tokens a chunk
    assert torch.equal(whole[0], chunked[0])
    for a, b in zip(whole[2:], chunked[2:], strict=True):
        torch.testing.assert_close(a, b)
    for _, s, p, h in (whole, chunked):
        ((s * g).sum() + p.pow(2).sum() + h).backward()
    torch.testing.assert_close(z1.grad, z2.grad)
    torch.testing.assert_close(c1.grad, c2.grad)


def test_large_codebook_keeps_the_block_bounded(monkeypatch):
    seen = []
    original = ibq._chunk_terms

    def spy(z, codes, *args):
        seen.append(z.shape[0] * codes.shape[0] * 4)
        return original(z, codes, *args)

    monkeypatch.setattr(ibq, "_chunk_terms", spy)
    q = IBQ(dim=4, codebook_size=2**14).train()
    out = q(torch.randn(3000, 4))
    out.loss.backward()
    assert len(seen) > 1 and max(seen) <= ibq.BLOCK_BYTES
    assert q.bits_per_token == 14.0
