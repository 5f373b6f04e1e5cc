"""QLAE: the kit, a hand-computed case, the authors' equations, and vector-quantize-pytorch's forward."""

from __future__ import annotations

import math

import pytest
import torch

from harness.contracts import Quantizer
from harness.plugins.quantizers.qlae import LatentQuantization
from harness.testing import QuantizerConformance


class TestQLAEConformance(QuantizerConformance):
    quantizer = "qlae"  # K = 16: values [4, 4] on 2 latents, Linear maps from and to dim 8


def test_levels_rate_and_usage_errors() -> None:
    assert LatentQuantization(dim=8, codebook_size=256).levels == (8, 6, 5)
    q = LatentQuantization(dim=8, codebook_size=4096)
    assert q.codebook_size == 4375 and q.bits_per_token == math.log2(4375)
    assert LatentQuantization(dim=2, codebook_size=10, levels=[5, 2]).codebook_size == 10
    with pytest.raises(ValueError, match="no grid for codebook_size 100"):
        LatentQuantization(dim=8, codebook_size=100)
    with pytest.raises(ValueError, match="more than codebook_size 8"):
        LatentQuantization(dim=2, codebook_size=8, levels=[3, 3])


def test_hand_computed_case() -> None:
    # values: latent 0 [-0.5, 0, 0.5], latent 1 [-0.5, 0.5]
    q = LatentQuantization(dim=2, codebook_size=6, levels=[3, 2]).train()
    z = torch.tensor([[0.2, -0.1], [0.25, 0.9]], requires_grad=True)
    out = q(z)
    # token 0: 0.2 -> 0 (value 1), -0.1 -> -0.5 (value 0): index 1 + 3*0 = 1
    # token 1: 0.25 is a tie of 0 and 0.5 -> the first (value 1); 0.9 -> 0.5 (value 1): 1 + 3*1 = 4
    assert out.indices.tolist() == [1, 4]
    assert torch.equal(out.z_q, torch.tensor([[0.0, -0.5], [0.0, 0.5]]))
    # both terms are mse(q, x) in value: (0.2^2 + 0.4^2 + 0.25^2 + 0.4^2) / 4 = 0.105625
    assert out.loss.item() == pytest.approx(0.02 * 0.105625, rel=1e-6)
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    ((out.z_q * g).sum() + out.loss).backward()
    # z: straight-through g plus 0.01 * 2 (x - q) / 4
    assert torch.allclose(z.grad, g + 0.005 * torch.tensor([[0.2, 0.4], [0.25, 0.4]]), atol=1e-7)
    # values: only the quantization term, 0.01 * 2 (q - x) / 4, summed over the tokens choosing them
    assert torch.allclose(q.values[0].grad, torch.tensor([0.0, 0.005 * (-0.2 - 0.25), 0.0]), atol=1e-8)
    assert torch.allclose(q.values[1].grad, torch.tensor([0.005 * -0.4, 0.005 * -0.4]), atol=1e-8)


def _authors_reference(x: torch.Tensor, values: list[torch.Tensor], wq: float, wc: float):
    """The JAX code's computation, token by token (``QuantizedLatent.__call__`` and
    ``QuantizedAE``'s two losses: per-example means over latents, then the batch mean).

    Written here from kylehkhsu/latent_quantization because JAX does not run in the test
    environment; it follows the code's loops rather than our vectorised form.
    """
    quantized, indices, q_terms, c_terms = [], [], [], []
    for token in x:
        picks = [int(torch.argmin((token[i] - v).abs())) for i, v in enumerate(values)]
        q = torch.stack([v[j] for v, j in zip(values, picks, strict=True)])
        quantized.append(token + (q - token).detach())
        indices.append(picks)
        q_terms.append(((token.detach() - q) ** 2).mean())
        c_terms.append(((token - q.detach()) ** 2).mean())
    loss = wq * torch.stack(q_terms).mean() + wc * torch.stack(c_terms).mean()
    return torch.stack(quantized), indices, loss


def test_matches_the_authors_equations_in_float64(monkeypatch) -> None:
    monkeypatch.setattr(Quantizer, "forward", lambda self, z: self.quantize(z))  # keep float64
    torch.manual_seed(0)
    q = LatentQuantization(dim=4, codebook_size=10**4, levels=[10, 10, 10, 10]).double().train()
    with torch.no_grad():  # trained-looking values: uneven, not a linspace
        for v in q.values:
            v.copy_(torch.sort(torch.randn(10, dtype=torch.float64) * 0.5).values)
    ref_values = [v.detach().clone().requires_grad_(True) for v in q.values]
    z = (0.7 * torch.randn(200, 4, dtype=torch.float64)).requires_grad_(True)
    z_ref = z.detach().clone().requires_grad_(True)
    g = torch.randn(200, 4, dtype=torch.float64)
    out = q(z)
    ref_q, ref_picks, ref_loss = _authors_reference(z_ref, ref_values, 0.01, 0.01)
    digits = [[int(i) // 10**k % 10 for k in range(4)] for i in out.indices]
    assert digits == ref_picks
    assert torch.equal(out.z_q, ref_q)
    assert abs(out.loss.item() - ref_loss.item()) < 1e-15
    ((out.z_q * g).sum() + out.loss).backward()
    ((ref_q * g).sum() + ref_loss).backward()
    assert (z.grad - z_ref.grad).abs().max().item() < 1e-15
    for mine, ref in zip(q.values, ref_values, strict=True):
        assert (mine.grad - ref.grad).abs().max().item() < 1e-15


def test_forward_matches_vector_quantize_pytorch_at_initialisation() -> None:
    """Odd levels (where its initial values equal the authors' linspace), no projection.

    Only the forward is compared: its values receive no gradient (both of its loss
    terms are taken after the straight-through step), and its index reads the
    value's position off the initial grid, which holds only before values move.
    """
    vqp = pytest.importorskip("vector_quantize_pytorch")
    levels = [5, 3, 7]
    theirs = vqp.LatentQuantize(levels=levels, dim=3, commitment_loss_weight=0.1,
                                quantization_loss_weight=0.1).train()
    ours = LatentQuantization(dim=3, codebook_size=105, levels=levels, quantization_weight=0.1,
                              commitment_weight=0.1).train()
    z = torch.randn(1, 300, 3) * 0.6
    z_q, indices, loss = theirs(z.transpose(1, 2).contiguous())  # it takes channels first
    out = ours(z[0])
    assert torch.equal(out.indices, indices[0].long())
    assert (out.z_q - z_q[0].t()).abs().max().item() < 1e-7
    assert out.loss.item() == pytest.approx(loss.item(), rel=1e-6)
