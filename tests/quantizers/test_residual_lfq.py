"""Residual LFQ: the kit, a hand-computed two-stage case, and vector-quantize-pytorch's ResidualLFQ."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

import harness.plugins.quantizers.residual_lfq as residual_lfq
from harness.plugins.quantizers.lfq import corners
from harness.plugins.quantizers.residual_lfq import ResidualLFQ
from harness.testing import QuantizerConformance


class TestResidualLFQConformance(QuantizerConformance):
    quantizer = "residual-lfq"
    params = {"stages": 2}  # K = 16 per stage: 4 bits, a Linear from dim 8


def test_rate_and_usage_errors() -> None:
    assert ResidualLFQ(dim=8, codebook_size=32, stages=2).bits_per_token == 10.0
    assert ResidualLFQ(dim=8, codebook_size=16, stages=3).stage_sizes == (16, 16, 16)
    with pytest.raises(ValueError, match="power of two"):
        ResidualLFQ(dim=8, codebook_size=12)
    with pytest.raises(ValueError, match="stages must be >= 1"):
        ResidualLFQ(dim=8, codebook_size=16, stages=0)


def test_hand_computed_two_stages() -> None:
    # token 0: z = (0.3, -0.8); stage 0 codes +-1: q = (1, -1), bits 10 -> 2; residual (-0.7, 0.2)
    #   stage 1 codes +-1/2: q = (-1/2, 1/2), bits 01 -> 1; z_q = (1/2, -1/2)
    # token 1: z = (-0.5, 0.1): q0 = (-1, 1) -> 1; residual (0.5, -0.9): q1 = (1/2, -1/2) -> 2
    q = ResidualLFQ(dim=2, codebook_size=4, stages=2, temperature=4.0).eval()
    z = torch.tensor([[0.3, -0.8], [-0.5, 0.1]], requires_grad=True)
    out = q(z)
    assert out.indices.tolist() == [[2, 1], [1, 2]]
    assert torch.equal(out.z_q, torch.tensor([[0.5, -0.5], [-0.5, 0.5]]))
    assert torch.allclose(q.decode(out.indices), out.z_q)
    # eval: commitment only, 0.25 * (mse stage 0 + mse stage 1)
    stage0 = (0.7**2 + 0.2**2 + 0.5**2 + 0.9**2) / 4
    stage1 = (0.2**2 + 0.3**2 + 0.0**2 + 0.4**2) / 4
    assert out.loss.item() == pytest.approx(0.25 * (stage0 + stage1), rel=1e-6)
    # straight-through in both stages: d z_q / d z = 2 I
    g = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    (grad,) = torch.autograd.grad((out.z_q * g).sum(), z)
    assert torch.equal(grad, 2 * g)


def test_training_entropy_is_the_softmax_over_each_stages_codes() -> None:
    q = ResidualLFQ(dim=2, codebook_size=4, stages=2, temperature=4.0, commitment_weight=0.0).train()
    z = torch.tensor([[0.3, -0.8], [-0.5, 0.1]])
    expected = 0.0
    residual = z
    for scale in (1.0, 0.5):
        codes = scale * corners(2, torch.arange(4))
        p = F.softmax(2 * residual @ codes.t() / 4.0, dim=1)
        per_token = -(p * p.log()).sum(1).mean()
        usage = p.mean(0)
        expected += 0.1 * (per_token - (-(usage * usage.log()).sum())).item()
        residual = residual - scale * torch.where(residual > 0, 1.0, -1.0)
    assert q(z).loss.item() == pytest.approx(expected, abs=1e-7)


def _compare(dim: int, k: int, stages: int, temperature: float, z_scale: float) -> dict[str, float]:
    """Largest differences to vector-quantize-pytorch's ResidualLFQ, float64, copied weights."""
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    theirs = vqp.ResidualLFQ(dim=dim, codebook_size=k, num_quantizers=stages, entropy_loss_weight=0.1,
                             commitment_loss_weight=0.25, force_quantization_f32=False).double().train()
    for layer in theirs.layers:  # ResidualLFQ passes no temperature to its stages
        layer.forward = functools.partial(type(layer).forward, layer, inv_temperature=1 / temperature)
    ours = ResidualLFQ(dim=dim, codebook_size=k, stages=stages, temperature=temperature).double().train()
    ours.load_state_dict(theirs.state_dict(), strict=False)
    z = (z_scale * torch.randn(1, 300, dim, dtype=torch.float64)).requires_grad_(True)
    z_ours = z.detach().clone().requires_grad_(True)
    g = torch.randn(1, 300, dim, dtype=torch.float64)
    q_theirs, idx_theirs, losses = theirs(z)
    out = ours.quantize(z_ours[0])
    ((q_theirs * g).sum() + losses.sum()).backward()
    ((out.z_q * g[0]).sum() + out.loss).backward()
    grads = [(p.grad - pt.grad).abs().max().item() for p, pt in zip(ours.parameters(), theirs.parameters(),
                                                                       strict=True)]
    return {"index_mismatches": float((out.indices != idx_theirs[0].long()).sum()),
            "z_q": (out.z_q - q_theirs[0]).abs().max().item(),
            "loss": abs(out.loss.item() - losses.sum().item()),
            "grad_z": (z_ours.grad - z.grad).abs().max().item(), "grad_params": max(grads, default=0.0)}


def _clamped_entropy(x: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The entropy terms as vector-quantize-pytorch computes them: log of probabilities clamped at 1e-5."""
    codes = corners(x.shape[1], torch.arange(2 ** x.shape[1])).to(x.dtype)
    p = F.softmax(2 * x @ codes.t() / temperature, dim=1)
    entropy = lambda q: (-q * q.clamp(min=1e-5).log()).sum(-1)  # noqa: E731
    return entropy(p).mean(), entropy(p.mean(0))


@pytest.mark.parametrize(("dim", "k", "stages", "temperature", "z_scale"), [
    (8, 16, 3, 0.01, 1.0), (8, 256, 2, 0.01, 1.0), (4, 16, 3, 1.0, 0.5), (8, 32, 2, 1.0, 0.3)])
def test_matches_vector_quantize_pytorch_with_its_entropy_clamp(monkeypatch, dim, k, stages, temperature,
                                                                 z_scale) -> None:
    """With the peer's log clamp swapped in, everything else agrees to float64 rounding."""
    monkeypatch.setattr(residual_lfq, "entropy_terms", _clamped_entropy)
    diffs = _compare(dim, k, stages, temperature, z_scale)
    assert diffs["index_mismatches"] == 0 and diffs["z_q"] == 0.0
    assert max(diffs["loss"], diffs["grad_z"], diffs["grad_params"]) < 1e-12, diffs


def test_matches_vector_quantize_pytorch_where_no_probability_is_clamped() -> None:
    """Our exact entropies, inputs small enough that no code's probability falls below 1e-5."""
    diffs = _compare(8, 32, 2, 1.0, 0.3)
    assert diffs["index_mismatches"] == 0 and diffs["z_q"] == 0.0
    # what remains is our 1e-12 inside the usage log
    assert max(diffs["loss"], diffs["grad_z"], diffs["grad_params"]) < 1e-10, diffs
    assert math.isfinite(diffs["loss"])
