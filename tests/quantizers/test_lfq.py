"""LFQ: sign codes, MSB-first indices, and the entropy terms at uniform and collapsed usage."""

from __future__ import annotations

import math

import pytest
import torch

from harness.plugins.quantizers.lfq import LFQ, bits_to_indices, corners, entropy_terms


def test_codes_and_msb_first_indices() -> None:
    q = LFQ(dim=3, codebook_size=8).eval()
    z = torch.tensor([[0.5, -1.0, 2.0], [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0],
                      [-0.1, 0.3, -2.0], [0.0, 0.0, 1.0]])
    out = q(z)
    # bits (1,0,1) -> 5; (0,0,0) -> 0; (1,1,1) -> 7; (0,1,0) -> 2; 0 counts as -1: (0,0,1) -> 1
    assert out.indices.tolist() == [5, 0, 7, 2, 1]
    assert torch.equal(out.z_q, torch.tensor([[1.0, -1, 1], [-1, -1, -1], [1, 1, 1],
                                              [-1, 1, -1], [-1, -1, 1]]))


def test_corners_invert_indices() -> None:
    codes = corners(4, torch.arange(16))
    assert torch.equal(codes[5], torch.tensor([-1.0, 1, -1, 1]))  # 0101
    assert torch.equal(bits_to_indices(codes), torch.arange(16))
    assert torch.unique(codes, dim=0).shape[0] == 16


def test_codebook_size_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        LFQ(dim=4, codebook_size=12)


def test_projection_when_dim_is_not_the_bit_count() -> None:
    assert isinstance(LFQ(dim=4, codebook_size=16).project_in, torch.nn.Identity)
    q = LFQ(dim=8, codebook_size=16)
    assert q.project_in.out_features == 4 and q.codebook().shape == (16, 8)


def test_entropy_terms_at_uniform_and_collapsed_usage() -> None:
    d = 3
    # each token sits far out on a distinct corner: p_n is one-hot (temperature 0.01)
    uniform = 10 * corners(d, torch.arange(8))
    sample, codebook = entropy_terms(uniform, 0.01)
    assert sample.item() == pytest.approx(0.0, abs=1e-6)
    assert codebook.item() == pytest.approx(math.log(8), abs=1e-5)
    collapsed = 10 * corners(d, torch.full((8,), 3))
    sample, codebook = entropy_terms(collapsed, 0.01)
    assert sample.item() == pytest.approx(0.0, abs=1e-6)
    assert codebook.item() == pytest.approx(0.0, abs=1e-6)
    # z = 0: every bit is a fair coin, per-token entropy d log 2 = log K
    sample, codebook = entropy_terms(torch.zeros(5, d), 0.01)
    assert sample.item() == pytest.approx(d * math.log(2), rel=1e-6)
    assert codebook.item() == pytest.approx(math.log(8), rel=1e-6)


def test_training_loss_at_uniform_and_collapsed_usage() -> None:
    q = LFQ(dim=3, codebook_size=8).train()
    # tokens exactly on the corners: commitment 0, per-token entropy 0
    uniform = q(corners(3, torch.arange(8)))
    assert uniform.loss.item() == pytest.approx(-0.1 * math.log(8), abs=1e-4)
    collapsed = q(corners(3, torch.zeros(8, dtype=torch.long)))
    assert collapsed.loss.item() == pytest.approx(0.0, abs=1e-4)
    # commitment: 0.25 * mse(z, sign z); eval has no entropy terms
    z = torch.tensor([[0.5, -2.0, 1.0]])
    assert q.eval()(z).loss.item() == pytest.approx(0.25 * (0.25 + 1.0 + 0.0) / 3)


def test_entropy_terms_match_the_full_softmax_definition() -> None:
    torch.manual_seed(0)
    z = torch.randn(40, 4)
    temperature = 1.0
    logits = 2 * z @ corners(4, torch.arange(16)).t() / temperature
    p = logits.softmax(1)
    expected_sample = -(p * p.log()).sum(1).mean()
    avg = p.mean(0)
    expected_codebook = -(avg * avg.log()).sum()
    sample, codebook = entropy_terms(z, temperature)
    assert sample.item() == pytest.approx(expected_sample.item(), rel=1e-5)
    assert codebook.item() == pytest.approx(expected_codebook.item(), rel=1e-5)


def test_blocked_codebook_entropy_matches_and_has_the_same_gradient() -> None:
    torch.manual_seed(1)
    z1 = torch.randn(37, 4, requires_grad=True)
    z2 = z1.detach().clone().requires_grad_(True)
    _, whole = entropy_terms(z1, 0.5)
    _, blocked = entropy_terms(z2, 0.5, block=16 * 5)  # blocks of 5 tokens
    assert blocked.item() == pytest.approx(whole.item(), rel=1e-6)
    whole.backward()
    blocked.backward()
    assert torch.allclose(z1.grad, z2.grad, atol=1e-6)
