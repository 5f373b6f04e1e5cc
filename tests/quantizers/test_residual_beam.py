"""residual-vq's encode-time beam search: the kit, a hand-computed case, exhaustive search, and
vector-quantize-pytorch's ``ResidualVQ(beam_size=...)`` on identical inputs."""

from __future__ import annotations

import itertools

import pytest
import torch

from harness.plugins.quantizers.residual import ResidualVQ
from harness.testing import QuantizerConformance


class TestBeamRVQ(QuantizerConformance):
    quantizer = "residual-vq"
    params = {"stages": 2, "beam_size": 4}


class TestBeamSumRVQ(QuantizerConformance):
    quantizer = "residual-vq"
    params = {"stages": 3, "beam_size": 3, "beam_score": "sum", "base": "ema"}


def set_codes(q: ResidualVQ, codes: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for stage, c in zip(q.stages, codes, strict=True):
            stage.embedding.copy_(c)


def test_bad_options_are_refused() -> None:
    for bad in ({"beam_size": 0}, {"beam_score": "sum"}, {"beam_size": 2, "beam_score": "final"},
                {"beam_size": 2, "base": "msvq", "base_params": {"scales": [1]}}):
        with pytest.raises(ValueError):
            ResidualVQ(dim=2, codebook_size=4, stages=2, **bad)


def test_hand_computed_case_where_greedy_and_the_sum_score_lose() -> None:
    # stage codes {0, 3} and {-2, 2}, z = 1.6. Greedy: 3 (|1.4| < |1.6|), then -2: z_q = 1, error 0.36.
    # Beam 2, residual score: paths 0+2 = 2 (error 0.16) and 3-2 = 1 (0.36): picks (0, 1), z_q = 2.
    # Beam 2, sum score: (0, 2) scores 2.56 + 0.16 = 2.72, (3, -2) scores 1.96 + 0.36 = 2.32: greedy's path.
    codes = [torch.tensor([[0.0], [3.0]]), torch.tensor([[-2.0], [2.0]])]
    z = torch.tensor([[1.6]])
    expected = {1: ([1, 0], 1.0), 2: ([0, 1], 2.0)}
    for beam, (indices, value) in expected.items():
        q = ResidualVQ(dim=1, codebook_size=2, stages=2, beam_size=beam)
        set_codes(q, codes)
        out = q.eval()(z)
        assert out.indices.tolist() == [indices]
        torch.testing.assert_close(out.z_q, torch.tensor([[value]]))
    q = ResidualVQ(dim=1, codebook_size=2, stages=2, beam_size=2, beam_score="sum")
    set_codes(q, codes)
    out = q.eval()(z)
    assert out.indices.tolist() == [[1, 0]]
    torch.testing.assert_close(out.loss, torch.tensor(1.96 + 0.36))
    torch.testing.assert_close(out.logs["stage1/beam_error"], torch.tensor(0.36))


def test_a_beam_that_keeps_every_path_finds_the_exhaustive_optimum() -> None:
    torch.manual_seed(0)
    q = ResidualVQ(dim=3, codebook_size=4, stages=3, beam_size=16).eval()
    codes = [torch.randn(4, 3) / (1 + level) for level in range(3)]
    set_codes(q, codes)
    z = torch.randn(200, 3)
    out = q(z)
    sums = torch.stack([sum(codes[level][i] for level, i in enumerate(path))
                        for path in itertools.product(range(4), repeat=3)])
    best = torch.cdist(z, sums).argmin(1)
    paths = torch.tensor(list(itertools.product(range(4), repeat=3)))
    assert torch.equal(out.indices, paths[best])
    greedy = ResidualVQ(dim=3, codebook_size=4, stages=3).eval()
    set_codes(greedy, codes)
    greedy_error = (greedy(z).z_q - z).pow(2).sum(1)
    beam_error = (out.z_q - z).pow(2).sum(1)
    assert (beam_error <= greedy_error + 1e-6).all() and (beam_error < greedy_error - 1e-6).any()


def test_training_stays_greedy() -> None:
    torch.manual_seed(0)
    beam = ResidualVQ(dim=4, codebook_size=8, stages=2, beam_size=4)
    torch.manual_seed(0)
    greedy = ResidualVQ(dim=4, codebook_size=8, stages=2)
    z = torch.randn(50, 4)
    a, b = beam(z), greedy(z)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.loss, b.loss)


@pytest.mark.parametrize(("beam", "stages"), [(2, 2), (4, 3), (8, 4)])
def test_matches_vector_quantize_pytorch(beam: int, stages: int) -> None:
    """Their eval beam (the sum score) on the same codes: indices, z_q and the per-stage losses."""
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    theirs = vqp.ResidualVQ(dim=6, num_quantizers=stages, codebook_size=16, beam_size=beam, rotation_trick=False,
                            commitment_weight=1.0, threshold_ema_dead_code=0).eval()
    ours = ResidualVQ(dim=6, codebook_size=16, stages=stages, beam_size=beam, beam_score="sum").eval()
    set_codes(ours, [layer.codebook for layer in theirs.layers])
    z = torch.randn(400, 6, generator=torch.Generator().manual_seed(3))
    q, idx, losses = theirs(z[:, None])
    out = ours(z)
    assert torch.equal(out.indices, idx[:, 0])
    assert (out.z_q - q[:, 0]).abs().max() < 1e-6
    ours_losses = torch.stack([out.logs[f"stage{level}/beam_error"] for level in range(stages)])
    assert (ours_losses - losses).abs().max() < 1e-6
    greedy = ResidualVQ(dim=6, codebook_size=16, stages=stages).eval()
    set_codes(greedy, [layer.codebook for layer in theirs.layers])
    assert not torch.equal(greedy(z).indices, out.indices), "the beam must change some codes for this check to mean much"
