"""diveq / sf-diveq: hand-computed cases, and identical-input comparisons with the authors' code.

The references below are written from AaltoML/DiVeQ (``vqvae_compression/diveq.py``,
``sf_diveq.py``): distances as ``|z|^2 + |c|^2 - 2 z.c``, noise from
``Normal(0, noise_var).sample``, the error length times the detached unit direction.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from harness.plugins.quantizers.diveq import DiVeQ, SFDiVeQ
from harness.testing import QuantizerConformance

D64 = torch.float64


def zero_noise(z):
    return torch.zeros_like(z)


# --- hand-computed cases --------------------------------------------------------------------


def test_diveq_forward_and_gradients_by_hand():
    q = DiVeQ(dim=2, codebook_size=2)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[3.0, 4.0], [10.0, 10.0]]))
    q.noise = zero_noise
    z = torch.zeros(1, 2, requires_grad=True)
    out = q(z)
    # nearest code (3, 4): length 5, unit u = (0.6, 0.8); z_q = z + 5 u = (3, 4)
    assert out.indices.tolist() == [0]
    torch.testing.assert_close(out.z_q, torch.tensor([[3.0, 4.0]]))
    assert float(out.loss) == 0.0
    (out.z_q * torch.tensor([[1.0, 0.0]])).sum().backward()
    # d|c - z|/dz = -u: grad_z = g - u (u.g) = (1, 0) - 0.6 (0.6, 0.8); grad_c = u (u.g)
    torch.testing.assert_close(z.grad, torch.tensor([[0.64, -0.48]]))
    torch.testing.assert_close(q.embedding.grad, torch.tensor([[0.36, 0.48], [0.0, 0.0]]))


def test_diveq_noise_turns_the_direction_but_keeps_the_length():
    q = DiVeQ(dim=2, codebook_size=1)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[3.0, 4.0]]))
    q.noise = lambda z: torch.tensor([[1.0, -2.0]])
    out = q(torch.zeros(1, 2))
    # direction (4, 2) / sqrt(20), length 5
    torch.testing.assert_close(out.z_q, 5 * torch.tensor([[4.0, 2.0]]) / math.sqrt(20))


def test_diveq_eval_is_the_hard_code():
    q = DiVeQ(dim=2, codebook_size=2).eval()
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[3.0, 4.0], [10.0, 10.0]]))
    out = q(torch.tensor([[9.0, 8.0]]))
    assert out.indices.tolist() == [1]
    torch.testing.assert_close(out.z_q, torch.tensor([[10.0, 10.0]]))


def test_diveq_replaces_codes_chosen_in_too_few_forwards():
    torch.manual_seed(0)
    q = DiVeQ(dim=2, codebook_size=3, replacement_iters=2, discard_threshold=0.5)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]]))
    near0, near1 = torch.zeros(4, 2), torch.full((1, 2), 5.0)
    assert float(q(torch.cat([near0, near1])).logs["codes_replaced"]) == 0  # forward 1 of 2
    out = q(near0)  # code 1 chosen in 1 of 2 forwards (ratio 0.5: kept), code 2 in none
    assert float(out.logs["codes_replaced"]) == 1
    # the rare code is drawn from the used ones, weighted by forwards used (2 : 1), plus 1e-9 noise
    moved = q.embedding.detach()[2]
    assert min((moved - q.embedding.detach()[i]).abs().max() for i in (0, 1)) < 1e-6
    torch.testing.assert_close(q.embedding.detach()[:2], torch.tensor([[0.0, 0.0], [5.0, 5.0]]))
    assert int(q.usage.sum()) == 0


def test_sf_diveq_forward_and_gradients_by_hand():
    q = SFDiVeQ(dim=2, codebook_size=3, skip_iters=0, avg_iters=0)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0]]))
    q.noise = zero_noise
    q.dither = lambda device: torch.tensor([[0.5], [0.5]])
    z = torch.tensor([[1.0, 0.5]], requires_grad=True)
    out = q(z)
    # segment points (1, 0) and (2, 1): squared distances 0.25 and 1.25 -> segment 0
    assert out.indices.tolist() == [0]
    torch.testing.assert_close(out.z_q, torch.tensor([[1.0, 0.0]]))
    (out.z_q * torch.tensor([[1.0, 0.0]])).sum().backward()
    # u0 u0^T = [[.8, .4], [.4, .2]], u1 u1^T = [[.8, -.4], [-.4, .2]], each weighted 0.5
    torch.testing.assert_close(q.embedding.grad, torch.tensor([[0.4, 0.2], [0.4, -0.2], [0.0, 0.0]]))
    torch.testing.assert_close(z.grad, torch.tensor([[0.2, 0.0]]))


def test_sf_diveq_start_up_initialises_from_chunk_means():
    q = SFDiVeQ(dim=2, codebook_size=2, skip_iters=4, avg_iters=2)
    batches = [torch.full((2, 2), float(i)) + torch.tensor([[0.0, 1.0], [0.0, -1.0]]) for i in range(4)]
    for b in batches[:3]:
        out = q(b)
        assert torch.equal(out.z_q, b) and out.indices.tolist() == [0, 0]
    # forwards 2 and 3 were kept: 4 tokens, 2 per code, in arrival order
    torch.testing.assert_close(q.codebook().detach(), torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    assert not torch.equal(q(batches[3]).z_q, batches[3])  # forward 4 quantizes
    assert q.kept == []


def test_sf_diveq_eval_is_the_nearest_code():
    q = SFDiVeQ(dim=2, codebook_size=3).eval()
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0]]))
    out = q(torch.tensor([[1.9, 1.5]]))
    assert out.indices.tolist() == [2]
    torch.testing.assert_close(out.z_q, torch.tensor([[2.0, 2.0]]))


def test_bits_per_token_is_log2_k():
    assert DiVeQ(dim=4, codebook_size=1024).bits_per_token == 10.0
    assert SFDiVeQ(dim=4, codebook_size=4096).bits_per_token == 12.0


@pytest.mark.parametrize("kwargs", [{"noise_std": 0.0}, {"replacement_iters": -1},
                                    {"discard_threshold": 1.5}])
def test_diveq_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError, match="diveq"):
        DiVeQ(dim=2, codebook_size=4, **kwargs)


def test_sf_diveq_rejects_avg_above_skip():
    with pytest.raises(ValueError, match="avg_iters <= skip_iters"):
        SFDiVeQ(dim=2, codebook_size=4, skip_iters=10, avg_iters=20)


# --- the authors' computation, identical inputs, float64 ------------------------------------


def authors_noise(shape, noise_var):
    return Normal(torch.tensor(0.0, dtype=D64), torch.tensor(noise_var, dtype=D64)).sample(shape)


def authors_diveq(z, codebook, noise_var):
    """DIVEQ.forward's quantization (its replacement bookkeeping aside)."""
    distances = (z.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * z @ codebook.t())
    indices = distances.argmin(1)
    hard = codebook[indices]
    random_vectors = authors_noise(z.shape, noise_var) + (hard - z)
    normalized = random_vectors / random_vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return z + (hard - z).norm(dim=1, keepdim=True) * normalized.detach(), indices


def authors_sf_diveq(z, codebook, noise_var):
    """SFDIVEQ.forward after its start-up: dithered segment points, two DiVeQ errors."""
    k = codebook.shape[0]
    dither = torch.rand((k - 1, 1))  # float32, as theirs: the codebook's dtype is not passed
    seg = torch.linspace(0, k - 2, k - 1).to(torch.int64)
    points = (1 - dither) * codebook[seg] + dither * codebook[seg + 1]
    distances = z.pow(2).sum(1, keepdim=True) + points.pow(2).sum(1) - 2 * z @ points.t()
    indices = distances.argmin(1)
    first, second, lam = codebook[indices], codebook[indices + 1], dither[indices]
    out = z
    for end, weight in ((first, 1 - lam), (second, lam)):
        rv = authors_noise(z.shape, noise_var) + (end - z)
        unit = rv / rv.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out = out + (end - z).norm(dim=1, keepdim=True) * (weight * unit).detach()
    return out, indices


def compare(q, reference, seed: int = 3, n: int = 200):
    """Run both on the same z, codebook, upstream gradient and random stream; return max diffs."""
    q = q.double().train()
    gen = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, q.dim, generator=gen, dtype=D64)
    g = torch.randn(n, q.dim, generator=gen, dtype=D64)
    with torch.no_grad():
        q.embedding.copy_(torch.randn(q.codebook_size, q.dim, generator=gen, dtype=D64))
    cb = q.embedding.detach().clone().requires_grad_(True)
    z_ref, z_ours = z0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
    torch.manual_seed(seed)
    zq_ref, idx_ref = reference(z_ref, cb, 1e-3)
    torch.manual_seed(seed)
    out = q.quantize(z_ours)
    (zq_ref * g).sum().backward()
    (out.z_q * g).sum().backward()
    assert torch.equal(out.indices, idx_ref)
    return {"z_q": (out.z_q - zq_ref).abs().max().item(),
            "grad_z": (z_ours.grad - z_ref.grad).abs().max().item(),
            "grad_codebook": (q.embedding.grad - cb.grad).abs().max().item(),
            "loss": abs(float(out.loss))}


def test_diveq_matches_the_authors_code():
    diffs = compare(DiVeQ(dim=8, codebook_size=64, replacement_iters=0), authors_diveq)
    assert max(diffs.values()) < 1e-12, diffs


def test_sf_diveq_matches_the_authors_code():
    diffs = compare(SFDiVeQ(dim=8, codebook_size=64, skip_iters=0, avg_iters=0), authors_sf_diveq)
    assert max(diffs.values()) < 1e-12, diffs


def test_sf_diveq_start_up_matches_the_authors_init():
    """The authors' init: mean of consecutive hop-sized chunks of the kept latents."""
    k, skip, avg = 5, 6, 3
    q = SFDiVeQ(dim=3, codebook_size=k, skip_iters=skip, avg_iters=avg)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(7, 3, generator=gen) for _ in range(skip - 1)]
    for b in batches:
        q(b)
    kept = torch.cat(batches[skip - avg - 1:])  # forwards skip-avg .. skip-1 (counted from 1)
    hop = kept.shape[0] // k
    expected = torch.stack([kept[j * hop:(j + 1) * hop].mean(0) for j in range(k)])
    torch.testing.assert_close(q.codebook().detach(), expected, rtol=0, atol=1e-6)


# --- the conformance kit ----------------------------------------------------------------------


class TestDiVeQReplacing(QuantizerConformance):
    """The kit with replacement every 5 forwards, so the 30 training steps replace codes."""

    quantizer = "diveq"
    params = {"replacement_iters": 5}


class TestSFDiVeQOddSizes(QuantizerConformance):
    """The kit from the first forward (no start-up: during it z passes unquantized and the
    codebook gets no gradient by design, which the kit's gradient checks rightly reject)."""

    quantizer = "sf-diveq"
    params = {"skip_iters": 0, "avg_iters": 0}
    dim, codebook_size = 5, 7
