"""The shared nearest-code search."""

from __future__ import annotations

import pytest
import torch

from harness.ops import nearest_code, squared_distances


def test_nearest_code_matches_brute_force_across_chunks():
    g = torch.Generator().manual_seed(0)
    z, codes = torch.randn(1000, 16, generator=g), torch.randn(300, 16, generator=g)
    expected = torch.cdist(z, codes).argmin(1)
    # a tiny block forces many chunks (and a ragged last one)
    got, dist = nearest_code(z, codes, max_block_bytes=300 * 4 * 7, return_distances=True)
    assert torch.equal(got, expected)
    assert got.dtype == torch.int64
    torch.testing.assert_close(dist, ((z - codes[expected]) ** 2).sum(1), rtol=1e-4, atol=1e-4)


def test_squared_distances_are_nonnegative_and_exact_on_codes():
    codes = torch.randn(10, 4)
    d = squared_distances(codes, codes)
    assert (d >= 0).all()
    torch.testing.assert_close(d.diagonal(), torch.zeros(10), atol=1e-5, rtol=0)


def test_nearest_code_runs_in_float32_for_bf16_input():
    z = torch.randn(64, 8).bfloat16()
    codes = torch.randn(32, 8)
    assert nearest_code(z, codes).shape == (64,)


def _offset_cloud(offset: float, n: int = 4000, k: int = 256, d: int = 16, spread: float = 0.1):
    g = torch.Generator().manual_seed(int(offset) + 1)
    codes = offset + spread * torch.randn(k, d, generator=g)
    z = offset + spread * torch.randn(n, d, generator=g)
    exact = torch.cdist(z.double(), codes.double())
    return z, codes, exact


@pytest.mark.parametrize("offset", [0.0, 10.0, 100.0, 1000.0])
def test_nearest_code_is_exact_under_a_shared_offset(offset: float) -> None:
    """Uncentred, ``||c||^2 - 2 z.c`` in float32 picked 0.7% wrong at offset 10 and 56% at offset 100."""
    z, codes, exact = _offset_cloud(offset)
    # a small block: several chunks, each centred on the same point
    got, dist = nearest_code(z, codes, max_block_bytes=256 * 4 * 700, return_distances=True)
    wrong = int((got != exact.argmin(1)).sum())
    assert wrong == 0, f"{wrong} wrong picks of {z.shape[0]} at offset {offset}"
    # the squared distances are exact to float32 rounding of the inputs' spread, not of the offset
    torch.testing.assert_close(dist.double(), exact.min(1).values ** 2, rtol=1e-4, atol=1e-6)
    wrong_full = int((squared_distances(z, codes).argmin(1) != exact.argmin(1)).sum())
    assert wrong_full == 0, f"squared_distances: {wrong_full} wrong picks at offset {offset}"


def test_squared_distances_gradient_is_unchanged_by_centring() -> None:
    g = torch.Generator().manual_seed(3)
    z = (50 + torch.randn(30, 4, generator=g)).requires_grad_(True)
    codes = (50 + torch.randn(7, 4, generator=g)).requires_grad_(True)
    weights = torch.randn(30, 7, generator=g)
    (squared_distances(z, codes) * weights).sum().backward()
    z64, c64 = z.detach().double(), codes.detach().double()
    diff = z64[:, None, :] - c64[None, :, :]  # (N, K, D)
    torch.testing.assert_close(z.grad.double(), 2 * (weights.double()[..., None] * diff).sum(1), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(codes.grad.double(), -2 * (weights.double()[..., None] * diff).sum(0),
                               rtol=1e-4, atol=1e-3)


def test_far_away_codes_do_not_cost_precision() -> None:
    """Unused codes an EMA pushed out (|c| ~ 1e4, as vector-quantize-pytorch's zero-count codes go)
    must not spoil the search among the codes near the tokens: a codebook-mean centre would."""
    g = torch.Generator().manual_seed(5)
    near = 0.3 * torch.randn(16, 8, generator=g)
    far = 7000.0 * torch.randn(48, 8, generator=g)
    codes = torch.cat([near, far])
    z = 0.3 * torch.randn(2000, 8, generator=g)
    exact = torch.cdist(z.double(), codes.double()).argmin(1)
    assert int((nearest_code(z, codes) != exact).sum()) == 0
    assert int((squared_distances(z, codes).argmin(1) != exact).sum()) == 0
