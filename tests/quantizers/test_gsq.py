"""gsq: per-group l2 lookup in one shared spherical codebook; raw codes out; G indices per token."""

from __future__ import annotations

import math

import pytest
import torch

from harness.plugins.quantizers.gsq import GSQ
from harness.testing import QuantizerConformance

CODES = torch.tensor([[2.0, 0.0], [0.0, 0.5], [-1.0, -1.0]])


def hand_gsq(groups: int = 1, output: str = "sphere") -> GSQ:
    q = GSQ(dim=2 * groups, codebook_size=3, groups=groups, output=output)
    with torch.no_grad():
        q.embedding.copy_(CODES)
    return q


def test_lookup_is_on_the_sphere_and_raw_output_is_the_authors_code():
    q = hand_gsq(output="raw").train()
    z = torch.tensor([[3.0, 1.0]], requires_grad=True)
    out = q(z)
    # x = (3, 1)/sqrt(10): cosine to the codes' directions (1,0), (0,1), -(1,1)/sqrt(2) picks code 0,
    # although the raw code (0, 0.5) is nearer to x in plain Euclidean distance (0.93 vs 1.21)
    assert out.indices.tolist() == [0]
    torch.testing.assert_close(out.z_q, torch.tensor([[2.0, 0.0]]))
    x = torch.tensor([3.0, 1.0]) / math.sqrt(10)
    mse = ((CODES[0] - x) ** 2).mean().item()
    assert out.loss.item() == pytest.approx(1.25 * mse, rel=1e-6)  # codebook term + 0.25 commitment
    out.loss.backward()
    torch.testing.assert_close(q.embedding.grad[0], CODES[0] - x)  # d mse(e, sg x)/de = (e - x) for d = 2
    assert torch.equal(q.embedding.grad[1:], torch.zeros(2, 2))


def test_default_output_is_the_code_on_the_sphere():
    q = hand_gsq().train()
    z = torch.tensor([[3.0, 1.0]])
    out = q(z)
    assert out.indices.tolist() == [0]
    torch.testing.assert_close(out.z_q, torch.tensor([[1.0, 0.0]]))
    x = torch.tensor([3.0, 1.0]) / math.sqrt(10)
    assert out.loss.item() == pytest.approx(1.25 * ((torch.tensor([1.0, 0.0]) - x) ** 2).mean().item(), rel=1e-6)
    out.loss.backward()
    # through c / ||c|| at c = (2, 0): only the tangential part (0, g_y) / 2 survives
    torch.testing.assert_close(q.embedding.grad[0], torch.tensor([0.0, -x[1].item() / 2]))
    torch.testing.assert_close(q.codebook(), CODES / CODES.norm(dim=1, keepdim=True))


def test_groups_share_the_codebook_and_give_one_index_each():
    q = hand_gsq(groups=2, output="raw").eval()
    out = q(torch.tensor([[3.0, 1.0, 1.0, 3.0], [-5.0, -4.0, 0.0, 7.0]]))
    assert out.indices.tolist() == [[0, 1], [2, 1]]
    torch.testing.assert_close(out.z_q, torch.tensor([[2.0, 0.0, 0.0, 0.5], [-1.0, -1.0, 0.0, 0.5]]))
    assert q.num_stages == 2 and q.stage_sizes == (3, 3) and q.codebook() is None
    assert q.bits_per_token == pytest.approx(2 * math.log2(3))


def test_spherical_initialisation_and_bad_groups():
    q = GSQ(dim=8, codebook_size=32)
    torch.testing.assert_close(q.embedding.norm(dim=1), torch.ones(32))
    with pytest.raises(ValueError, match="groups must divide"):
        GSQ(dim=8, codebook_size=32, groups=3)
    with pytest.raises(ValueError, match="output must be one of"):
        GSQ(dim=8, codebook_size=32, output="unit")


class TestFourGroups(QuantizerConformance):
    """The kit on the multi-group form (the registry-wide run covers groups = 1)."""

    quantizer = "gsq"
    params = {"groups": 4}
    large_n = 2000
