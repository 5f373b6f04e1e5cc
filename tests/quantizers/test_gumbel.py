"""Gumbel-softmax VQ: eval argmax, hard training samples, KL to uniform, tau attribute."""

from __future__ import annotations

import math

import pytest
import torch

from harness.plugins.quantizers.gumbel import GumbelQuantizer, kl_to_uniform


def quantizer(k: int = 3) -> GumbelQuantizer:
    q = GumbelQuantizer(dim=2, codebook_size=k)
    with torch.no_grad():
        # logits = (z_0, z_1, 0, ...): code 0 wins when z_0 is largest, etc.
        q.proj.weight.zero_()
        q.proj.weight[0, 0] = 1.0
        q.proj.weight[1, 1] = 1.0
        q.proj.bias.zero_()
    return q


def test_eval_takes_the_argmax() -> None:
    q = quantizer().eval()
    z = torch.tensor([[2.0, 1.0], [-1.0, 0.5], [-1.0, -2.0]])
    out = q(z)
    # logits (2, 1, 0) -> 0; (-1, .5, 0) -> 1; (-1, -2, 0) -> 2
    assert out.indices.tolist() == [0, 1, 2]
    assert torch.equal(out.z_q, q.embedding.detach()[[0, 1, 2]])
    assert torch.equal(q(z).indices, out.indices)  # no sampling in eval


def test_training_samples_are_hard_codes_with_straight_through_gradients() -> None:
    torch.manual_seed(0)
    q = quantizer().train()
    # a logit gap of 100 leaves the Gumbel noise (tail ~e^-100) no chance
    z = torch.tensor([[100.0, 0.0], [0.0, 100.0]], requires_grad=True)
    out = q(z)
    assert out.indices.tolist() == [0, 1]
    assert torch.equal(out.z_q, q.embedding.detach()[[0, 1]])
    g = torch.randn(2, 2)
    (out.z_q * g).sum().backward()
    # z_q = y @ E with one-hot y: dE = y^T g, only the sampled rows
    assert torch.allclose(q.embedding.grad, torch.stack([g[0], g[1], torch.zeros(2)]))
    assert q.proj.weight.grad is not None and z.grad is not None


def test_training_samples_follow_the_softmax() -> None:
    torch.manual_seed(0)
    q = quantizer(k=2).train()
    # logits (log 3, 0): code 0 has probability 3/4 at tau = 1
    z = torch.tensor([[math.log(3.0), 0.0]]).expand(4000, 2)
    share = (q(z).indices == 0).float().mean().item()
    assert share == pytest.approx(0.75, abs=0.03)  # 4 standard errors
    # Gumbel-max: argmax(logits + g) ~ softmax(logits) whatever tau; tau shapes only the gradient
    q.tau = 0.1
    assert (q(z).indices == 0).float().mean().item() == pytest.approx(0.75, abs=0.03)


def test_kl_to_uniform_by_hand() -> None:
    assert kl_to_uniform(torch.zeros(4, 5)).item() == pytest.approx(0.0, abs=1e-7)
    # K = 2, logits (log 2, 0): q = (2/3, 1/3); KL = 2/3 log(4/3) + 1/3 log(2/3)
    expected = 2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3)
    assert kl_to_uniform(torch.tensor([[math.log(2.0), 0.0]])).item() == pytest.approx(expected, rel=1e-6)
    q = quantizer(k=2).eval()
    out = q(torch.tensor([[math.log(2.0), 0.0]]))
    assert out.loss.item() == pytest.approx(5e-4 * expected, rel=1e-5)


def test_tau_must_be_positive() -> None:
    with pytest.raises(ValueError, match="tau must be positive"):
        GumbelQuantizer(dim=2, codebook_size=4, tau=0.0)
    q = quantizer()
    q.tau = -1.0
    with pytest.raises(ValueError, match="tau must be positive"):
        q(torch.zeros(1, 2))
