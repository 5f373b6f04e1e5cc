"""drifting (Liu 2026): the potential's value and gradient on hand-computed cases."""

from __future__ import annotations

import math

import torch

from harness.plugins.quantizers.drifting import DriftingVQ, drifting_energy, pair_potential


def test_pair_potential_and_its_force():
    r = torch.tensor([0.0, 1.0, 2.5], requires_grad=True)
    tau = 0.7
    u = pair_potential(r, tau)
    torch.testing.assert_close(u, tau * (r + tau) * torch.exp(-r / tau))
    (grad,) = torch.autograd.grad(u.sum(), r)
    # dU/dr = -r exp(-r/tau): the force r exp(-r/tau) of drifting models
    torch.testing.assert_close(grad, -r.detach() * torch.exp(-r.detach() / tau))


def test_one_token_one_code_attract():
    token = torch.tensor([[3.0, 4.0]], requires_grad=True)  # r = 5 from the code at the origin
    code = torch.zeros(1, 2, requires_grad=True)
    tau = 2.0
    energy = drifting_energy(token, code, tau)
    # charges +1 and -1: E = -U(5) = -tau (5 + tau) exp(-5/tau)
    assert math.isclose(energy.item(), -tau * 7.0 * math.exp(-2.5), rel_tol=1e-5)
    energy.backward()
    # dE/dx = -U'(r) (x - c) / r = exp(-r/tau) (x - c): descent pulls the token onto the code
    torch.testing.assert_close(token.grad, math.exp(-2.5) * torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(code.grad, -token.grad)


def test_like_charges_repel_and_the_total_counts_each_pair_once():
    tokens = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    codes = torch.tensor([[0.0, 2.0]])
    tau = 1.0
    u = lambda r: tau * (r + tau) * math.exp(-r / tau)  # noqa: E731
    expected = (0.5 * 0.5) * u(1.0) + (0.5 * -1.0) * (u(2.0) + u(math.sqrt(5.0)))
    assert math.isclose(drifting_energy(tokens, codes, tau).item(), expected, rel_tol=1e-5)


def test_eval_mode_adds_no_loss_and_train_mode_weights_the_potential():
    q = DriftingVQ(dim=2, codebook_size=4, tau=1.0, beta=0.5)
    z = torch.randn(16, 2)
    train_out = q(z)
    torch.testing.assert_close(train_out.loss, 0.5 * drifting_energy(z, q.embedding, 1.0))
    assert q.eval()(z).loss.item() == 0.0
