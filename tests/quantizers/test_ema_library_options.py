"""ema's vector-quantize-pytorch options: cosine codes, orthogonal regularizer, heads, stochastic
sampling, affine re-normalisation.

Each option: the conformance kit with it on, a hand-computed case, and a comparison on identical
inputs against vector-quantize-pytorch's ``VectorQuantize`` (its default codebook is this EMA one;
run when the package is installed, skipped otherwise): indices, z_q, the loss, the input gradient
and every statistic after three training steps. Its codebook forward casts to float32, so the
comparison runs in float32.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from harness.plugins.quantizers.ema import EMAQuantizer
from harness.testing import QuantizerConformance


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Every check draws its codes and tokens under one seed: the tolerances below were measured there."""
    torch.manual_seed(0)


class TestCosineEMA(QuantizerConformance):
    quantizer = "ema"
    params = {"cosine_sim": True}


class TestOrthogonalEMA(QuantizerConformance):
    quantizer = "ema"
    params = {"orthogonal_reg_weight": 10.0}


class TestSharedHeadsEMA(QuantizerConformance):
    quantizer = "ema"
    params = {"heads": 2, "kmeans_init": True, "dead_code_reset": 1}


class TestSeparateHeadsEMA(QuantizerConformance):
    quantizer = "ema"
    params = {"heads": 4, "separate_codebook_per_head": True, "kmeans_init": True, "dead_code_reset": 1}


class TestSampledEMA(QuantizerConformance):
    quantizer = "ema"
    params = {"sample_temperature": 0.1}


class TestAffineEMA(QuantizerConformance):
    quantizer = "ema"
    params = {"affine_param": True}


def test_plain_ema_keeps_its_state_and_bad_values_are_refused() -> None:
    assert set(EMAQuantizer(dim=4, codebook_size=8).state_dict()) == {"embedding", "cluster_size", "embed_sum"}
    assert list(EMAQuantizer(dim=4, codebook_size=8).parameters()) == []
    for bad in ({"heads": 3}, {"separate_codebook_per_head": True}, {"sample_temperature": -1.0},
                {"affine_param": True, "cosine_sim": True}, {"affine_param_batch_decay": 0.5}):
        with pytest.raises(ValueError):
            EMAQuantizer(dim=4, codebook_size=8, **bad)


def test_cosine_ema_step_by_hand() -> None:
    q = EMAQuantizer(dim=2, codebook_size=2, cosine_sim=True, decay=0.5)
    for t in (q.embedding, q.embed_sum):
        t.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    out = q(torch.tensor([[3.0, 4.0], [2.0, 0.0]]))  # unit (0.6, 0.8) -> code 1; (1, 0) -> code 0
    assert out.indices.tolist() == [1, 0]
    torch.testing.assert_close(out.z_q, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    # N = (1, 1); m_1 = 0.5 (0, 1) + 0.5 (0.6, 0.8) = (0.3, 0.9); Laplace smoothing leaves N' = 1
    torch.testing.assert_close(q.embed_sum, torch.tensor([[1.0, 0.0], [0.3, 0.9]]))
    torch.testing.assert_close(q.embedding, torch.tensor([[1.0, 0.0], [0.3, 0.9]]) / torch.tensor([[1.0], [0.9**0.5]]))


def test_orthogonal_ema_makes_the_codebook_a_parameter() -> None:
    q = EMAQuantizer(dim=2, codebook_size=3, orthogonal_reg_weight=0.5, decay=0.0, eps=0.0)
    assert [n for n, _ in q.named_parameters()] == ["embedding"]
    for t in (q.embedding.data, q.embed_sum):
        t.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]))
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])  # each token on its code: decay 0 keeps the codes
    out = q(z)
    torch.testing.assert_close(out.logs["orthogonal_loss"], torch.tensor(2.0 / 9.0))  # see test_vq_library_options
    torch.testing.assert_close(out.loss, torch.tensor(0.5 * 2.0 / 9.0))
    out.loss.backward()
    assert q.embedding.grad.abs().sum() > 0


@pytest.mark.parametrize("separate", [False, True])
def test_heads_keep_statistics_per_codebook(separate: bool) -> None:
    q = EMAQuantizer(dim=2, codebook_size=2, heads=2, separate_codebook_per_head=separate, decay=0.5, eps=0.0)
    assert q.num_stages == 2 and q.bits_per_token == 2.0 and q.codebook() is None
    start = torch.tensor([[0.0], [10.0]])
    for t in (q.embedding, q.embed_sum):
        t.copy_(start.expand(2, 2, 1) if separate else start)
    out = q(torch.tensor([[2.0, 8.0], [1.0, 0.0]]))
    assert out.indices.tolist() == [[0, 1], [0, 0]]
    if separate:  # head 0 saw 2 and 1 on code 0; head 1 saw 8 on code 1 and 0 on code 0
        torch.testing.assert_close(q.cluster_size, torch.tensor([[1.5, 0.5], [1.0, 1.0]]))
        torch.testing.assert_close(q.embed_sum[..., 0], torch.tensor([[1.5, 5.0], [0.0, 9.0]]))
    else:  # one codebook saw 2, 1, 0 on code 0 and 8 on code 1
        torch.testing.assert_close(q.cluster_size, torch.tensor([2.0, 1.0]))
        torch.testing.assert_close(q.embed_sum[..., 0], torch.tensor([1.5, 9.0]))


def test_affine_by_hand() -> None:
    q = EMAQuantizer(dim=1, codebook_size=2, affine_param=True, decay=0.5)
    for t in (q.embedding, q.embed_sum):
        t.copy_(torch.tensor([[0.0], [2.0]]))  # codebook mean 1, variance 1
    # batch mean 12, variance 4: the codes tokens see are (e - 1) * 2 / 1 + 12 = 10 and 14
    out = q(torch.tensor([[10.0], [14.0]]))
    assert out.indices.tolist() == [0, 1]
    torch.testing.assert_close(out.z_q, torch.tensor([[10.0], [14.0]]))
    torch.testing.assert_close(q.codebook(), torch.tensor([[10.0], [14.0]]))
    # the statistics get the tokens mapped back, (z - 12) / 2 + 1 = 0 and 2: the codes stay
    torch.testing.assert_close(q.embedding, torch.tensor([[0.0], [2.0]]), rtol=0, atol=1e-4)
    # running statistics: the second batch moves them by (1 - 0.99) and (1 - 0.9)
    q(torch.tensor([[20.0], [24.0]]))
    torch.testing.assert_close(q.batch_mean.flatten(), torch.tensor([0.99 * 12 + 0.01 * 22]))
    before = {k: v.clone() for k, v in q.state_dict().items()}
    q.eval()(torch.tensor([[50.0]]))
    assert all(torch.equal(v, before[k]) for k, v in q.state_dict().items()), "eval changes nothing"


def test_sampling_picks_by_the_softmax_in_training_only() -> None:
    q = EMAQuantizer(dim=1, codebook_size=2, sample_temperature=0.5, decay=0.999999)
    for t in (q.embedding, q.embed_sum):
        t.copy_(torch.tensor([[0.0], [1.0]]))
    z = torch.full((40_000, 1), 0.25)
    torch.manual_seed(0)
    assert abs(q(z).indices.float().mean().item() - 1 / (1 + math.e)) < 0.01
    assert q.eval()(z).indices.eq(0).all()


# ---------------------------------------------------------------------------- against the authors' code

CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "cosine": ({"cosine_sim": True}, {"use_cosine_sim": True}),
    "orthogonal": ({"orthogonal_reg_weight": 2.0}, {"orthogonal_reg_weight": 2.0}),
    "shared-heads": ({"heads": 4}, {"heads": 4, "codebook_dim": 2}),
    "separate-heads": ({"heads": 4, "separate_codebook_per_head": True},
                       {"heads": 4, "separate_codebook_per_head": True, "codebook_dim": 2}),
    "sampling": ({"sample_temperature": 0.5}, {"stochastic_sample_codes": True, "sample_codebook_temp": 0.5}),
    "cosine-sampling": ({"sample_temperature": 0.05, "cosine_sim": True},
                        {"stochastic_sample_codes": True, "sample_codebook_temp": 0.05, "use_cosine_sim": True}),
    "affine": ({"affine_param": True}, {"affine_param": True}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_vector_quantize_pytorch(case: str) -> None:
    vqp = pytest.importorskip("vector_quantize_pytorch")
    mine, theirs_kw = CASES[case]
    torch.manual_seed(0)
    theirs = vqp.VectorQuantize(dim=8, codebook_size=32, decay=0.9, commitment_weight=0.25, rotation_trick=False,
                                threshold_ema_dead_code=0, **theirs_kw).train()
    ours = EMAQuantizer(dim=8, codebook_size=32, decay=0.9, beta=0.25, **mine).train()
    book = theirs._codebook
    with torch.no_grad():
        ours.embedding.copy_(book.embed.reshape(ours.embedding.shape))
        ours.embed_sum.copy_(book.embed_avg.reshape(ours.embed_sum.shape))
        ours.cluster_size.copy_(book.cluster_size.reshape(ours.cluster_size.shape))
    gen = torch.Generator().manual_seed(1)
    worst: dict[str, float] = {}
    for step in range(3):
        z = torch.randn(256, 8, generator=gen) * (1 + step) + step
        g = torch.randn(256, 8, generator=gen)
        x = z.clone()[:, None].requires_grad_(True)
        mine_x = z.clone().requires_grad_(True)
        torch.manual_seed(10 + step)
        q, idx, loss = theirs(x)
        torch.manual_seed(10 + step)
        out = ours(mine_x)
        ((q[:, 0] * g).sum() + loss).backward()
        ((out.z_q * g).sum() + out.loss).backward()
        assert torch.equal(out.indices, idx[:, 0]), f"step {step}: indices differ"
        diffs = {"z_q": (out.z_q - q[:, 0]).abs().max(), "loss": (out.loss - loss).abs(),
                 "grad": (mine_x.grad - x.grad[:, 0]).abs().max(),
                 "codes": (ours.embedding - book.embed.reshape(ours.embedding.shape)).abs().max(),
                 "sums": (ours.embed_sum - book.embed_avg.reshape(ours.embed_sum.shape)).abs().max(),
                 "sizes": (ours.cluster_size - book.cluster_size.reshape(ours.cluster_size.shape)).abs().max()}
        if case == "orthogonal":
            diffs["code_grad"] = (ours.embedding.grad - book.embed.grad.reshape(ours.embedding.shape)).abs().max()
        if case == "affine":
            for name in ("batch_mean", "batch_variance", "codebook_mean", "codebook_variance"):
                diffs[name] = (getattr(ours, name) - getattr(book, name)).abs().max()
        for key, value in diffs.items():
            worst[key] = max(worst.get(key, 0.0), float(value.detach()))
    print(case, {k: f"{v:.1e}" for k, v in worst.items()})
    assert all(value < 2e-5 for value in worst.values()), worst
