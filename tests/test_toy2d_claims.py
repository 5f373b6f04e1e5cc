"""Liu 2026's claims, checked by running the real ``toy2d`` training (full profile).

The suite is split by codebook size into two xdist groups, so the two halves
train on two workers at once; every claim is checked on the cells it names.
"""

from __future__ import annotations

import pytest

from harness.run.lifecycle import RunOptions, run_suite
from harness.suite import load_suite

pytestmark = pytest.mark.slow

#: the default (full) profile's seeds: every seed must count in every claim
SEEDS = load_suite("toy2d").data["matrix"]["seeds"]


def _run(k: int, tmp_path_factory) -> dict[str, object]:
    uri = f"sqlite:///{tmp_path_factory.mktemp(f'toy2d-k{k}') / 'mlflow.db'}"
    suite = load_suite("toy2d", "full", overrides=[f"matrix.codebook_size=[{k}]"])
    # the claims are about vanilla and drifting VQ: the other methods' cells are not needed here
    result = run_suite(suite, ["vq", "drifting"], RunOptions(tracking_uri=uri, progress=False))
    assert not result.failed, [c.error for c in result.failed]
    return {c.claim.id: c for c in result.claims if c.n}


@pytest.fixture(scope="module")
def k2(tmp_path_factory):
    return _run(2, tmp_path_factory)


@pytest.fixture(scope="module")
def k10(tmp_path_factory):
    return _run(10, tmp_path_factory)


@pytest.mark.xdist_group("toy2d-k10")
def test_vanilla_vq_leaves_most_codes_unused_at_k10(k10):
    claim = k10["vq-k10-most-codes-unused"]
    assert claim.passed, claim.summary()
    assert claim.n == SEEDS


@pytest.mark.xdist_group("toy2d-k10")
def test_drifting_uses_at_least_90_percent_of_codes_at_k10(k10):
    claim = k10["drifting-k10-uses-codes"]
    assert claim.passed, claim.summary()


@pytest.mark.xdist_group("toy2d-k10")
def test_drifting_splits_codes_about_evenly_at_k10(k10):
    claim = k10["drifting-k10-even-split"]
    assert claim.passed, claim.summary()


@pytest.mark.xdist_group("toy2d-k2")
def test_drifting_uses_both_codes_at_k2_in_every_seed(k2):
    claim = k2["drifting-k2-both-codes"]
    assert claim.passed, claim.summary()
    assert claim.n == SEEDS


@pytest.mark.xdist_group("toy2d-k2")
def test_separation_rates_at_k2_are_reported(k2):
    for claim_id in ("vq-k2-separation-rate", "drifting-k2-separation-rate"):
        claim = k2[claim_id]
        assert claim.status == "reported" and claim.n == SEEDS
        assert 0.0 <= claim.observed <= 1.0
