"""BEST-RQ's random-projection quantizer: the kit, a hand-computed case, frozen assignment, and
vector-quantize-pytorch's RandomProjectionQuantizer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.plugins.quantizers.best_rq import RandomProjectionQuantizer, largest_cosine
from harness.testing import QuantizerConformance


class TestBestRQConformance(QuantizerConformance):
    quantizer = "best-rq"


def _hand_case() -> RandomProjectionQuantizer:
    q = RandomProjectionQuantizer(dim=2, codebook_size=3, codebook_dim=2, normalize_input=False).eval()
    with torch.no_grad():
        q.projection.copy_(torch.eye(2))
        q.codes.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]))
        q.project_out.weight.copy_(torch.eye(2))
        q.project_out.bias.zero_()
    return q


def test_hand_computed_case() -> None:
    q = _hand_case()
    # unit codes (1, 0), (0, 1), (-1, -1)/sqrt(2); l2(z): (3, 1) -> code 0, (-1, -2) -> 2, (0.1, 5) -> 1
    z = torch.tensor([[3.0, 1.0], [-1.0, -2.0], [0.1, 5.0]], requires_grad=True)
    out = q(z)
    assert out.indices.tolist() == [0, 2, 1]
    r = 1 / math.sqrt(2)
    assert torch.allclose(out.z_q, torch.tensor([[1.0, 0.0], [-r, -r], [0.0, 1.0]]), atol=1e-6)
    assert out.loss.item() == 0.0 and q.bits_per_token == math.log2(3)
    # straight-through on the sphere: d z_q / d z = (I - u u^T) / |z| with u = z / |z|
    out.z_q[0].sum().backward()
    u = torch.tensor([3.0, 1.0]) / math.sqrt(10)
    expected = (torch.eye(2) - torch.outer(u, u)) / math.sqrt(10)
    assert torch.allclose(z.grad[0], expected.sum(0), atol=1e-6)


def test_input_standardization_ignores_offset_and_scale() -> None:
    torch.manual_seed(0)
    q = RandomProjectionQuantizer(dim=8, codebook_size=64).eval()
    z = torch.randn(300, 8)
    assert torch.equal(q(z).indices, q(3.0 * z + 5.0).indices)


def test_the_assignment_never_trains() -> None:
    """Training moves only the read-out; which code a token gets stays as drawn."""
    torch.manual_seed(0)
    q = RandomProjectionQuantizer(dim=8, codebook_size=64).train()
    assert {n for n, p in q.named_parameters() if p.requires_grad} == {"project_out.weight", "project_out.bias"}
    assert {"projection", "codes"} <= set(q.state_dict())  # frozen, but saved: a reload keeps them
    z = torch.randn(256, 8)
    before = q(z).indices
    opt = torch.optim.Adam(q.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        F.mse_loss(q(z).z_q, z).backward()
        opt.step()
    assert torch.equal(q(z).indices, before)


def test_blocks_do_not_change_the_choice() -> None:
    torch.manual_seed(0)
    y, codes = F.normalize(torch.randn(1000, 16), dim=-1), F.normalize(torch.randn(300, 16), dim=-1)
    assert torch.equal(largest_cosine(y, codes, block=300 * 7), (y @ codes.t()).argmax(-1))


def test_matches_the_papers_equation_in_float64() -> None:
    """``argmin_k ||l2(c_k) - l2(A x)||`` written out directly (section 3.1), on a float64 copy."""
    torch.manual_seed(0)
    q = RandomProjectionQuantizer(dim=8, codebook_size=512, normalize_input=False).double()
    z = torch.randn(2000, 8, dtype=torch.float64)
    distance = torch.cdist(F.normalize(z @ q.projection, dim=-1), F.normalize(q.codes, dim=-1))
    assert torch.equal(q.quantize(z).indices, distance.argmin(-1))


@pytest.mark.parametrize(("dim", "k", "codebook_dim"), [(8, 256, 16), (8, 4096, 16), (32, 1024, 8)])
def test_indices_match_vector_quantize_pytorch(dim: int, k: int, codebook_dim: int) -> None:
    """Its projection and codebook copied in, identical inputs: identical codes (float32)."""
    pytest.importorskip("vector_quantize_pytorch")
    from vector_quantize_pytorch.random_projection_quantizer import (
        RandomProjectionQuantizer as Peer,
    )

    torch.manual_seed(0)
    theirs = Peer(dim=dim, codebook_size=k, codebook_dim=codebook_dim)
    ours = RandomProjectionQuantizer(dim=dim, codebook_size=k, codebook_dim=codebook_dim)
    with torch.no_grad():
        ours.projection.copy_(theirs.rand_projs[0])
        ours.codes.copy_(theirs.vq._codebook.embed[0])
    z = torch.randn(1, 3000, dim)
    assert torch.equal(ours(z[0]).indices, theirs(z)[0])
