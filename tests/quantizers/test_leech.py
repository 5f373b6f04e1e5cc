"""leech-sq: the Golay code, the Leech lattice's 196,560 minimal vectors, and the quantizer on them.

The authors ship their codebook as a file; here it is built, so these tests check it
against what defines it: the Golay code's weight enumerator, lattice membership, the
norm, the kissing configuration's inner products and the spherical-design moments.
"""

from __future__ import annotations

import math

import pytest
import torch

from harness.plugins.quantizers.leech import (
    KISSING_NUMBER,
    TILE_TOKENS,
    SphericalLeechQuantizer,
    golay_codewords,
    leech_minimal_vectors,
    nearest_codes,
    spherical_leech_codebook,
)
from harness.testing import QuantizerConformance

HALF = KISSING_NUMBER // 2


@pytest.fixture(scope="module")
def vectors() -> torch.Tensor:
    return leech_minimal_vectors()


def as_ints(bits: torch.Tensor) -> torch.Tensor:
    """Each 0/1 row of 24 as one integer, to compare sets of words."""
    return (bits * (1 << torch.arange(24))).sum(-1)


def test_golay_code_has_4096_words_and_the_weight_enumerator():
    words = golay_codewords()
    assert words.shape == (4096, 24)
    assert len(torch.unique(as_ints(words))) == 4096
    # 1 + 759 x^8 + 2576 x^12 + 759 x^16 + x^24
    weights = torch.bincount(words.sum(1), minlength=25)
    expected = torch.zeros(25, dtype=torch.long)
    expected[[0, 8, 12, 16, 24]] = torch.tensor([1, 759, 2576, 759, 1])
    assert torch.equal(weights, expected)
    # linear: the sum of any two words is a word (so the minimum distance is the minimum weight, 8)
    codes = set(as_ints(words).tolist())
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(4096, (2, 500), generator=g)
    assert set(as_ints((words[a] + words[b]) % 2).tolist()) <= codes


def test_minimal_vectors_count_shapes_and_norm(vectors):
    assert vectors.shape == (KISSING_NUMBER, 24)
    assert len(torch.unique(vectors, dim=0)) == KISSING_NUMBER
    assert set((vectors * vectors).sum(1).tolist()) == {32}
    # (±4, ±4, 0^22): 1,104; (±2^8, 0^16): 97,152; (∓3, ±1^23): 98,304
    support = (vectors != 0).sum(1)
    assert (support == 2).sum() == 1_104 and (support == 8).sum() == 97_152 and (support == 24).sum() == 98_304
    # the codebook is [H; -H]
    assert torch.equal(vectors[HALF:], -vectors[:HALF])


def test_every_vector_is_in_the_leech_lattice(vectors):
    """Leech lattice (norm² 32 scaling): all coordinates even, ``x/2 mod 2`` a Golay word and the sum
    ``= 0 mod 8``; or all odd, the positions ``= 3 mod 4`` a Golay word and the sum ``= 4 mod 8``."""
    codes = set(as_ints(golay_codewords()).tolist())
    even = (vectors % 2 == 0).all(1)
    odd = (vectors % 2 == 1).all(1)
    assert bool((even | odd).all())
    e, o = vectors[even], vectors[odd]
    assert set(as_ints((e // 2) % 2).tolist()) <= codes and bool((e.sum(1) % 8 == 0).all())
    assert set(as_ints((o % 4 == 3).long()).tolist()) <= codes and bool((o.sum(1) % 8 == 4).all())


def test_inner_products_are_the_kissing_configuration(vectors):
    """From any minimal vector the others lie at inner products 32 (itself), ±16, ±8, 0 and -32
    (its antipode), 1 / 4,600 / 47,104 / 93,150 / 47,104 / 4,600 / 1 of them: on the unit sphere
    the inner products between distinct codes are in {±1/2, ±1/4, 0, -1}, so no two codes are
    closer than 60 degrees, a kissing arrangement of 196,560 spheres (the maximum in 24-D).

    Checked from every vector of each shape's first rows and from random rows; the lattice's
    automorphism group is transitive on minimal vectors, so every row has this distribution."""
    g = torch.Generator().manual_seed(1)
    support = (vectors != 0).sum(1)
    firsts = torch.cat([torch.nonzero(support == s)[:4, 0] for s in (2, 8, 24)])
    rows = firsts.tolist() + torch.randint(KISSING_NUMBER, (20,), generator=g).tolist()
    full = vectors.double()
    expected = {32: 1, 16: 4_600, 8: 47_104, 0: 93_150, -8: 47_104, -16: 4_600, -32: 1}
    for r in rows:
        products = (full @ full[r]).long()
        values, counts = torch.unique(products, return_counts=True)
        assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == expected, f"row {r}"


@pytest.mark.parametrize("degree", [2, 4, 6, 8, 10])
def test_codes_are_a_spherical_design(vectors, degree):
    """The unit minimal vectors are a spherical 11-design: for any unit x the mean of ``<c, x>^t``
    over the codes equals the sphere's, ``(t-1)!! / (24 * 26 * ... * (24 + t - 2))`` for even t."""
    codes = vectors.double() / math.sqrt(32)
    x = torch.nn.functional.normalize(torch.randn(3, 24, generator=torch.Generator().manual_seed(degree),
                                                  dtype=torch.float64), dim=-1)
    mean = ((codes @ x.t()) ** degree).mean(0)
    sphere = math.prod(range(degree - 1, 0, -2)) / math.prod(range(24, 24 + degree, 2))
    torch.testing.assert_close(mean, torch.full_like(mean, sphere), rtol=1e-9, atol=0)
    assert ((codes @ x.t()) ** (degree + 1)).mean(0).abs().max() < 1e-12  # odd moments vanish


def test_search_is_the_nearest_code_over_the_whole_codebook():
    codes = spherical_leech_codebook()
    g = torch.Generator().manual_seed(2)
    u = torch.nn.functional.normalize(torch.randn(TILE_TOKENS + 37, 24, generator=g), dim=-1)
    found = nearest_codes(u, codes[:HALF])
    assert torch.equal(found, (u @ codes.t()).argmax(1))
    assert torch.equal(found, torch.cdist(u, codes).argmin(1))


def test_matches_a_float64_reference_of_the_authors_forward():
    """The authors' ``VectorQuantizer`` (bsq-vit, L24SQ config) restated in float64: normalize z and
    every code, ``argmin -z @ codes^T`` over all 196,560 rows, ``q`` the normalized row,
    loss ``beta mean ||sg(q) - z||^2 + mean ||q - sg(z)||^2``, ``z_q = z + sg(q - z)``. Same indices,
    values and gradient as the plugin (whose half-codebook search and float32 codes differ only by rounding)."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(1200, 24, generator=g, dtype=torch.float64)
    codes = torch.nn.functional.normalize(leech_minimal_vectors().double(), dim=-1)
    ref_z = torch.nn.functional.normalize(z, dim=-1).requires_grad_(True)
    index = (-ref_z.detach() @ codes.t()).argmin(1)
    ref_q = codes[index]
    ref_loss = (0.25 * ((ref_q - ref_z) ** 2).sum(-1).mean()
                + ((ref_q - ref_z.detach()) ** 2).sum(-1).mean())
    ref_out = ref_z + (ref_q - ref_z).detach()
    q = SphericalLeechQuantizer(dim=24, loss_weight=1.0).double()
    mine = z.clone().requires_grad_(True)
    out = q.quantize(mine)  # float64 throughout (forward would cast to float32)
    assert torch.equal(out.indices, index)
    torch.testing.assert_close(out.z_q, ref_out, rtol=0, atol=1e-7)
    torch.testing.assert_close(out.loss, ref_loss, rtol=1e-7, atol=0)
    upstream = torch.randn(1200, 24, generator=g, dtype=torch.float64)
    ((out.z_q * upstream).sum() + out.loss).backward()
    ((ref_out * upstream).sum() + ref_loss).backward()
    (expected,) = torch.autograd.grad(torch.nn.functional.normalize(z.requires_grad_(True), dim=-1), z,
                                      grad_outputs=ref_z.grad)
    torch.testing.assert_close(mine.grad, expected, rtol=0, atol=1e-9)


def test_quantized_value_index_and_loss_by_hand():
    """z = (3, 1, 0^22): u = (3, 1, 0...)/sqrt(10). The best codes of each shape: (4, 4, 0...)/sqrt(32)
    at 16/sqrt(320) = 0.894; (2^8) on an octad through 0 and 1 at 8/sqrt(320) = 0.447; (3, 1, ..., -3 ...)
    at 10/sqrt(320) = 0.559. So q = (1, 1, 0...)/sqrt(2), row 0 (the first pair, signs + +)."""
    q = SphericalLeechQuantizer(dim=24, beta=0.25, loss_weight=1.0)
    z = torch.zeros(2, 24)
    z[0, :2] = torch.tensor([3.0, 1.0])
    z[1] = -z[0]
    out = q(z)
    assert out.indices.tolist() == [0, HALF]  # the antipode of row 0 is row K/2
    expected = torch.zeros(2, 24)
    expected[0, :2] = 1 / math.sqrt(2)
    expected[1] = -expected[0]
    torch.testing.assert_close(out.z_q, expected)
    commitment = 2 - 2 * 4 / math.sqrt(20)  # ||q - u||^2 = 2 - 2 <u, q>, <u, q> = 4 / sqrt(20)
    assert out.logs["commitment_loss"].item() == pytest.approx(commitment, rel=1e-6)
    assert out.loss.item() == pytest.approx(1.25 * commitment, rel=1e-6)  # beta x commit + codebook term
    assert q.bits_per_token == math.log2(196_560)


def test_defaults_are_the_authors_config_no_loss():
    out = SphericalLeechQuantizer(dim=24).train()(torch.randn(5, 24))
    assert out.loss.item() == 0.0 and out.logs["commitment_loss"].item() > 0


def test_straight_through_is_the_identity_to_the_unit_vector():
    q = SphericalLeechQuantizer(dim=24)
    z = torch.zeros(1, 24)
    z[0, 0] = 1.0
    z.requires_grad_(True)
    g = torch.zeros(1, 24)
    g[0, 1], g[0, 0] = 1.0, 5.0
    (q(z).z_q * g).sum().backward()
    # d normalize(z) / dz at ||z|| = 1 is I - u u^T: the radial part of g is dropped
    expected = torch.zeros(1, 24)
    expected[0, 1] = 1.0
    torch.testing.assert_close(z.grad, expected)


def test_other_sizes_are_refused_and_the_codes_stay_out_of_the_state_dict():
    with pytest.raises(ValueError, match="codebook_size must be 196560"):
        SphericalLeechQuantizer(dim=24, codebook_size=4096)
    q = SphericalLeechQuantizer(dim=8)
    assert "codes" not in q.state_dict()
    assert q.codebook().shape == (KISSING_NUMBER, 8)


class TestLeechAt24(QuantizerConformance):
    """The kit at the lattice's own dimension, no projections (tests/quantizers/test_conformance.py
    runs it at the kit's dim 8, through the Linear maps)."""

    quantizer = "leech-sq"
    dim, codebook_size = 24, KISSING_NUMBER
    large_n = 4096  # an exhaustive search over 98,280 codes per token: several tiles, CPU-sized

    def test_training_reduces_error(self) -> None:
        """At dim 24 nothing trains: no parameter, the codes fixed (the kit would see a buffer and expect change)."""
        q = self.conformance_case().build()
        assert not [n for n, p in q.named_parameters() if p.requires_grad]
