"""ema: one EMA step with Laplace smoothing by hand, no gradient training, dead-code reset."""

from __future__ import annotations

import torch

from harness.plugins.quantizers.ema import EMAQuantizer
from harness.testing import QuantizerConformance


def two_code_ema() -> EMAQuantizer:
    q = EMAQuantizer(dim=1, codebook_size=2)
    q.embedding.copy_(torch.tensor([[0.0], [10.0]]))
    q.embed_sum.copy_(torch.tensor([[0.0], [10.0]]))
    q.cluster_size.fill_(1.0)
    return q


def test_defaults_are_the_papers():
    q = EMAQuantizer(dim=2, codebook_size=3)
    assert (q.decay, q.eps, q.beta) == (0.99, 1e-5, 0.25)
    assert list(q.parameters()) == [], "the codebook is not trained by gradients"
    # each code starts as one pseudo-observation at its initial position
    assert torch.equal(q.cluster_size, torch.ones(3)) and torch.equal(q.embed_sum, q.embedding)


def test_one_ema_step_by_hand():
    q = two_code_ema()
    z = torch.tensor([[1.0], [2.0], [9.0]], requires_grad=True)
    out = q(z)
    assert out.indices.tolist() == [0, 0, 1]
    # output and loss use the codes from before the update: e = 0, 0, 10
    torch.testing.assert_close(out.z_q, torch.tensor([[0.0], [0.0], [10.0]]))
    torch.testing.assert_close(out.loss, torch.tensor(0.25 * (1.0 + 4.0 + 1.0) / 3.0))
    # n = (2, 1), sums = (3, 9)
    size = [0.99 * 1.0 + 0.01 * 2.0, 0.99 * 1.0 + 0.01 * 1.0]  # 1.01, 1.00
    total_sum = [0.99 * 0.0 + 0.01 * 3.0, 0.99 * 10.0 + 0.01 * 9.0]  # 0.03, 9.99
    n, eps = size[0] + size[1], 1e-5
    smoothed = [(s + eps) / (n + 2 * eps) * n for s in size]
    torch.testing.assert_close(q.cluster_size, torch.tensor(size))
    torch.testing.assert_close(q.embed_sum, torch.tensor([[total_sum[0]], [total_sum[1]]]))
    expected = torch.tensor([[total_sum[0] / smoothed[0]], [total_sum[1] / smoothed[1]]])
    torch.testing.assert_close(q.embedding, expected)
    # gradient: only the commitment term, beta * 2 (z - e) / N
    out.loss.backward()
    torch.testing.assert_close(z.grad, 0.25 * 2.0 * torch.tensor([[1.0], [2.0], [-1.0]]) / 3.0)


def test_ema_converges_to_the_cluster_means():
    q = two_code_ema()
    q.decay = 0.5
    z = torch.tensor([[1.0], [3.0], [9.0], [13.0]])
    for _ in range(60):
        q(z)
    torch.testing.assert_close(q.embedding, torch.tensor([[2.0], [11.0]]), rtol=1e-4, atol=1e-4)


def test_eval_changes_nothing():
    q = two_code_ema()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    q.eval()
    q(torch.tensor([[1.0], [2.0], [9.0]]))
    for k, v in q.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_dead_code_reset_sets_a_fresh_running_mean():
    q = EMAQuantizer(dim=1, codebook_size=3, dead_code_reset=1, reset_noise=0.0)
    start = torch.tensor([[0.0], [100.0], [-100.0]])
    q.embedding.copy_(start)
    q.embed_sum.copy_(start)
    q(torch.tensor([[0.5], [-0.5]]))  # codes 1 and 2 unused for one step: dead
    batch = torch.tensor([[42.0], [42.0]])
    out = q(batch)
    assert float(out.logs["codes_reset"]) == 2
    # both dead codes became e = m = 42 with N = 1; the tie sends both tokens to code 1;
    # then the EMA step: N = (0.99 + 0.01 * 2, 0.99), m = (0.99 * 42 + 0.01 * 84, 0.99 * 42)
    assert out.indices.tolist() == [1, 1]
    torch.testing.assert_close(q.cluster_size[1:], torch.tensor([1.01, 0.99]))
    torch.testing.assert_close(q.embed_sum[1:], torch.tensor([[42.0 * 1.01], [42.0 * 0.99]]))
    # their codes stay at 42 up to the Laplace smoothing (relative change ~ K eps / n)
    torch.testing.assert_close(q.embedding[1:], torch.full((2, 1), 42.0), rtol=1e-4, atol=0)


class TestEMAWithOptions(QuantizerConformance):
    """The conformance kit on ema with k-means init and dead-code reset on."""

    quantizer = EMAQuantizer
    params = {"kmeans_init": True, "dead_code_reset": 1}
