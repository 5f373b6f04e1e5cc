"""CVQ-VAE: hand-computed steps of the authors' quantise.py path (cosine and l2), anchors, validation."""

from __future__ import annotations

import math

import pytest
import torch

from harness.plugins.quantizers.cvq import CVQ, anchor_rows


def quantizer(**params) -> CVQ:
    q = CVQ(dim=2, codebook_size=2, **params)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    return q


Z = torch.tensor([[2.0, 0.1], [3.0, -0.1]])


@pytest.mark.parametrize(("distance", "anchor_of_code0"), [("cos", 1), ("l2", 0)])
def test_one_training_step_by_hand(distance: str, anchor_of_code0: int) -> None:
    q = quantizer(distance=distance)
    z = Z.clone().requires_grad_(True)
    out = q(z)
    # both tokens are nearest code 0 = (1, 0) by cosine (0.9988, 0.9994 vs 0.05, -0.03) and by l2 (1.01, 4.01)
    assert out.indices.tolist() == [0, 0]
    # loss = 0.25 mse(z, sg e) + mse(e, sg z); mse = (1 + 0.01 + 4 + 0.01) / 4 = 1.255
    assert out.loss.item() == pytest.approx(1.25 * 1.255)
    # the output is the code from before the step (straight-through value)
    assert torch.allclose(out.z_q, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    # usage p = 0.01 * (1, 0); mixing a_k = exp(-p_k K 10 / (1 - 0.99) - 1e-3)
    assert torch.allclose(q.embed_prob, torch.tensor([0.01, 0.0]))
    a0, a1 = math.exp(-0.01 * 2 * 10 / 0.01 - 1e-3), math.exp(-1e-3)
    # anchors: the token most similar to each code; code 1's is token 0 under both (cos 0.05 vs -0.03,
    # squared distance 4.81 vs 10.21); code 0's is token 1 by cosine (0.9994) but token 0 by l2 (1.01)
    f0, f1 = Z[anchor_of_code0], Z[0]
    expected = torch.stack([torch.tensor([1.0, 0.0]) * (1 - a0) + f0 * a0,
                            torch.tensor([0.0, 1.0]) * (1 - a1) + f1 * a1])
    assert torch.allclose(q.embedding.detach(), expected, atol=1e-7)
    assert out.logs["codes_reanchored"].item() == 1.0
    # gradient of the codebook term on the old code 0: sum over its tokens of 2 (e - z) / 4 = (-1.5, 0)
    out.loss.backward()
    assert torch.allclose(q.embedding.grad, torch.tensor([[-1.5, 0.0], [0.0, 0.0]]), atol=1e-6)
    # straight-through: the commitment term's gradient plus nothing from z_q here
    assert torch.allclose(z.grad, 0.25 * 2 * (Z - torch.tensor([1.0, 0.0])) / 4)


def test_eval_changes_no_code() -> None:
    q = quantizer().eval()
    before = q.embedding.detach().clone()
    out = q(Z)
    assert out.indices.tolist() == [0, 0] and torch.equal(q.embedding.detach(), before)
    assert torch.equal(q.embed_prob, torch.zeros(2))


def test_probrandom_anchor_follows_the_softmax_over_tokens() -> None:
    # one code, three tokens with l2 similarity -||z - c||^2 = 0, -ln 2 ... : softmax over tokens
    codes = torch.zeros(1, 1)
    z = torch.tensor([[0.0], [math.sqrt(math.log(2))], [math.sqrt(math.log(4))]])
    torch.manual_seed(0)
    draws = torch.stack([anchor_rows(z, codes, "l2", "probrandom") for _ in range(20000)]).flatten()
    freq = torch.bincount(draws, minlength=3).float() / draws.numel()
    assert torch.allclose(freq, torch.tensor([4 / 7, 2 / 7, 1 / 7]), atol=0.015)


def test_anchor_search_is_the_same_in_chunks() -> None:
    g = torch.Generator().manual_seed(2)
    z, codes = torch.randn(300, 4, generator=g), torch.randn(40, 4, generator=g)
    for distance in ("cos", "l2"):
        full = anchor_rows(z, codes, distance, "closest")
        chunked = anchor_rows(z, codes, distance, "closest", max_block_bytes=40 * 4 * 7)
        assert torch.equal(full, chunked)


@pytest.mark.parametrize(("params", "message"), [
    ({"distance": "dot"}, "distance must be one of"),
    ({"anchor": "random"}, "anchor must be one of"),
    ({"decay": 1.0}, r"decay must lie in \[0, 1\)"),
])
def test_bad_settings_are_refused(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CVQ(dim=2, codebook_size=4, **params)
