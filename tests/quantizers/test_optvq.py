"""optvq: Sinkhorn assignment in training (log space, blocked), nearest code in eval, the authors' l2 loss."""

from __future__ import annotations

import math

import pytest
import torch

from harness.plugins.quantizers.optvq import OptVQ, sinkhorn_assign
from harness.testing import QuantizerConformance


def dense_plan(cost: torch.Tensor, epsilon: float, iters: int) -> torch.Tensor:
    """The transport plan written out in linear space on the full matrix (the paper's algorithm)."""
    q = torch.exp(-epsilon * cost).double()
    n, k = q.shape
    q = q / (q.sum() + 1e-8)
    for _ in range(iters):
        q = q / (q.sum(0, keepdim=True) + 1e-8) / k  # each code holds 1/K
        q = q / (q.sum(1, keepdim=True) + 1e-8) / n  # each token holds 1/N
    return q


def hand_optvq(**params) -> OptVQ:
    q = OptVQ(dim=1, codebook_size=2, use_proj=False, heads=1, kmeans_init=False, **params)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0], [5.0]]))
    return q


def test_transport_moves_a_token_off_a_crowded_code_by_hand():
    q = hand_optvq()
    z = torch.tensor([[0.0], [0.1]])
    # both tokens are nearest to code 0; the even plan sends one to code 1, the cheaper move is
    # the token at 0.1 (cost 4.9 + 0 against 5 + 0.1)
    assert q.eval()(z).indices.tolist() == [0, 0]
    out = q.train()(z)
    assert out.indices.tolist() == [0, 1]
    assert out.logs["reassigned"].item() == pytest.approx(0.5)
    torch.testing.assert_close(out.z_q, torch.tensor([[0.0], [5.0]]))
    # mse(z, sg e) + 0.25 mse(e, sg z): both (0^2 + 4.9^2) / 2
    assert out.loss.item() == pytest.approx(1.25 * 4.9**2 / 2, rel=1e-6)


@pytest.mark.parametrize("mode", ["all", "dim", "null"])
def test_log_space_blocked_sinkhorn_picks_the_dense_plans_argmax(mode):
    torch.manual_seed(0)
    z, codes = torch.randn(90, 3) * 1.5 + 0.7, torch.randn(20, 3)
    d = torch.cdist(z, codes)
    if mode == "all":
        d = (d - d.mean()) / (d.std() + 1e-6)
        cost = d - d.min()
    else:
        cost = d / math.sqrt(3) if mode == "dim" else d
    expected = dense_plan(cost, 2.0, 5).argmax(1)
    assert torch.equal(sinkhorn_assign(z, codes, 2.0, 5, mode), expected)
    blocked = sinkhorn_assign(z, codes, 2.0, 5, mode, block_bytes=4 * 20 * 13)  # 13 tokens a block
    assert torch.equal(blocked, expected)
    crowd = torch.bincount(torch.cdist(z, codes).argmin(1)).max()
    assert torch.bincount(expected).max() < crowd  # the plan unloads the most crowded code


def test_heads_share_the_codebook():
    q = OptVQ(dim=4, codebook_size=8, heads=2).eval()
    out = q(torch.randn(5, 4))
    assert out.indices.shape == (5, 2) and q.num_stages == 2 and q.codebook() is None
    assert q.bits_per_token == 6.0
    torch.testing.assert_close(out.z_q.reshape(10, 2), q.codes()[out.indices.reshape(-1)])


def test_sinkhorn_in_eval_is_the_authors_option_and_bad_params_are_refused():
    z = torch.tensor([[0.0], [0.1]])
    assert hand_optvq(sinkhorn_eval=True).eval()(z).indices.tolist() == [0, 1]
    with pytest.raises(ValueError, match="normalize must be one of"):
        OptVQ(dim=4, codebook_size=8, normalize="zscore")
    with pytest.raises(ValueError, match="heads must divide"):
        OptVQ(dim=4, codebook_size=8, heads=3)
    with pytest.raises(ValueError, match="heads must divide dim 2, got 4"):
        OptVQ(dim=2, codebook_size=8)  # the authors' 4 heads need dim a multiple of 4
    with pytest.raises(ValueError, match="kmeans_iters must be at least 1"):
        OptVQ(dim=4, codebook_size=8, kmeans_iters=0)


class TestOneHeadNoKmeans(QuantizerConformance):
    """The kit on the plugin's form before the authors' defaults (the registry-wide run covers those)."""

    quantizer = "optvq"
    params = {"heads": 1, "kmeans_init": False}
    large_n = 2000


# --- the authors' defaults: 4 heads and a k-means init --------------------------------------------


def test_defaults_are_the_authors_configs_and_the_rate_counts_every_head():
    q = OptVQ(dim=8, codebook_size=16)
    assert (q.heads, q.kmeans_init, q.kmeans_iters, q.beta, q.epsilon, q.iters) == (4, True, 100, 0.25, 10.0, 5)
    assert q.num_stages == 4 and q.bits_per_token == 16.0  # 4 x log2 16
    assert OptVQ(dim=8, codebook_size=16, heads=1).bits_per_token == 4.0
    assert "initted" in q.state_dict() and "initted" not in OptVQ(8, 16, kmeans_init=False).state_dict()


def test_kmeans_init_by_hand_once_in_training_only():
    q = OptVQ(dim=1, codebook_size=2, heads=1, use_proj=False)
    z = torch.tensor([[0.0], [0.2], [5.0], [5.2]])
    q.eval()(z)
    assert not bool(q.initted)  # eval does not initialise
    out = q.train()(z)
    # Lloyd from two distinct batch tokens ends at the two clusters' means whichever two they are
    # (from 0 and 0.2: {0} and {0.2, 5, 5.2} -> 0 and 3.47, then {0, 0.2} and {5, 5.2})
    assert bool(q.initted)
    assert sorted(q.embedding.detach().flatten().tolist()) == pytest.approx([0.1, 5.1])
    assert sorted(out.indices.tolist()) == [0, 0, 1, 1]
    before = q.embedding.detach().clone()
    q(torch.tensor([[9.0], [9.5]]))
    assert torch.equal(q.embedding.detach(), before)  # done once


def test_kmeans_init_clusters_head_sub_vectors_and_the_projection_is_applied_after():
    torch.manual_seed(0)
    q = OptVQ(dim=4, codebook_size=2, heads=2)
    # every token (a, b, c, d) splits into (a, b) and (c, d): sub-vectors near (3, 3) and (-3, -3)
    z = torch.tensor([[3.0, 3.1, -3.0, -2.9], [2.9, 3.0, -3.1, -3.0]])
    q.train()(z)
    centroids = sorted(q.embedding.detach().tolist())
    assert centroids[0] == pytest.approx([-3.05, -2.95]) and centroids[1] == pytest.approx([2.95, 3.05])
    torch.testing.assert_close(q.codes(), q.proj(q.embedding))  # their train.py: E = centroids, codes W(E)


def lloyd(x: torch.Tensor, start: torch.Tensor, iters: int) -> torch.Tensor:
    """k-means written out in float64 (faiss's Kmeans without its empty-cluster split)."""
    c = start.double().clone()
    x = x.double()
    for _ in range(iters):
        idx = torch.cdist(x, c).argmin(1)
        for j in range(c.shape[0]):
            if (idx == j).any():
                c[j] = x[idx == j].mean(0)
    return c


def test_kmeans_init_is_lloyd_from_random_sub_vectors():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(64, 8, generator=g) * 2
    torch.manual_seed(7)
    q = OptVQ(dim=8, codebook_size=6, kmeans_iters=30)
    state = torch.get_rng_state()
    q.train()(z)
    torch.set_rng_state(state)
    x = z.reshape(256, 2)
    start = x[torch.randperm(256)[:6]]
    torch.testing.assert_close(q.embedding.detach().double(), lloyd(x, start, 30), atol=1e-5, rtol=0)


def authors_forward(x, weight, proj, beta, epsilon, iters, heads):
    """VectorQuantizerSinkhorn.forward in training (l2 loss, argmax of the plan, normalize "all")."""
    b, c = x.shape
    x = x.view(-1, c // heads)
    embed = proj(weight)
    query2ref = torch.cdist(x, embed, p=2.0)
    with torch.no_grad():
        a = (query2ref - query2ref.mean()) / (query2ref.std() + 1e-6)
        q = torch.exp(-(a - a.min()) * epsilon).t()
        k, n = q.shape
        q /= q.sum() + 1e-8
        for _ in range(iters):
            q /= q.sum(dim=1, keepdim=True) + 1e-8
            q /= k
            q /= q.sum(dim=0, keepdim=True) + 1e-8
            q /= n
        indices = torch.argmax((q * n).t(), dim=-1)
    nearest = embed[indices]
    loss = torch.mean((x - nearest.detach()).pow(2)) + torch.mean((nearest - x.detach()).pow(2)) * beta
    return indices.view(b, heads), (x + (nearest - x).detach()).view(b, c), loss


def test_four_heads_match_the_authors_forward_on_identical_float64_inputs():
    torch.manual_seed(2)
    q = OptVQ(dim=8, codebook_size=12, kmeans_init=False).double().train()
    weight = q.embedding.detach().clone().requires_grad_(True)
    proj = torch.nn.Linear(2, 2).double()
    proj.load_state_dict(q.proj.state_dict())
    z = (torch.randn(40, 8, dtype=torch.float64) * 1.3 + 0.4)
    z1, z2 = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    up = torch.randn(40, 8, dtype=torch.float64)
    idx, z_q, loss = authors_forward(z1, weight, proj, 0.25, 10.0, 5, 4)
    ((z_q * up).sum() + loss).backward()
    out = q.quantize(z2)
    ((out.z_q * up).sum() + out.loss).backward()
    assert torch.equal(out.indices, idx)
    assert (out.z_q - z_q).abs().max() < 1e-12 and abs(out.loss.item() - loss.item()) < 1e-12
    assert (z2.grad - z1.grad).abs().max() < 1e-12
    assert (q.embedding.grad - weight.grad).abs().max() < 1e-12
    assert (q.proj.weight.grad - proj.weight.grad).abs().max() < 1e-12
    assert (q.proj.bias.grad - proj.bias.grad).abs().max() < 1e-12
    assert out.logs["reassigned"].item() > 0  # the plan moved some sub-vectors off their nearest code


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        z, codes = ddp_data()
        local = z[rank * 40 : (rank + 1) * 40]
        torch.save(sinkhorn_assign(local, codes, 3.0, 5, "null"), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def ddp_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return torch.randn(80, 2, generator=generator) + 1.0, torch.randn(12, 2, generator=generator)


def test_under_ddp_the_plan_covers_every_process_tokens(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    together = torch.cat([torch.load(tmp_path / f"rank{r}.pt") for r in range(2)])
    z, codes = ddp_data()
    assert torch.equal(together, sinkhorn_assign(z, codes, 3.0, 5, "null"))
    # and the halves alone would not give it: each process's plan alone is a different problem
    alone = torch.cat([sinkhorn_assign(z[s : s + 40], codes, 3.0, 5, "null") for s in (0, 40)])
    assert not torch.equal(alone, together)
