"""fsp: FSQ-style cells on (tanh + 1)/2, perturbed within a cell while training.

The reference below is written from zhai-lw/vp-vae ``fsp/fsp.py`` (class FSP, tanh
activation, no inverse activation, no vector norm) and run on identical inputs.
"""

from __future__ import annotations

import math

import pytest
import torch

from harness.plugins.quantizers.fsp import FSP
from harness.testing import QuantizerConformance

D64 = torch.float64
SQRT12 = math.sqrt(12.0)


def test_eval_codes_indices_and_gradient_by_hand():
    q = FSP(dim=2, codebook_size=12, levels=[4, 3]).eval()
    # a = (tanh z + 1)/2: (0.5, 0.5) and (0.1, 0.9)
    z = torch.tensor([[0.0, 0.0], [math.atanh(-0.8), math.atanh(0.8)]], requires_grad=True)
    out = q(z)
    # row 0: digits floor(2.0) = 2 of 4, floor(1.5) = 1 of 3 -> cells 2.5/4, 1.5/3; index 2 + 1 * 4
    # row 1: digits floor(0.4) = 0, floor(2.7) = 2 -> cells 0.5/4, 2.5/3; index 0 + 2 * 4
    assert out.indices.tolist() == [6, 8]
    expected = torch.tensor([[0.125 * SQRT12, 0.0], [-0.375 * SQRT12, (2.5 / 3 - 0.5) * SQRT12]])
    torch.testing.assert_close(out.z_q, expected)
    torch.testing.assert_close(q.codebook()[out.indices], expected)
    out.z_q[0].sum().backward()
    # straight-through: d z_q / d z = sqrt(12) (1 - tanh^2) / 2 = sqrt(3) at z = 0
    torch.testing.assert_close(z.grad[0], torch.full((2,), math.sqrt(3.0)))


def test_training_perturbs_within_one_cell():
    torch.manual_seed(0)
    q = FSP(dim=3, codebook_size=1000, levels=[10, 10, 10]).train()
    z = torch.randn(500, 3) * 0.5
    a = (torch.tanh(z) + 1) / 2
    out = q(z)
    value = out.z_q / SQRT12 + 0.5  # back to [0, 1]
    assert ((value - a).abs() <= 1 / 20 + 1e-6).all(), "a perturbation stays within half a cell"
    assert not torch.allclose(value, a), "training adds noise"
    eval_out = q.eval()(z)
    assert torch.equal(out.indices, eval_out.indices), "training indices are the quantized digits"
    assert 0.9 < float(out.logs["perturb_accept"]) <= 1.0


def test_quantize_rate_one_is_plain_quantization_in_training():
    q = FSP(dim=3, codebook_size=240, levels=[8, 6, 5], quantize_rate=1.0)
    z = torch.randn(50, 3)
    torch.testing.assert_close(q.train()(z).z_q, q.eval()(z).z_q)


def test_levels_follow_the_fsq_table_and_bits_are_exact():
    q = FSP(dim=8, codebook_size=1024)
    assert q.levels == (8, 5, 5, 5) and q.codebook_size == 1000
    assert q.bits_per_token == pytest.approx(math.log2(1000))
    assert isinstance(q.project_in, torch.nn.Linear)


def test_rejects_a_bad_quantize_rate():
    with pytest.raises(ValueError, match="quantize_rate"):
        FSP(dim=3, codebook_size=256, quantize_rate=1.5)


# --- the authors' computation, identical inputs, float64 ------------------------------------


def authors_fsp(features, levels, quantize_rate, training):
    """FSP.forward with act 'tanh', vector_norm 'none', need_inv_act False."""
    levels_t = torch.tensor(levels, dtype=torch.int32)
    basis = torch.cumprod(torch.tensor([1] + levels[:-1]), dim=0, dtype=torch.int32)
    eps = torch.finfo(features.dtype).eps
    act_z = (torch.tanh(features) + 1) / 2
    level_indices = (act_z.clamp_max(1 - eps) * levels_t).floor()
    q_act_z = (level_indices + 0.5) / levels_t
    q_act_z = act_z + (q_act_z - act_z).detach()
    rate = quantize_rate if training else 1.0
    if rate < 1.0:
        p_max_norm = 1.0 / (levels_t * 2)
        proposal = act_z + p_max_norm * (torch.rand_like(act_z) * 2 - 1)
        accept = (proposal > 0.0) & (proposal < 1.0)
        p_act_z = torch.where(accept, proposal, act_z)
        p_mask = torch.rand_like(q_act_z) > rate
        q_act_z[p_mask] = p_act_z[p_mask]
    q_z = (q_act_z - 0.5) / 0.28867513459481287
    return q_z, (level_indices * basis).sum(dim=-1).to(torch.int32)


@pytest.mark.parametrize(("training", "rate"), [(True, 0.0), (True, 0.4), (False, 0.0)])
def test_matches_the_authors_code(training, rate):
    levels = [8, 5, 5, 5]
    q = FSP(dim=4, codebook_size=1024, quantize_rate=rate).double().train(training)
    gen = torch.Generator().manual_seed(7)
    z0 = torch.randn(300, 4, generator=gen, dtype=D64) * 1.5
    g = torch.randn(300, 4, generator=gen, dtype=D64)
    z_ref, z_ours = z0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
    torch.manual_seed(1)
    zq_ref, idx_ref = authors_fsp(z_ref, levels, rate, training)
    torch.manual_seed(1)
    out = q.quantize(z_ours)
    (zq_ref * g).sum().backward()
    (out.z_q * g).sum().backward()
    assert torch.equal(out.indices, idx_ref.long())
    # their noise half-width 1/(2L) is float32 (an int32 levels tensor): 1/10 differs by ~1e-9
    assert (out.z_q - zq_ref).abs().max() < (1e-8 if training else 1e-12)
    assert (z_ours.grad - z_ref.grad).abs().max() < 1e-12
    assert float(out.loss) == 0.0


class TestFSPProjected(QuantizerConformance):
    """The kit with a projection (dim 8 over 3 channels) and some quantized training elements."""

    quantizer = "fsp"
    params = {"levels": [4, 2, 2], "quantize_rate": 0.5}
