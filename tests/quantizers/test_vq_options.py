"""vq's options: k-means init, dead-code reset, entropy penalty (and that plain vq stays vanilla)."""

from __future__ import annotations

import math

import pytest
import torch

from harness.plugins.quantizers.codebook_tools import entropy_penalty, kmeans
from harness.plugins.quantizers.vq import VectorQuantizer
from harness.testing import QuantizerConformance


def test_plain_vq_has_no_extra_state():
    q = VectorQuantizer(dim=3, codebook_size=5)
    assert set(q.state_dict()) == {"embedding"}


def test_kmeans_by_hand_with_an_empty_cluster():
    # 1-D points {0, 1, 10, 11}, starting points 0, 1, 100.
    # iteration 1: 0 -> c0; 1, 10, 11 -> c1 (|10 - 1| < |10 - 100|); nobody -> c2
    #   c0 = 0, c1 = 22/3, c2 keeps 100 (empty cluster)
    # iteration 2: 0, 1 -> c0 (|1 - 0| < |1 - 22/3|); 10, 11 -> c1: c0 = 0.5, c1 = 10.5; fixed point
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    out = kmeans(x, 3, iters=10, init=torch.tensor([[0.0], [1.0], [100.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.5], [10.5], [100.0]]))
    one = kmeans(x, 3, iters=1, init=torch.tensor([[0.0], [1.0], [100.0]]))
    torch.testing.assert_close(one, torch.tensor([[0.0], [22.0 / 3.0], [100.0]]))


def test_kmeans_init_finds_two_separated_clusters_once():
    torch.manual_seed(0)
    a = torch.randn(40, 2) * 0.1 + torch.tensor([5.0, 0.0])
    b = torch.randn(60, 2) * 0.1 + torch.tensor([-5.0, 3.0])
    q = VectorQuantizer(dim=2, codebook_size=2, kmeans_init=True)
    q.eval()
    q(torch.cat([a, b]))
    assert not bool(q.initted), "eval mode must not initialise"
    q.train()
    q(torch.cat([a, b])[torch.randperm(100)])
    found = sorted(q.embedding.detach().tolist())
    expected = sorted([b.mean(0).tolist(), a.mean(0).tolist()])
    torch.testing.assert_close(torch.tensor(found), torch.tensor(expected))
    assert bool(q.initted)
    # done once: a second batch elsewhere does not move the codes
    before = q.embedding.detach().clone()
    q(torch.randn(50, 2) + 20.0)
    assert torch.equal(q.embedding.detach(), before)
    # the flag travels with the state: a reloaded model does not re-initialise
    fresh = VectorQuantizer(dim=2, codebook_size=2, kmeans_init=True)
    fresh.load_state_dict(q.state_dict())
    fresh(torch.randn(50, 2) - 20.0)
    assert torch.equal(fresh.embedding.detach(), before)


def test_dead_code_reset_reseeds_exactly_the_dead_codes():
    q = VectorQuantizer(dim=2, codebook_size=4, dead_code_reset=2, reset_noise=0.0)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [50.0, 50.0], [-50.0, 50.0]]))
    near = torch.tensor([[0.1, 0.0], [0.9, 1.0], [0.0, 0.2], [1.1, 0.9]])
    out1 = q(near)  # codes 2 and 3 unused for 1 step
    out2 = q(near)  # ... for 2 steps: dead from now on
    assert float(out1.logs["codes_reset"]) == 0 and float(out2.logs["codes_reset"]) == 0
    batch = torch.tensor([[7.0, 7.0], [8.0, -8.0], [9.0, 0.5]])
    out3 = q(batch)  # re-seeded at the start of this step, from this batch
    assert float(out3.logs["codes_reset"]) == 2
    codes = q.embedding.detach()
    torch.testing.assert_close(codes[:2], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    for k in (2, 3):
        assert (codes[k] == batch).all(1).any(), f"code {k} was not re-seeded from the batch"
    # the re-seeded codes are this batch's rows, so they take its tokens; 0 and 1 start counting
    assert q.tracker.steps_unused.tolist() == [1, 1, 0, 0]


def test_dead_code_reset_adds_noise_and_ignores_eval():
    q = VectorQuantizer(dim=2, codebook_size=3, dead_code_reset=1, reset_noise=1e-3)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 0.0], [40.0, 40.0], [-40.0, 40.0]]))
    q(torch.zeros(4, 2))
    q.eval()
    q(torch.zeros(4, 2) + 3.0)
    assert q.tracker.steps_unused.tolist() == [0, 1, 1], "eval mode must not count"
    q.train()
    batch = torch.tensor([[3.0, 3.0], [3.0, 3.0]])
    q(batch)
    new = q.embedding.detach()[1:]
    gap = (new - batch[0]).abs()
    assert (gap < 0.02).all() and (gap > 0).any()


def test_entropy_penalty_by_hand():
    big = 1e4
    # every token uniform over 4 codes: mean H(p_n) = log 4 = H(mean p): penalty 0
    pen, tok, avg = entropy_penalty(torch.zeros(3, 4), temperature=1.0)
    torch.testing.assert_close(tok, torch.tensor(math.log(4)))
    torch.testing.assert_close(pen, torch.tensor(0.0), atol=1e-6, rtol=0)
    # every token one-hot on code 0: both entropies 0
    d = torch.full((3, 4), big)
    d[:, 0] = 0.0
    pen, tok, avg = entropy_penalty(d, temperature=1.0)
    torch.testing.assert_close(pen, torch.tensor(0.0), atol=1e-6, rtol=0)
    # 4 tokens one-hot on 4 different codes: 0 - log 4, the minimum
    d = torch.full((4, 4), big).fill_diagonal_(0.0)
    pen, _, _ = entropy_penalty(d, temperature=1.0)
    torch.testing.assert_close(pen, torch.tensor(-math.log(4)))
    # token 1 one-hot on code 0, token 2 uniform over 2 codes: mean p = (3/4, 1/4)
    d = torch.tensor([[0.0, big], [1.0, 1.0]])
    pen, tok, avg = entropy_penalty(d, temperature=0.5)
    torch.testing.assert_close(tok, torch.tensor(0.5 * math.log(2)))
    torch.testing.assert_close(avg, torch.tensor(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))


def test_entropy_weight_adds_the_penalty_in_training_only():
    z = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    plain = VectorQuantizer(dim=3, codebook_size=6)
    torch.manual_seed(0)
    reg = VectorQuantizer(dim=3, codebook_size=6, entropy_weight=0.1, entropy_temperature=0.5)
    out_plain, out_reg = plain(z), reg(z)
    d = torch.cdist(z, reg.embedding.detach()).pow(2)
    expected, _, _ = entropy_penalty(d, temperature=0.5)
    torch.testing.assert_close(out_reg.loss, out_plain.loss + 0.1 * expected, rtol=1e-5, atol=1e-6)
    out_reg.loss.backward()
    assert (reg.embedding.grad.abs().sum(1) > 0).all(), "the penalty reaches every code"
    reg.eval()
    plain.eval()
    torch.testing.assert_close(reg(z).loss, plain(z).loss)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="dead_code_reset"):
        VectorQuantizer(dim=2, codebook_size=2, dead_code_reset=-1)
    with pytest.raises(ValueError, match="temperature"):
        VectorQuantizer(dim=2, codebook_size=2, entropy_temperature=0.0)


class TestVQWithEveryOption(QuantizerConformance):
    """The conformance kit on vq with all options on (the kit's own run covers the defaults)."""

    quantizer = VectorQuantizer
    params = {"kmeans_init": True, "dead_code_reset": 1, "entropy_weight": 0.1}
