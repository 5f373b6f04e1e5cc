"""Each quantizer's rate: bits one token's indices carry (issue 14, rate on the leaderboard)."""

from __future__ import annotations

import math

import pytest

from harness.host import get_host


@pytest.mark.parametrize(("name", "codebook_size", "params", "bits"), [
    ("vq", 1024, {}, 10.0),
    ("rotation", 256, {}, 8.0),
    ("rotation", 256, {"cosine": True}, 8.0),
    ("cvq", 512, {}, 9.0),
    ("cvq", 512, {"anchor": "random", "contrastive": True}, 9.0),
    ("optvq", 4, {}, 8.0),  # the authors' 4 heads x 2 bits (digits' optvq-heads4 at 8 bits)
    ("optvq", 256, {"heads": 1}, 8.0),
    ("sqvae", 512, {}, 9.0),
    ("fsq", 1024, {}, math.log2(8 * 5 * 5 * 5)),  # the paper's 2^10 levels: 1000 codes
    ("fsq", 100, {"levels": [2, 5]}, math.log2(10)),
    ("lfq", 256, {}, 8.0),
    ("residual-vq", 16, {"stages": 2}, 8.0),  # 2 stages x 4 bits
    ("residual-fsq", 32, {"stages": 2}, 10.0),  # 2 stages of levels [8, 4]
    ("residual-fsq", 256, {"stages": 2}, 2 * math.log2(8 * 6 * 5)),
    ("residual-lfq", 64, {"stages": 2}, 12.0),
    ("grouped-residual-vq", 8, {"groups": 2, "stages": 2}, 12.0),  # 4 codebooks x 3 bits
    ("qlae", 4096, {}, math.log2(7 * 5 * 5 * 5 * 5)),  # FSQ's 2^12 grid: 4375 codes
    ("best-rq", 1024, {}, 10.0),
])
def test_bits_per_token(name: str, codebook_size: int, params: dict, bits: float) -> None:
    q = get_host().quantizers.get(name).obj(dim=4, codebook_size=codebook_size, **params)
    assert q.bits_per_token == pytest.approx(bits)
