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
    q = OptVQ(dim=1, codebook_size=2, use_proj=False, **params)
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


class TestFourHeads(QuantizerConformance):
    """The kit on the authors' multi-head form (the registry-wide run covers heads = 1)."""

    quantizer = "optvq"
    params = {"heads": 4}
    large_n = 2000


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
