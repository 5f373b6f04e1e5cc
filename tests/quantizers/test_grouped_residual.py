"""Grouped residual VQ: the kit, a hand-computed case, and vector-quantize-pytorch's GroupedResidualVQ."""

from __future__ import annotations

import pytest
import torch

from harness.plugins.quantizers.grouped_residual import GroupedResidualVQ
from harness.testing import QuantizerConformance


class TestGroupedResidualVQConformance(QuantizerConformance):
    quantizer = "grouped-residual-vq"
    params = {"groups": 2, "stages": 2}


def test_rate_layout_and_usage_errors() -> None:
    q = GroupedResidualVQ(dim=8, codebook_size=8, groups=2, stages=2)
    assert q.num_stages == 4 and q.stage_sizes == (8, 8, 8, 8) and q.bits_per_token == 12.0
    assert GroupedResidualVQ(dim=8, codebook_size=4, groups=2, stages=2).bits_per_token == 8.0
    with pytest.raises(ValueError, match="groups must divide dim"):
        GroupedResidualVQ(dim=8, codebook_size=4, groups=3)


def test_hand_computed_two_groups_two_stages() -> None:
    q = GroupedResidualVQ(dim=2, codebook_size=2, groups=2, stages=2).eval()
    with torch.no_grad():
        for (g, s), codes in {(0, 0): [-1.0, 1.0], (0, 1): [-0.25, 0.25],
                              (1, 0): [0.0, 2.0], (1, 1): [-0.5, 0.5]}.items():
            q.rvqs[g].stages[s].embedding.copy_(torch.tensor(codes)[:, None])
    # group 0: 0.7 -> 1 (code 1), residual -0.3 -> -0.25 (code 0): 0.75
    # group 1: 1.2 -> 2 (code 1), residual -0.8 -> -0.5 (code 0): 1.5
    out = q(torch.tensor([[0.7, 1.2]]))
    assert out.indices.tolist() == [[1, 0, 1, 0]]
    assert torch.allclose(out.z_q, torch.tensor([[0.75, 1.5]]))
    # each stage: (1 + beta) (e - r)^2 with beta = 0.25; squared errors 0.09, 0.0025, 0.64, 0.09
    assert out.loss.item() == pytest.approx(1.25 * (0.09 + 0.0025 + 0.64 + 0.09), rel=1e-6)
    assert set(out.logs) >= {"group0/stage0/codebook_loss", "group1/stage1/commitment_loss"}


@pytest.mark.parametrize(("dim", "k", "groups", "stages"), [(8, 16, 2, 3), (6, 8, 3, 2), (8, 256, 4, 2)])
def test_matches_vector_quantize_pytorch(dim: int, k: int, groups: int, stages: int) -> None:
    """Copied codebooks, identical float32 inputs: indices, z_q, loss and gradients.

    The public code's learnable-codebook stage has the loss ``w mse(z, e)`` with both
    sides attached; ours with ``beta = 1`` is ``mse(sg z, e) + mse(z, sg e)``: the same
    gradients, twice the value. (float32: the public code keeps float32 pieces in a
    float64 module, so float64 would not compare like with like.)
    """
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    theirs = vqp.GroupedResidualVQ(dim=dim, groups=groups, num_quantizers=stages, codebook_size=k,
                                   learnable_codebook=True, ema_update=False, rotation_trick=False,
                                   commitment_weight=1.0).train()
    ours = GroupedResidualVQ(dim=dim, codebook_size=k, groups=groups, stages=stages,
                             base_params={"beta": 1.0}).train()
    ours_codes = [stage.embedding for rvq in ours.rvqs for stage in rvq.stages]
    their_codes = [layer._codebook.embed for rvq in theirs.rvqs for layer in rvq.layers]
    with torch.no_grad():
        for mine, other in zip(ours_codes, their_codes, strict=True):
            mine.copy_(other[0])
    z = torch.randn(1, 400, dim, requires_grad=True)
    z_ours = z.detach().clone().requires_grad_(True)
    g = torch.randn(1, 400, dim)
    q_theirs, idx_theirs, losses = theirs(z)
    out = ours(z_ours[0])
    assert torch.equal(out.indices, torch.cat(list(idx_theirs[:, 0]), dim=1))
    assert torch.equal(out.z_q, q_theirs[0])
    assert out.loss.item() == pytest.approx(2 * losses.sum().item(), rel=1e-6)
    ((q_theirs * g).sum() + losses.sum()).backward()
    ((out.z_q * g[0]).sum() + out.loss).backward()
    assert (z_ours.grad - z.grad).abs().max().item() < 1e-5
    for mine, other in zip(ours_codes, their_codes, strict=True):
        assert (mine.grad - other.grad[0]).abs().max().item() < 1e-6
