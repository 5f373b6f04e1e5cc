"""bsq: sign of the unit vector over sqrt(L), MSB-first indices, factorized entropies, the authors' loss."""

from __future__ import annotations

import math

import pytest
import torch

from harness.plugins.quantizers.bsq import BSQ, factorized_entropies
from harness.plugins.quantizers.lfq import corners


def binary_entropy(p: float) -> float:
    return -(p * math.log(p + 1e-8) + (1 - p) * math.log(1 - p + 1e-8))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_quantized_value_indices_and_loss_by_hand():
    q = BSQ(dim=2, codebook_size=4, beta=0.25, loss_weight=1.0).train()
    z = torch.tensor([[3.0, -4.0], [-3.0, -4.0]])
    out = q(z)
    r = 1 / math.sqrt(2)
    # u = (0.6, -0.8) and (-0.6, -0.8); q = sign(u) / sqrt(2); bits MSB first: (1,0) -> 2, (0,0) -> 0
    assert out.indices.tolist() == [2, 0]
    torch.testing.assert_close(out.z_q, torch.tensor([[r, -r], [-r, -r]]))
    # per bit: P(+1) = sigmoid(4 u_i / sqrt(L))
    p = [[sigmoid(4 * 0.6 * r), sigmoid(-4 * 0.8 * r)], [sigmoid(-4 * 0.6 * r), sigmoid(-4 * 0.8 * r)]]
    per_sample = sum(binary_entropy(p[n][i]) for n in range(2) for i in range(2)) / 2
    codebook = sum(binary_entropy((p[0][i] + p[1][i]) / 2) for i in range(2))
    commitment = (0.6 - r) ** 2 + (0.8 - r) ** 2  # the same for both tokens
    assert out.logs["sample_entropy"].item() == pytest.approx(per_sample, rel=1e-5)
    assert out.logs["codebook_entropy"].item() == pytest.approx(codebook, rel=1e-5)
    assert out.loss.item() == pytest.approx(0.25 * commitment + per_sample - codebook, rel=1e-5)
    assert q.bits_per_token == 2.0


def test_default_weights_are_the_authors_configs():
    q = BSQ(dim=2, codebook_size=4).train()
    out = q(torch.tensor([[3.0, -4.0], [-3.0, -4.0]]))
    # beta = 0, gamma0 = gamma = zeta = 1, times their loss module's codebook_weight 0.1
    expected = 0.1 * (out.logs["sample_entropy"] - out.logs["codebook_entropy"])
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_straight_through_scales_the_gradient_by_one_over_sqrt_l():
    q = BSQ(dim=4, codebook_size=16, loss_weight=0.0)
    z = torch.tensor([[1.0, 0.0, 0.0, 0.0]], requires_grad=True)
    g = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    (q(z).z_q * g).sum().backward()
    # u = z / ||z|| at ||z|| = 1: du/dz = I - u u^T leaves the orthogonal direction intact
    torch.testing.assert_close(z.grad, g / 2)


def test_one_group_of_all_bits_is_the_exact_entropy_over_every_code():
    torch.manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(30, 4), dim=-1)
    codes = corners(4, torch.arange(16)) / 2
    p = (2 * u @ codes.t()).softmax(-1)
    exact_sample = -(p * torch.log(p + 1e-8)).sum(-1).mean()
    avg = p.mean(0)
    exact_codebook = -(avg * torch.log(avg + 1e-8)).sum()
    sample, codebook = factorized_entropies(u, group_size=4, inv_temperature=1.0)
    assert sample.item() == pytest.approx(exact_sample.item(), rel=1e-5)
    assert codebook.item() == pytest.approx(exact_codebook.item(), rel=1e-5)
    # per-bit groups factorize the per-sample term exactly (the logits separate over bits)
    bitwise, _ = factorized_entropies(u, group_size=1, inv_temperature=1.0)
    assert bitwise.item() == pytest.approx(exact_sample.item(), rel=1e-4)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="power of two"):
        BSQ(dim=4, codebook_size=12)
    with pytest.raises(ValueError, match="group_size must divide"):
        BSQ(dim=4, codebook_size=16, group_size=3)
