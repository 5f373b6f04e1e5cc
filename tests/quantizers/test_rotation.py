"""The rotation trick: forward value is the code; the gradient is the rotated upstream gradient."""

from __future__ import annotations

import pytest
import torch

from harness.plugins.quantizers.rotation import RotationTrickVQ, rotate_to


def quantizer() -> RotationTrickVQ:
    q = RotationTrickVQ(dim=2, codebook_size=2)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 3.0], [-10.0, -10.0]]))
    return q


def test_hand_case_value_and_gradient() -> None:
    # z = (2, 0), q = (0, 3): u = (1, 0), q_hat = (0, 1), r = (1, 1)/sqrt 2, lam = 3/2.
    # value: 1.5 ((2,0) - 2 (2/sqrt2) (1,1)/sqrt2 + 2*2 (0,1)) = 1.5 (0, 2) = (0, 3)
    # gradient lam R^T g = 1.5 (g - 2 (g.r) r + 2 (g.q_hat) u):
    #   g = (1, 0) -> 1.5 ((1,0) - (1,1)) = (0, -1.5); g = (0, 1) -> 1.5 ((0,1) - (1,1) + (2,0)) = (1.5, 0)
    for g, expected in (((1.0, 0.0), (0.0, -1.5)), ((0.0, 1.0), (1.5, 0.0))):
        z = torch.tensor([[2.0, 0.0]], requires_grad=True)
        out = quantizer()(z)
        assert out.indices.tolist() == [0]
        assert torch.allclose(out.z_q, torch.tensor([[0.0, 3.0]]))
        (out.z_q * torch.tensor([g])).sum().backward()
        assert torch.allclose(z.grad, torch.tensor([expected]), atol=1e-6)


def test_rotation_without_the_pinning_has_the_code_as_value() -> None:
    torch.manual_seed(0)
    z, q = torch.randn(100, 5), torch.randn(100, 5)
    assert torch.allclose(rotate_to(z, q), q, atol=1e-5)


def test_gradient_is_the_rotation_applied_to_random_upstream_gradients() -> None:
    torch.manual_seed(1)
    z = torch.randn(20, 4, requires_grad=True)
    codes = torch.randn(20, 4)
    g = torch.randn(20, 4)
    (rotate_to(z, codes) * g).sum().backward()
    zd = z.detach()
    u = zd / zd.norm(dim=1, keepdim=True)
    q_hat = codes / codes.norm(dim=1, keepdim=True)
    r = (u + q_hat) / (u + q_hat).norm(dim=1, keepdim=True)
    lam = codes.norm(dim=1, keepdim=True) / zd.norm(dim=1, keepdim=True)
    eye = torch.eye(4)
    rot = eye - 2 * r[:, :, None] * r[:, None, :] + 2 * q_hat[:, :, None] * u[:, None, :]
    # R maps u to q_hat and preserves norms (a rotation)
    assert torch.allclose((rot @ u[:, :, None]).squeeze(-1), q_hat, atol=1e-5)
    assert torch.allclose(rot @ rot.transpose(1, 2), eye.expand(20, 4, 4), atol=1e-5)
    expected = lam * (rot.transpose(1, 2) @ g[:, :, None]).squeeze(-1)
    assert torch.allclose(z.grad, expected, atol=1e-5)
    # the rotated gradient keeps the upstream norm up to the scale lam
    assert torch.allclose(z.grad.norm(dim=1, keepdim=True), lam * g.norm(dim=1, keepdim=True), rtol=1e-4)


def test_codebook_learns_only_through_the_codebook_loss() -> None:
    q = quantizer()
    z = torch.tensor([[2.0, 0.0]], requires_grad=True)
    out = q(z)
    (grad,) = torch.autograd.grad(out.z_q.sum(), q.embedding, allow_unused=True)
    assert grad is None or torch.count_nonzero(grad) == 0
    # loss = mse(e, sg z) + 0.25 mse(z, sg e), e = (0, 3): both means are (4 + 9) / 2 = 6.5
    assert out.loss.item() == pytest.approx(1.25 * 6.5)
    out.loss.backward()
    # d/de mse(e, z) = 2 (e - z) / 2 = (-2, 3) for the chosen code only
    assert torch.allclose(q.embedding.grad, torch.tensor([[-2.0, 3.0], [0.0, 0.0]]))


def test_degenerate_directions_stay_finite() -> None:
    q = quantizer()
    # z = 0, and z antiparallel to its code (u + q_hat = 0)
    for z in (torch.zeros(1, 2), torch.tensor([[0.0, -1.0]])):
        z.requires_grad_(True)
        out = q(z)
        assert out.indices.tolist() == [0]  # the code (0, 3)
        out.z_q.sum().backward()
        assert torch.isfinite(out.z_q).all() and torch.isfinite(z.grad).all()
        assert torch.allclose(out.z_q, q.embedding[out.indices].detach())
