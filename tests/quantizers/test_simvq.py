"""simvq: the codebook is W(C) with C frozen; loss beta * mse(sg(z_q), z) + mse(z_q, sg(z))."""

from __future__ import annotations

import torch

from harness.plugins.quantizers.simvq import SimVQ
from harness.testing import QuantizerConformance


def hand_simvq() -> SimVQ:
    q = SimVQ(dim=2, codebook_size=3)
    q.frozen_codes.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    with torch.no_grad():
        q.proj.weight.copy_(torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
        q.proj.bias.copy_(torch.tensor([0.5, -0.5]))
    return q


def test_codebook_is_w_of_c_by_hand():
    # W c + b: (1,0) -> (2,1) + b; (0,1) -> (0,1) + b; (1,1) -> (2,2) + b
    expected = torch.tensor([[2.5, 0.5], [0.5, 0.5], [2.5, 1.5]])
    torch.testing.assert_close(hand_simvq().codebook(), expected)


def test_loss_and_gradients_by_hand():
    q = hand_simvq()
    z = torch.tensor([[0.5, 1.5]], requires_grad=True)
    out = q(z)
    # squared distances 5, 1, 4: code 1 = (0.5, 0.5); mse = (0^2 + 1^2) / 2 = 0.5
    assert out.indices.tolist() == [1]
    torch.testing.assert_close(out.z_q, torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(out.loss, torch.tensor(0.25 * 0.5 + 0.5))
    out.loss.backward()
    # d/dz of 0.25 * mse(z, sg(e)) = 0.25 * 2 (z - e) / 2
    torch.testing.assert_close(z.grad, torch.tensor([[0.0, 0.25]]))
    # d/de of mse(e, sg(z)) = (e - z) = (0, -1); e = W c_1 + b with c_1 = (0, 1):
    # dW = g c_1^T, db = g
    torch.testing.assert_close(q.proj.weight.grad, torch.tensor([[0.0, 0.0], [0.0, -1.0]]))
    torch.testing.assert_close(q.proj.bias.grad, torch.tensor([0.0, -1.0]))


def test_c_is_frozen_and_every_code_moves():
    q = hand_simvq()
    assert [n for n, _ in q.named_parameters()] == ["proj.weight", "proj.bias"]
    before, frozen = q.codebook().detach().clone(), q.frozen_codes.clone()
    opt = torch.optim.SGD(q.parameters(), lr=0.1)
    q(torch.tensor([[0.5, 1.5]])).loss.backward()  # one token, one chosen code
    opt.step()
    assert torch.equal(q.frozen_codes, frozen)
    moved = (q.codebook().detach() - before).abs().sum(1)
    assert (moved > 0).all(), "the linear map moves every code, not only the chosen one"


def test_frozen_codes_are_normal_with_variance_one_over_d():
    torch.manual_seed(0)
    q = SimVQ(dim=16, codebook_size=4096)
    std = float(q.frozen_codes.std())
    assert abs(std - 0.25) < 0.01  # 1 / sqrt(16), from 65,536 draws
    assert abs(float(q.frozen_codes.mean())) < 0.01


class TestSimVQSmallBeta(QuantizerConformance):
    """The conformance kit on simvq at another commitment weight and odd sizes."""

    quantizer = SimVQ
    params = {"beta": 0.1}
    dim, codebook_size = 5, 7
