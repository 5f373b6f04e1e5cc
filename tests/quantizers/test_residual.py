"""Residual VQ: residual arithmetic, per-stage indices, gradient path, quantizer dropout."""

from __future__ import annotations

import pytest
import torch

from harness.errors import UnknownNameError
from harness.plugins.quantizers.residual import ResidualVQ


def two_stage() -> ResidualVQ:
    q = ResidualVQ(dim=2, codebook_size=2, stages=2)
    with torch.no_grad():
        q.stages[0].embedding.copy_(torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
        q.stages[1].embedding.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    return q


def test_hand_case_residuals_indices_and_loss() -> None:
    q = two_stage()
    assert q.num_stages == 2 and q.stage_sizes == (2, 2)
    z = torch.tensor([[4.9, 0.2]], requires_grad=True)
    out = q(z)
    # stage 0: nearest to (4.9, 0.2) is (4, 0) -> index 1, residual (0.9, 0.2)
    # stage 1: |(0.9,0.2)-(0,1)|^2 = 1.45, |(0.9,0.2)-(1,0)|^2 = 0.05 -> index 1
    assert out.indices.tolist() == [[1, 1]]
    assert torch.allclose(out.z_q, torch.tensor([[5.0, 0.0]]))
    # each vq stage: (1 + 0.25) mse; stage 0 mse (0.81 + 0.04) / 2, stage 1 (0.01 + 0.04) / 2
    assert out.loss.item() == pytest.approx(1.25 * 0.425 + 1.25 * 0.025)
    assert out.logs["stage0/codebook_loss"].item() == pytest.approx(0.425)
    assert out.logs["stage1/codebook_loss"].item() == pytest.approx(0.025)
    # each straight-through stage passes the upstream gradient once: 2 g at z
    g = torch.tensor([[0.5, -1.0]])
    (out.z_q * g).sum().backward()
    assert torch.allclose(z.grad, 2 * g)


def test_later_stages_see_the_residual_of_earlier_ones() -> None:
    torch.manual_seed(0)
    q = ResidualVQ(dim=3, codebook_size=8, stages=3).eval()
    z = torch.randn(30, 3)
    out = q(z)
    residual = z.clone()
    total = torch.zeros_like(z)
    for level, stage in enumerate(q.stages):
        codes = stage.embedding.detach()
        expected = torch.cdist(residual, codes).argmin(1)
        assert torch.equal(out.indices[:, level], expected)
        residual = residual - codes[expected]
        total = total + codes[expected]
    assert torch.allclose(out.z_q, total, atol=1e-6)


def test_base_quantizer_from_the_registry_with_params() -> None:
    q = ResidualVQ(dim=4, codebook_size=16, stages=2, base="fsq", base_params={"levels": [3, 5]})
    assert q.stage_sizes == (15, 15) and q.codebook_size == 15
    assert type(q.stages[0]).__name__ == "FSQ" and q.stages[0] is not q.stages[1]
    with pytest.raises(UnknownNameError, match="did you mean 'vq'"):
        ResidualVQ(dim=4, codebook_size=16, base="vqq")
    with pytest.raises(ValueError, match="itself"):
        ResidualVQ(dim=4, codebook_size=16, base="residual-vq")


def test_quantizer_dropout_keeps_a_prefix_of_stages() -> None:
    torch.manual_seed(0)
    q = ResidualVQ(dim=2, codebook_size=4, stages=3, quantizer_dropout=1.0)
    with torch.no_grad():
        for stage in q.stages:
            stage.embedding.normal_()
    z = torch.randn(300, 2)
    out = q.train()(z)
    codes = torch.stack([s.embedding.detach()[out.indices[:, i]] for i, s in enumerate(q.stages)], 1)
    prefixes = codes.cumsum(1)  # (N, L, D): the sum of the first 1..L stages
    match = (prefixes - out.z_q[:, None, :]).abs().amax(-1) < 1e-5
    assert match.any(1).all()  # every token's z_q is one of its prefix sums
    kept = match.float().argmax(1) + 1
    assert set(kept.tolist()) == {1, 2, 3}  # n ~ U{1..3}: all appear among 300 tokens
    assert torch.allclose(q.eval()(z).z_q, q(z).z_q)  # eval: all stages, deterministic
    assert torch.allclose(q(z).z_q, prefixes[:, -1], atol=1e-5)
