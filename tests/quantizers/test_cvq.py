"""CVQ-VAE: hand-computed steps of the authors' quantise.py path (cosine and l2), anchors, validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.plugins.quantizers.cvq import (
    CVQ,
    anchor_rows,
    closest_codes,
    contrastive_loss,
    pool_query,
)
from harness.testing import QuantizerConformance


def quantizer(**params) -> CVQ:
    q = CVQ(dim=2, codebook_size=2, **params)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    return q


Z = torch.tensor([[2.0, 0.1], [3.0, -0.1]])


@pytest.mark.parametrize(("distance", "anchor_of_code0"), [("cos", 1), ("l2", 0)])
def test_one_training_step_by_hand(distance: str, anchor_of_code0: int) -> None:
    q = quantizer(distance=distance)
    z = Z.clone().requires_grad_(True)
    out = q(z)
    # both tokens are nearest code 0 = (1, 0) by cosine (0.9988, 0.9994 vs 0.05, -0.03) and by l2 (1.01, 4.01)
    assert out.indices.tolist() == [0, 0]
    # loss = 0.25 mse(z, sg e) + mse(e, sg z); mse = (1 + 0.01 + 4 + 0.01) / 4 = 1.255
    assert out.loss.item() == pytest.approx(1.25 * 1.255)
    # the output is the code from before the step (straight-through value)
    assert torch.allclose(out.z_q, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    # usage p = 0.01 * (1, 0); mixing a_k = exp(-p_k K 10 / (1 - 0.99) - 1e-3)
    assert torch.allclose(q.embed_prob, torch.tensor([0.01, 0.0]))
    a0, a1 = math.exp(-0.01 * 2 * 10 / 0.01 - 1e-3), math.exp(-1e-3)
    # anchors: the token most similar to each code; code 1's is token 0 under both (cos 0.05 vs -0.03,
    # squared distance 4.81 vs 10.21); code 0's is token 1 by cosine (0.9994) but token 0 by l2 (1.01)
    f0, f1 = Z[anchor_of_code0], Z[0]
    expected = torch.stack([torch.tensor([1.0, 0.0]) * (1 - a0) + f0 * a0,
                            torch.tensor([0.0, 1.0]) * (1 - a1) + f1 * a1])
    assert torch.allclose(q.embedding.detach(), expected, atol=1e-7)
    assert out.logs["codes_reanchored"].item() == 1.0
    # gradient of the codebook term on the old code 0: sum over its tokens of 2 (e - z) / 4 = (-1.5, 0)
    out.loss.backward()
    assert torch.allclose(q.embedding.grad, torch.tensor([[-1.5, 0.0], [0.0, 0.0]]), atol=1e-6)
    # straight-through: the commitment term's gradient plus nothing from z_q here
    assert torch.allclose(z.grad, 0.25 * 2 * (Z - torch.tensor([1.0, 0.0])) / 4)


def test_eval_changes_no_code() -> None:
    q = quantizer().eval()
    before = q.embedding.detach().clone()
    out = q(Z)
    assert out.indices.tolist() == [0, 0] and torch.equal(q.embedding.detach(), before)
    assert torch.equal(q.embed_prob, torch.zeros(2))


def test_probrandom_anchor_follows_the_softmax_over_tokens() -> None:
    # one code, three tokens with l2 similarity -||z - c||^2 = 0, -ln 2 ... : softmax over tokens
    codes = torch.zeros(1, 1)
    z = torch.tensor([[0.0], [math.sqrt(math.log(2))], [math.sqrt(math.log(4))]])
    torch.manual_seed(0)
    draws = torch.stack([anchor_rows(z, codes, "l2", "probrandom") for _ in range(20000)]).flatten()
    freq = torch.bincount(draws, minlength=3).float() / draws.numel()
    assert torch.allclose(freq, torch.tensor([4 / 7, 2 / 7, 1 / 7]), atol=0.015)


def test_anchor_search_is_the_same_in_chunks() -> None:
    g = torch.Generator().manual_seed(2)
    z, codes = torch.randn(300, 4, generator=g), torch.randn(40, 4, generator=g)
    for distance in ("cos", "l2"):
        full = anchor_rows(z, codes, distance, "closest")
        chunked = anchor_rows(z, codes, distance, "closest", max_block_bytes=40 * 4 * 7)
        assert torch.equal(full, chunked)


@pytest.mark.parametrize(("params", "message"), [
    ({"distance": "dot"}, "distance must be one of"),
    ({"anchor": "pool"}, "anchor must be one of"),
    ({"decay": 1.0}, r"decay must lie in \[0, 1\)"),
])
def test_bad_settings_are_refused(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CVQ(dim=2, codebook_size=4, **params)


# --- exact ties: settled by the authors' sort ---------------------------------------------------


@pytest.mark.parametrize("distance", ["cos", "l2"])
def test_exact_ties_go_where_the_authors_sort_puts_them(distance: str) -> None:
    # codes 1 and 3 are the same vector, the closest to every token: the last of their ascending
    # sort, which at 4 codes is stable on CPU, so the highest index, code 3 (argmin/argmax: code 1)
    codes = torch.tensor([[0.0, 1.0], [1.0, 0.2], [-1.0, 0.0], [1.0, 0.2]])
    z = torch.tensor([[2.0, 0.3], [1.0, 0.1], [3.0, 0.7]])
    assert closest_codes(z, codes, distance).tolist() == [3, 3, 3]
    # the same rule across blocks of one token
    assert closest_codes(z, codes, distance, max_block_bytes=4 * 4).tolist() == [3, 3, 3]
    q = CVQ(dim=2, codebook_size=4, distance=distance).eval()
    with torch.no_grad():
        q.embedding.copy_(codes)
    assert q(z).indices.tolist() == [3, 3, 3]


@pytest.mark.parametrize("distance", ["cos", "l2"])
def test_beyond_16_codes_ties_follow_the_sort_not_a_fixed_rule(distance: str) -> None:
    # 32 codes, 1 and 29 equal and closest: torch.sort is not stable here, so the rule is "what
    # their sort does", which the plugin reproduces row by row (in blocks too)
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(32, 3, generator=g) * 0.1
    codes[1] = codes[29] = torch.tensor([1.0, 0.5, 0.2])
    z = torch.tensor([[2.0, 1.0, 0.4], [1.0, 0.5, 0.2], [0.0, 0.0, -1.0]])
    d = -z.pow(2).sum(1, keepdim=True) - codes.pow(2).sum(1) + 2 * z @ codes.t()
    if distance == "cos":
        d = F.normalize(z, dim=1) @ F.normalize(codes, dim=1).t()
    theirs = d.sort(dim=1)[1][:, -1]
    assert theirs[:2].tolist() in ([1, 1], [29, 29])
    assert torch.equal(closest_codes(z, codes, distance), theirs)
    assert torch.equal(closest_codes(z, codes, distance, max_block_bytes=4 * 32), theirs)


@pytest.mark.parametrize("distance", ["cos", "l2"])
def test_tied_anchor_tokens_go_to_the_highest_token_index_across_blocks(distance: str) -> None:
    # tokens 1 and 4 are the same vector, the closest to code 0: the last of the authors' ascending
    # sort over the 5 tokens (stable at this size) is token 4, whether the tokens sit in one block or
    # in blocks of two (the tie then spans blocks)
    z = torch.tensor([[0.0, 1.0], [2.0, 0.1], [-1.0, -1.0], [0.5, 0.9], [2.0, 0.1]])
    codes = torch.tensor([[2.0, 0.1]])
    assert anchor_rows(z, codes, distance, "closest").tolist() == [4]
    assert anchor_rows(z, codes, distance, "closest", max_block_bytes=4 * 2).tolist() == [4]


# --- the random anchor: the authors' FeaturePool ------------------------------------------------


def test_pool_fills_then_is_replaced_or_overwritten_by_hand() -> None:
    pool = torch.zeros(4, 1)
    assert pool_query(pool, 0, torch.tensor([[1.0], [2.0]])) == 2  # appended
    assert pool.flatten().tolist() == [1.0, 2.0, 0.0, 0.0]
    assert pool_query(pool, 2, torch.tensor([[3.0], [4.0], [5.0]])) == 4  # the rows left are filled
    assert pool.flatten().tolist() == [1.0, 2.0, 3.0, 4.0]
    torch.manual_seed(0)
    perm = torch.randperm(4)[:2]
    torch.manual_seed(0)
    assert pool_query(pool, 4, torch.tensor([[7.0], [8.0]])) == 4  # full: a random permutation's rows
    assert pool[perm].flatten().tolist() == [7.0, 8.0]
    big = torch.arange(10.0)[:, None]
    torch.manual_seed(1)
    draw = torch.randint(0, 10, (4,))
    torch.manual_seed(1)
    assert pool_query(pool, 4, big) == 4  # a batch larger than the pool: K tokens drawn with replacement
    assert pool.flatten().tolist() == draw.float().tolist()


def test_random_anchor_moves_unused_codes_to_the_pool_rows() -> None:
    q = quantizer(anchor="random")
    with torch.no_grad():
        q.pool.copy_(torch.tensor([[5.0, 5.0], [-5.0, 5.0]]))
    q(Z.clone())
    # the batch (2 tokens) fills the empty pool: the anchors are the two tokens, in order
    a0, a1 = math.exp(-0.01 * 2 * 10 / 0.01 - 1e-3), math.exp(-1e-3)
    expected = torch.stack([torch.tensor([1.0, 0.0]) * (1 - a0) + Z[0] * a0,
                            torch.tensor([0.0, 1.0]) * (1 - a1) + Z[1] * a1])
    assert torch.allclose(q.embedding.detach(), expected, atol=1e-7)
    assert int(q.pool_count) == 2 and torch.equal(q.pool, Z)
    assert "pool" in q.state_dict() and "pool" not in quantizer().state_dict()


# --- the contrastive term ----------------------------------------------------------------------


def test_contrastive_loss_by_hand() -> None:
    # N = 4 tokens, K = 2 codes: positive = mean of the N // K = 2 largest similarities of a code,
    # negatives its N // 2 = 2 smallest; cross-entropy at temperature 0.07, mean over codes
    sim = torch.tensor([[0.9, -0.2], [0.1, 0.8], [0.5, 0.6], [-0.3, 0.0]], dtype=torch.float64)
    # code 0: positive (0.9 + 0.5) / 2 = 0.7, negatives -0.3, 0.1; code 1: 0.7 against -0.2, 0.0
    expected = (math.log(1 + math.exp(-1.0 / 0.07) + math.exp(-0.6 / 0.07))
                + math.log(1 + math.exp(-0.9 / 0.07) + math.exp(-0.7 / 0.07))) / 2
    assert contrastive_loss(sim, 2).item() == pytest.approx(expected, rel=1e-9)


def test_contrastive_term_is_added_in_training_only_and_reaches_only_the_codes() -> None:
    q = quantizer(contrastive=True)
    z = Z.clone().requires_grad_(True)
    out = q(z)
    base = 1.25 * 1.255  # the VQ loss of the hand case above
    assert out.loss.item() == pytest.approx(base + out.logs["contrastive_loss"].item(), rel=1e-6)
    (grad_z,) = torch.autograd.grad(out.loss, z, retain_graph=True)
    assert torch.allclose(grad_z, 0.25 * 2 * (Z - torch.tensor([1.0, 0.0])) / 4)  # the commitment term alone
    assert quantizer(contrastive=True).eval()(Z).loss.item() == pytest.approx(base)


# --- the authors' computation on identical inputs ----------------------------------------------


class AuthorsCVQ(nn.Module):
    """quantise.py's VectorQuantiser on flattened tokens, with FeaturePool, written out again."""

    def __init__(self, k: int, d: int, distance: str, anchor: str, contras: bool) -> None:
        super().__init__()
        self.k, self.d, self.distance, self.anchor, self.contras = k, d, distance, anchor, contras
        self.embedding = nn.Embedding(k, d)
        self.register_buffer("embed_prob", torch.zeros(k))
        self.pool, self.nums = None, 0

    def query(self, feats: torch.Tensor) -> torch.Tensor:
        k, n = self.k, feats.shape[0]
        if self.nums < k:
            if n > k:
                self.pool, self.nums = feats[torch.randint(0, n, (k,))], k
            else:
                self.pool[self.nums : self.nums + n] = feats
                self.nums += n
        elif n > k:
            self.pool = feats[torch.randint(0, n, (k,))]
        else:
            self.pool[torch.randperm(k)[:n]] = feats
        return self.pool

    def forward(self, z: torch.Tensor):
        w = self.embedding.weight
        if self.distance == "l2":
            d = (-torch.sum(z.detach() ** 2, dim=1, keepdim=True) - torch.sum(w ** 2, dim=1)
                 + 2 * torch.einsum("bd,dn->bn", z.detach(), w.t()))
        else:
            d = torch.einsum("bd,dn->bn", F.normalize(z, dim=1).detach(), F.normalize(w, dim=1).t())
        idx = d.sort(dim=1)[1][:, -1]
        enc = torch.zeros(z.shape[0], self.k, dtype=z.dtype).scatter_(1, idx[:, None], 1)
        z_q = enc @ w
        loss = 0.25 * torch.mean((z_q.detach() - z) ** 2) + torch.mean((z_q - z.detach()) ** 2)
        z_q = z + (z_q - z).detach()
        self.embed_prob.mul_(0.99).add_(enc.mean(0), alpha=0.01)
        if self.anchor == "closest":
            feat = z.detach()[d.sort(dim=0)[1][-1, :]]
        else:
            feat = self.query(z.detach())
        a = torch.exp(-(self.embed_prob * self.k * 10) / 0.01 - 1e-3)[:, None].repeat(1, self.d)
        self.embedding.weight.data = self.embedding.weight.data * (1 - a) + feat * a
        if self.contras:
            ordered = d.sort(dim=0)[0]
            pos = ordered[-max(1, int(ordered.shape[0] / self.k)):, :].mean(dim=0, keepdim=True)
            neg = ordered[: int(ordered.shape[0] * 1 / 2), :]
            dis = torch.cat([pos, neg], dim=0).t() / 0.07
            loss = loss + F.cross_entropy(dis, torch.zeros(dis.shape[0], dtype=torch.long))
        return z_q, loss, idx


def lockstep(distance: str, anchor: str, contras: bool, dtype: torch.dtype, steps: int,
             n: int = 64, d: int = 4, k: int = 32) -> dict[str, float]:
    """Both sides trained side by side by SGD on the same tokens; the largest differences seen."""
    torch.manual_seed(0)
    ours = CVQ(dim=d, codebook_size=k, distance=distance, anchor=anchor, contrastive=contras).to(dtype)
    theirs = AuthorsCVQ(k, d, distance, anchor, contras).to(dtype)
    with torch.no_grad():
        theirs.embedding.weight.copy_(ours.embedding)
    if anchor == "random":
        theirs.pool = ours.pool.clone()
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.5)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.5)
    worst = dict.fromkeys(["indices", "z_q", "loss", "grad_z", "grad_codes", "codes"], 0.0)
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        z = (torch.randn(n, d, generator=g) + torch.tensor([2.0, 0.0, 1.0, -1.0])[:d]).to(dtype)
        up = torch.randn(n, d, generator=g).to(dtype)
        z1, z2 = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        torch.manual_seed(100 + step)
        zq_t, loss_t, idx_t = theirs(z1)
        torch.manual_seed(100 + step)
        out = ours.train().quantize(z2)
        worst["indices"] = max(worst["indices"], float((out.indices != idx_t).sum()))
        worst["z_q"] = max(worst["z_q"], (out.z_q - zq_t).abs().max().item())
        worst["loss"] = max(worst["loss"], abs(out.loss.item() / loss_t.item() - 1))  # relative
        opt_ours.zero_grad()
        opt_theirs.zero_grad()
        ((out.z_q * up).sum() + out.loss).backward()
        ((zq_t * up).sum() + loss_t).backward()
        worst["grad_z"] = max(worst["grad_z"], (z2.grad - z1.grad).abs().max().item())
        worst["grad_codes"] = max(worst["grad_codes"],
                                  (ours.embedding.grad - theirs.embedding.weight.grad).abs().max().item())
        opt_ours.step()
        opt_theirs.step()
        worst["codes"] = max(worst["codes"], (ours.embedding - theirs.embedding.weight).abs().max().item())
    return worst


@pytest.mark.parametrize("distance", ["cos", "l2"])
@pytest.mark.parametrize(("anchor", "contras"), [("closest", False), ("random", False), ("closest", True),
                                                 ("random", True)])
def test_matches_the_authors_code_in_float64_lockstep(distance: str, anchor: str, contras: bool) -> None:
    worst = lockstep(distance, anchor, contras, torch.float64, steps=5)
    assert worst["indices"] == 0
    assert max(worst[key] for key in ("z_q", "loss", "grad_z", "grad_codes", "codes")) < 1e-12, worst


@pytest.mark.parametrize("distance", ["cos", "l2"])
def test_float32_lockstep_survives_the_near_ties_re_anchoring_makes(distance: str) -> None:
    # K = 32 codes, few in use: every step re-anchors the unused ones onto a handful of tokens, so
    # codes become near-duplicates whose similarities differ by rounding; the same formula and
    # tie rule keep every index equal over 20 steps, and the codes with them (measured: every
    # difference exactly 0 here). With a centred nearest-code search and argmin's lowest index on
    # ties, the runs part at the second step (l2) and the third (cos).
    worst = lockstep(distance, "closest", False, torch.float32, steps=20)
    assert worst["indices"] == 0, worst
    assert max(worst.values()) < 1e-5, worst


class TestRandomAnchorContrastive(QuantizerConformance):
    """The kit with the authors' feature pool and their contrastive term."""

    quantizer = "cvq"
    params = {"anchor": "random", "contrastive": True}
    large_n = 2000
