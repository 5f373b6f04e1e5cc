"""ns-vq: kernel weights, the dense embedding loss, the modified straight-through, the vq_new variant."""

from __future__ import annotations

import math

import pytest
import torch

from harness.plugins.quantizers.ns_vq import NonStationaryVQ, kernel_embedding_loss, kernel_weights
from harness.testing import QuantizerConformance

CODES = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])


def softmax(xs: list[float]) -> list[float]:
    total = sum(math.exp(x) for x in xs)
    return [math.exp(x) / total for x in xs]


def quantizer(**params) -> NonStationaryVQ:
    q = NonStationaryVQ(dim=2, codebook_size=3, **params)
    with torch.no_grad():
        q.embedding.copy_(CODES)
    return q


def test_kernel_weights_by_hand():
    # d = (0, 1, 4), winner 0, lam K = 0.03, tau = 1
    p = softmax([0.0, -1.0, -4.0])
    c = kernel_weights(torch.tensor([[0.0, 1.0, 4.0]]), torch.tensor([0]), lam=0.01, tau=1.0)
    torch.testing.assert_close(c, torch.tensor([[1.0, 0.03 * p[1], 0.03 * p[2]]]))
    # tau = 0.5 doubles the logits
    p = softmax([0.0, -2.0, -8.0])
    c = kernel_weights(torch.tensor([[0.0, 1.0, 4.0]]), torch.tensor([0]), lam=0.01, tau=0.5)
    torch.testing.assert_close(c, torch.tensor([[1.0, 0.03 * p[1], 0.03 * p[2]]]))
    # clipping: lam K = 3, d = (0, 0, 5): 3 * 1 / (2 + e^-5) > 1 -> 1
    p = softmax([0.0, 0.0, -5.0])
    c = kernel_weights(torch.tensor([[0.0, 0.0, 5.0]]), torch.tensor([0]), lam=1.0, tau=1.0)
    assert 3.0 * p[1] > 1.0
    torch.testing.assert_close(c, torch.tensor([[1.0, 1.0, 3.0 * p[2]]]))
    # a tiny tau neither overflows nor leaves weight on the far codes
    c = kernel_weights(torch.tensor([[2.0, 3.0, 9.0]]), torch.tensor([0]), lam=0.01, tau=0.5**200)
    torch.testing.assert_close(c, torch.tensor([[1.0, 0.0, 0.0]]))


def hand_kernel_case() -> tuple[torch.Tensor, list[list[float]], list[list[float]]]:
    """z = (0, 0), (2, 0) against CODES; lam = 0.01, tau = 1: distances and weights by hand."""
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    d = [[0.0, 1.0, 9.0], [4.0, 1.0, 1.0]]  # winners: 0, and 1 (first of the tie)
    p0, p1 = softmax([-x for x in d[0]]), softmax([-x for x in d[1]])
    c = [[1.0, 0.03 * p0[1], 0.03 * p0[2]], [0.03 * p1[0], 1.0, 0.03 * p1[2]]]
    return z, d, c


def test_kernel_embedding_loss_value_and_gradient_by_hand():
    z, d, c = hand_kernel_case()
    codes = CODES.clone().requires_grad_()
    loss, winners = kernel_embedding_loss(z, codes, lam=0.01, tau=1.0)
    assert winners.tolist() == [0, 1]
    n, dim = 2, 2
    expected = sum(c[i][k] * d[i][k] for i in range(n) for k in range(3)) / (n * dim)
    torch.testing.assert_close(loss, torch.tensor(expected))
    loss.backward()
    # dL/de_k = 2 / (N D) * sum_n c_nk (e_k - z_n)
    grad = torch.stack([
        sum(2.0 / (n * dim) * c[i][k] * (CODES[k] - z[i]) for i in range(n)) for k in range(3)
    ])
    torch.testing.assert_close(codes.grad, grad)


def test_chunked_kernel_loss_matches_one_block():
    gen = torch.Generator().manual_seed(0)
    z, codes = torch.randn(50, 3, generator=gen), torch.randn(7, 3, generator=gen)
    whole = codes.clone().requires_grad_()
    chunked = codes.clone().requires_grad_()
    la, wa = kernel_embedding_loss(z, whole, lam=0.05, tau=0.7)
    lb, wb = kernel_embedding_loss(z, chunked, lam=0.05, tau=0.7, max_block_bytes=4 * 7 * 3)
    la.backward()
    lb.backward()
    assert torch.equal(wa, wb)
    torch.testing.assert_close(la, lb)
    torch.testing.assert_close(whole.grad, chunked.grad)


def test_training_loss_is_beta_commitment_plus_alpha_kernel_loss():
    z, d, c = hand_kernel_case()
    q = quantizer(alpha=2.0)
    out = q(z)
    emb, _ = kernel_embedding_loss(z, CODES, lam=0.01, tau=1.0)
    # commitment: z - e* = (0, 0) and (1, 0): mse = 1 / 4
    torch.testing.assert_close(out.loss, 0.25 * 0.25 + 2.0 * emb)
    q.eval()  # the kernel is off in eval: the plain codebook term
    torch.testing.assert_close(q(z).loss, torch.tensor(0.25 * 0.25 + 2.0 * 0.25))


def test_modified_ste_gives_the_chosen_code_a_times_the_gradient():
    q = quantizer()
    z = torch.tensor([[0.1, 0.0], [2.1, 0.0]], requires_grad=True)  # winners 0 and 2
    out = q(z)
    assert out.indices.tolist() == [0, 2]
    torch.testing.assert_close(out.z_q, CODES[[0, 2]])
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    (out.z_q * g).sum().backward()
    a = 2 * 1.0 / (2 * 2)  # 2 alpha / (N D)
    torch.testing.assert_close(z.grad, g)
    torch.testing.assert_close(q.embedding.grad, torch.stack([a * g[0], torch.zeros(2), a * g[1]]))


def test_plain_ste_option():
    q = quantizer(modified_ste=False)
    out = q(torch.tensor([[0.1, 0.0]], requires_grad=True))
    out.z_q.sum().backward()
    assert q.embedding.grad is None or q.embedding.grad.abs().sum() == 0


def test_vq_new_sends_s_nk_times_the_gradient_to_unselected_codes():
    q = quantizer(variant="vq_new", lam=0.1)
    z = torch.tensor([[0.1, 0.0], [2.1, 0.0]], requires_grad=True)
    out = q(z)
    torch.testing.assert_close(out.z_q, CODES[[0, 2]])
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    (out.z_q * g).sum().backward()
    d = [[0.01, 0.81, 8.41], [4.41, 1.21, 0.81]]
    s = [[0.3 * p for p in softmax([-x for x in row])] for row in d]  # lam K = 0.3
    s[0][0], s[1][2] = 0.0, 0.0  # the winners get a = 2 alpha / (N D) through the modified STE
    a = 0.5
    expected = torch.stack([
        a * g[0] + s[1][0] * g[1],
        s[0][1] * g[0] + s[1][1] * g[1],
        s[0][2] * g[0] + a * g[1],
    ])
    torch.testing.assert_close(q.embedding.grad, expected)
    torch.testing.assert_close(z.grad, g)
    # vq_new keeps the plain codebook term in the loss
    torch.testing.assert_close(out.logs["embedding_loss"], torch.tensor((0.01 + 0.81) / 4))


def test_temperature_schedules_and_state():
    code, paper = quantizer(), quantizer(kernel_decay="paper")
    assert code.tau == paper.tau == 1.0
    for epoch in range(3):
        code.on_epoch_end(epoch)
        paper.on_epoch_end(epoch)
    assert code.tau == 0.5**3 and paper.tau == pytest.approx(0.9**3)
    fresh = quantizer()
    fresh.load_state_dict(code.state_dict())
    assert fresh.tau == 0.5**3


def test_late_training_is_vanilla_vq():
    z = torch.tensor([[0.1, 0.0], [2.1, 0.0]])  # winners 0 and 2, no ties
    q = quantizer()
    q.on_epoch_end(59)  # tau = 0.5^60
    out = q(z)
    # only the winners remain: mse(e*, z) = (0.1^2 + 0.9^2) / 4
    torch.testing.assert_close(out.logs["embedding_loss"], torch.tensor((0.01 + 0.81) / 4))
    q.on_epoch_end(-1)  # tau = 1: the kernel adds weight on the other codes
    assert float(q(z).logs["embedding_loss"]) > (0.01 + 0.81) / 4 + 1e-4


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="kernel_decay"):
        NonStationaryVQ(dim=2, codebook_size=3, kernel_decay="linear")
    with pytest.raises(ValueError, match="variant"):
        NonStationaryVQ(dim=2, codebook_size=3, variant="new")


class TestNSVQNewVariant(QuantizerConformance):
    """The conformance kit on the appendix variant with the paper's kernel decay."""

    quantizer = NonStationaryVQ
    params = {"variant": "vq_new", "kernel_decay": "paper"}
