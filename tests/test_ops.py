"""The shared nearest-code search."""

from __future__ import annotations

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
