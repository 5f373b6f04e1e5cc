"""Residual FSQ: the kit, a hand-computed two-stage case, and vector-quantize-pytorch's ResidualFSQ."""

from __future__ import annotations

import math

import pytest
import torch

from harness.plugins.quantizers.residual_fsq import ResidualFSQ
from harness.testing import QuantizerConformance


class TestResidualFSQConformance(QuantizerConformance):
    quantizer = "residual-fsq"
    params = {"stages": 2}  # K = 16 per stage: levels [4, 4]


def test_levels_and_exact_rate() -> None:
    for k, levels in ((16, (4, 4)), (32, (8, 4)), (64, (8, 8)), (256, (8, 6, 5))):
        q = ResidualFSQ(dim=8, codebook_size=k, stages=2)
        assert q.levels == levels and q.stage_sizes == (math.prod(levels),) * 2
        assert q.bits_per_token == 2 * math.log2(math.prod(levels))
    assert ResidualFSQ(dim=8, codebook_size=64, stages=2).bits_per_token == 12.0
    with pytest.raises(ValueError, match="no levels for per-stage codebook_size 100"):
        ResidualFSQ(dim=8, codebook_size=100)
    with pytest.raises(ValueError, match="more than codebook_size 8"):
        ResidualFSQ(dim=8, codebook_size=8, levels=[4, 4])


def test_hand_computed_two_stages() -> None:
    # levels [4, 3]: soft clamp c = 1 + 1/(L-1) = 4/3, 3/2; x = c tanh(z / c) = 0.4778, -0.1988
    # stage 0 (scale 1): digits floor(3 (x+1)/2 + 1/2) = 2, floor(2 (x+1)/2 + 1/2) = 1
    #   -> codes 2*2/3 - 1 = 1/3, 0; index 2 + 4*1 = 6; residual 0.1445, -0.1988
    # stage 1 (scale 1/4, 1/3): u = 0.5779, -0.5965 -> digits 2, 0 -> codes 1/3, -1
    #   -> q = 1/12, -1/3; index 2 + 4*0 = 2
    q = ResidualFSQ(dim=2, codebook_size=12, stages=2, levels=[4, 3]).eval()
    z = torch.tensor([[0.5, -0.2]], requires_grad=True)
    out = q(z)
    assert out.indices.tolist() == [[6, 2]]
    assert torch.allclose(out.z_q, torch.tensor([[1 / 3 + 1 / 12, -1 / 3]]), atol=1e-6)
    assert out.loss.item() == 0.0
    assert torch.allclose(q.decode(out.indices), out.z_q, atol=1e-6)
    # no stage clamps here: dz_q/dz = stages * d(c tanh(z/c))/dz = 2 sech^2(z / c)
    out.z_q.sum().backward()
    c = torch.tensor([4 / 3, 1.5])
    assert torch.allclose(z.grad, 2 / torch.cosh(z.detach() / c) ** 2, atol=1e-6)


def test_indices_decode_to_z_q() -> None:
    torch.manual_seed(0)
    q = ResidualFSQ(dim=8, codebook_size=32, stages=3).eval()
    out = q(torch.randn(200, 8))
    assert torch.allclose(q.decode(out.indices), out.z_q, atol=1e-5)


# vector-quantize-pytorch computes its constants 2/(L-1), 1 + 1/(L-1) and L^-l from int32 level
# tensors in float32 even when the module is float64; levels where these are exact in float32
# (3, 5, 9) must agree to the last bit, the others to float32's precision in those constants.
@pytest.mark.parametrize(("levels", "dim", "tol"), [
    ((3, 5, 9), 4, 0.0), ((3, 5, 9), 3, 0.0), ((4, 4), 8, 1e-6), ((8, 5, 3), 3, 1e-6), ((2, 2, 4), 5, 1e-6)])
def test_matches_vector_quantize_pytorch(levels: tuple[int, ...], dim: int, tol: float) -> None:
    """Identical weights and float64 inputs: indices, z_q and every gradient agree."""
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    theirs = vqp.ResidualFSQ(levels=list(levels), num_quantizers=3, dim=dim).double().train()
    ours = ResidualFSQ(dim=dim, codebook_size=math.prod(levels), stages=3, levels=levels).double().train()
    ours.load_state_dict(theirs.state_dict(), strict=False)
    z = (2 * torch.randn(1, 500, dim, dtype=torch.float64)).requires_grad_(True)
    z_ours = z.detach().clone().requires_grad_(True)
    g = torch.randn(1, 500, dim, dtype=torch.float64)
    q_theirs, idx_theirs = theirs(z)
    out = ours.quantize(z_ours[0])
    assert torch.equal(out.indices, idx_theirs[0].long())
    assert (out.z_q - q_theirs[0]).abs().max().item() <= tol
    (q_theirs * g).sum().backward()
    (out.z_q * g[0]).sum().backward()
    assert (z_ours.grad - z.grad).abs().max().item() <= tol
    for (name, p), (_, p_theirs) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        scale = p_theirs.grad.abs().max().item()
        assert (p.grad - p_theirs.grad).abs().max().item() <= tol * scale, name
