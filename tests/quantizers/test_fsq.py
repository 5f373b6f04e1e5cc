"""FSQ: levels table, bound and rounding levels, index packing and unpacking, gradient."""

from __future__ import annotations

import math

import pytest
import torch

from harness.plugins.quantizers.fsq import FSQ, FSQCodec

# h = (L - 1)(1 - 1e-3) / 2
H8, H5 = 7 * 0.999 / 2, 4 * 0.999 / 2
SHIFT8 = math.tan(0.5 / H8)


@pytest.mark.parametrize(("size", "levels", "codes"), [
    (256, (8, 6, 5), 240), (1024, (8, 5, 5, 5), 1000), (4096, (7, 5, 5, 5, 5), 4375),
    (16384, (8, 8, 8, 6, 5), 15360), (65536, (8, 8, 8, 5, 5, 5), 64000),
])
def test_levels_from_the_papers_table(size: int, levels: tuple[int, ...], codes: int) -> None:
    q = FSQ(dim=len(levels), codebook_size=size)
    assert q.levels == levels
    assert q.codebook_size == codes == q.stage_sizes[0]
    assert q.requested_codebook_size == size


def test_unsupported_size_names_the_supported_ones() -> None:
    with pytest.raises(ValueError, match=r"no published levels for codebook_size 100.*256.*65536.*levels="):
        FSQ(dim=4, codebook_size=100)


def test_explicit_levels() -> None:
    q = FSQ(dim=8, codebook_size=100, levels=[4, 4])
    assert q.codebook_size == 16 and q.levels == (4, 4)
    with pytest.raises(ValueError, match="give 64 codes, more than codebook_size 16"):
        FSQ(dim=8, codebook_size=16, levels=[4, 4, 4])
    with pytest.raises(ValueError, match="integers >= 2"):
        FSQ(dim=8, codebook_size=16, levels=[4, 1])


def test_projection_only_when_dim_differs() -> None:
    assert isinstance(FSQ(dim=2, codebook_size=16, levels=[4, 4]).project_in, torch.nn.Identity)
    q = FSQ(dim=8, codebook_size=16, levels=[4, 4])
    assert isinstance(q.project_in, torch.nn.Linear) and q.project_in.out_features == 2
    assert isinstance(q.project_out, torch.nn.Linear) and q.project_out.in_features == 2
    assert q.codebook().shape == (16, 8)


def test_bound_maps_zero_near_zero_and_saturates_at_the_end_levels() -> None:
    codec = FSQCodec((8, 5))
    # even L: f(0) = tanh(tan(0.5 / h)) h - 0.5 (the paper's shift uses tan, so it is -1.4e-5, not 0)
    f0 = torch.tensor([[math.tanh(SHIFT8) * H8 - 0.5, 0.0]])
    assert torch.allclose(codec.bound(torch.zeros(1, 2)), f0, atol=1e-7)
    assert abs(f0[0, 0]) < 1e-4 and torch.equal(codec.quantize(torch.zeros(1, 2)), torch.zeros(1, 2))
    # tanh -> +-1: f -> +-h - offset; rounded: L=8 -> 3 and -4 (/4), L=5 -> +-2 (/2)
    big = torch.tensor([[20.0, 20.0], [-20.0, -20.0]])
    assert torch.allclose(codec.bound(big), torch.tensor([[H8 - 0.5, H5], [-H8 - 0.5, -H5]]))
    assert torch.equal(codec.quantize(big), torch.tensor([[0.75, 1.0], [-1.0, -1.0]]))


def test_rounding_levels() -> None:
    codec = FSQCodec((8, 5))
    grid = torch.linspace(-10, 10, 20001)[:, None].expand(-1, 2)
    z_hat = codec.quantize(grid)
    assert z_hat[:, 0].unique().tolist() == [v / 4 for v in range(-4, 4)]
    assert z_hat[:, 1].unique().tolist() == [v / 2 for v in range(-2, 3)]


def test_mid_values_round_to_the_nearest_level() -> None:
    codec = FSQCodec((8, 5))
    # L=8: f(z) = 1.4 needs tanh(z + shift) = 1.9 / h; round(1.4) = 1 -> 1/4
    # L=5: f(z) = 1.6 needs tanh(z) = 1.6 / h; round(1.6) = 2 -> 2/2
    z = torch.tensor([[math.atanh(1.9 / H8) - SHIFT8, math.atanh(1.6 / H5)]])
    assert torch.allclose(codec.bound(z), torch.tensor([[1.4, 1.6]]), atol=1e-5)
    assert torch.equal(codec.quantize(z), torch.tensor([[0.25, 1.0]]))


def test_index_packing_basis() -> None:
    codec = FSQCodec((8, 5))
    # digits z_hat * floor(L/2) + floor(L/2); index = d0 + 8 d1
    z_hat = torch.tensor([[0.0, 0.0], [0.75, 1.0], [-1.0, -1.0], [0.25, -0.5]])
    # (4, 2) -> 20; (7, 4) -> 39; (0, 0) -> 0; (5, 1) -> 13
    assert codec.codes_to_indices(z_hat).tolist() == [20, 39, 0, 13]


@pytest.mark.parametrize("levels", [(8, 5), (8, 6, 5), (7, 5, 5, 5, 5)])
def test_unpacking_round_trip(levels: tuple[int, ...]) -> None:
    codec = FSQCodec(levels)
    k = math.prod(levels)
    codes = codec.indices_to_codes(torch.arange(k))
    assert codes.shape == (k, len(levels))
    assert torch.unique(codes, dim=0).shape[0] == k
    assert torch.equal(codec.codes_to_indices(codes), torch.arange(k))
    assert codes.min() == -1.0 and codes.max() <= 1.0


def test_forward_indices_decode_to_z_q_and_loss_is_zero() -> None:
    torch.manual_seed(0)
    q = FSQ(dim=3, codebook_size=256).eval()
    out = q(torch.randn(50, 3) * 2)
    assert torch.equal(q.decode(out.indices), out.z_q)
    assert out.loss.item() == 0.0 and not list(q.parameters())


def test_straight_through_gradient_is_the_bounds_derivative() -> None:
    q = FSQ(dim=2, codebook_size=40, levels=[8, 5])
    z = torch.tensor([[0.3, -0.7]], requires_grad=True)
    g = torch.tensor([[1.5, -2.0]])
    (q(z).z_q * g).sum().backward()
    # d/dz [tanh(z + shift) h - offset] / floor(L/2) = h (1 - tanh^2(z + shift)) / floor(L/2)
    t8, t5 = math.tanh(0.3 + SHIFT8), math.tanh(-0.7)
    expected = torch.tensor([[1.5 * H8 * (1 - t8**2) / 4, -2.0 * H5 * (1 - t5**2) / 2]])
    assert torch.allclose(z.grad, expected, atol=1e-6)


def test_paper_formula_at_two_levels_is_why_l2_is_symmetric() -> None:
    # the paper's form at L = 2: h = 0.4995, shift = tan(0.5 / h) = 1.5608, f = tanh(z + shift) h - 0.5:
    # its range is (-1, 0), so it rounds to {-1, 0}, and f = -0.5 (the boundary) at z = -shift
    h = 0.999 / 2
    shift = math.tan(0.5 / h)
    assert shift == pytest.approx(1.5608, abs=1e-4)
    paper = FSQCodec((2,), symmetric=(False,))
    assert paper.quantize(torch.tensor([[-shift - 1e-3], [-shift + 1e-3], [0.0]])).flatten().tolist() == [-1.0, 0.0, 0.0]
    # the plugin's L = 2 channel: the symmetric form floor((tanh z + 1)/2 + 1/2) * 2 - 1: {-1, +1} split at 0
    codec = FSQ(dim=2, codebook_size=10, levels=[2, 5]).codec
    assert codec.symmetric.tolist() == [True, False]
    z = torch.tensor([[-1e-3, 0.0], [1e-3, 0.0], [-5.0, 0.0], [5.0, 0.0]])
    assert codec.quantize(z)[:, 0].tolist() == [-1.0, 1.0, -1.0, 1.0]
    # odd symmetry: q(-z) = -q(z) away from the boundary
    grid = torch.linspace(-4, 4, 801)[:, None].expand(-1, 2)
    grid = grid[grid[:, 0].abs() > 1e-6]
    assert torch.equal(codec.quantize(-grid)[:, 0], -codec.quantize(grid)[:, 0])


def test_two_level_channel_indices_and_gradient() -> None:
    q = FSQ(dim=2, codebook_size=10, levels=[2, 5])
    # digits: L=2 -> (z_hat + 1) / 2 in {0, 1}; L=5 -> z_hat * 2 + 2; index = d0 + 2 d1
    codes = q.codec.indices_to_codes(torch.arange(10))
    assert codes[:, 0].unique().tolist() == [-1.0, 1.0] and codes[:, 1].unique().tolist() == [-1, -0.5, 0, 0.5, 1]
    assert torch.equal(q.codec.codes_to_indices(codes), torch.arange(10))
    assert q.codec.codes_to_indices(torch.tensor([[1.0, -0.5]])).tolist() == [1 + 2 * 1]
    # straight-through floor: d/dz [(tanh z + 1)/2 + 1/2] / (1/2) = 1 - tanh^2 z
    z = torch.tensor([[0.3, -0.7]], requires_grad=True)
    (q(z).z_q * torch.tensor([[2.0, 1.0]])).sum().backward()
    t5 = math.tanh(-0.7)
    assert torch.allclose(z.grad, torch.tensor([[2.0 * (1 - math.tanh(0.3) ** 2), H5 * (1 - t5**2) / 2]]), atol=1e-6)


def test_symmetric_even_levels_by_hand() -> None:
    # L = 4, symmetric: digit = floor(3 (tanh z + 1)/2 + 1/2), code = digit / 1.5 - 1 in {-1, -1/3, 1/3, 1}
    codec = FSQ(dim=2, codebook_size=16, levels=[4, 3], symmetric_even=True).codec
    assert codec.symmetric.tolist() == [True, False]
    # 3 (t + 1)/2 + 1/2 = k  <=>  t = (2k - 1)/3 - 1: boundaries at tanh z = -2/3, 0, 2/3
    b = math.atanh(2 / 3)
    z = torch.tensor([[-b - 1e-3], [-b + 1e-3], [-1e-3], [1e-3], [b - 1e-3], [b + 1e-3]]).expand(-1, 2)
    assert torch.allclose(codec.quantize(z)[:, 0], torch.tensor([-1, -1 / 3, -1 / 3, 1 / 3, 1 / 3, 1.0]))
    levels = codec.indices_to_codes(torch.arange(12))
    assert torch.allclose(levels[:, 0].unique(), torch.tensor([-1, -1 / 3, 1 / 3, 1.0]))
    assert torch.equal(codec.codes_to_indices(levels), torch.arange(12))
    # the default keeps the paper's L = 4 levels -2..1 over 2
    paper = FSQ(dim=2, codebook_size=16, levels=[4, 4]).codec
    assert paper.indices_to_codes(torch.arange(4))[:, 0].tolist() == [-1.0, -0.5, 0.0, 0.5]
