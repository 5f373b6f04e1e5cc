"""Beyond Stationarity's toy-demo claim, checked by running the real ``toy2d-drift`` training (full profile).

Only the methods the claims compare (EMA and NS-VQ) are trained; the vanilla VQ
rows of the suite are a reference the claims do not use. One claim per demo:
NS-VQ ends with fewer dead codes than EMA in every seed.
"""

from __future__ import annotations

import pytest
import torch

from harness.run.lifecycle import RunOptions, run_suite
from harness.suite import load_suite

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("toy2d-drift")]

DEMOS = ("translation", "expansion", "shrink", "split")

# Not reproduced, with the evidence in harness/suites/toy2d-drift.toml and harness/plugins/models/drift2d.py:
# expanding a convex cloud uncovers nothing it covered, so every method (EMA, NS-VQ and
# vanilla VQ) ends with 0 dead codes in every seed and "fewer" cannot hold. The suite marks the
# claim `expect = "not reproduced"`: it is shown as such and does not fail the run, and if it
# starts to hold it is flagged "holds (unexpected)" and fails the run, like a strict xfail.
NOT_REPRODUCED = {"expansion"}


@pytest.fixture(scope="module")
def drift_result(tmp_path_factory):
    # one intra-op thread: 2D batches gain nothing from more, and on a shared machine
    # waiting threads cost far more than they save
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def drift_claims(drift_result):
    return {c.claim.id: c for c in drift_result.claims}


def _run(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('toy2d-drift') / 'mlflow.db'}"
    suite = load_suite("toy2d-drift", "full")
    methods = [f"{q}-{demo}" for demo in DEMOS for q in ("ema", "ns-vq")]
    result = run_suite(suite, methods, RunOptions(tracking_uri=uri, progress=False))
    assert not result.failed, [c.error for c in result.failed]
    return result


@pytest.mark.parametrize("demo", [d for d in DEMOS if d not in NOT_REPRODUCED])
def test_nsvq_keeps_fewer_dead_codes_than_ema(drift_claims, demo):
    claim = drift_claims[f"nsvq-fewer-dead-codes-{demo}"]
    assert claim.n == 3, claim.summary()  # one paired difference per seed
    assert claim.passed, claim.summary() + f"; NS-VQ minus EMA per seed: {claim.values}"


@pytest.mark.parametrize("demo", sorted(NOT_REPRODUCED))
def test_known_not_reproduced_claim_is_shown_and_does_not_fail_the_run(drift_result, drift_claims, demo):
    claim = drift_claims[f"nsvq-fewer-dead-codes-{demo}"]
    assert claim.claim.expect == "not reproduced" and claim.claim.reason
    assert claim.n == 3, claim.summary()
    # a strict xfail: if the finding starts to hold, the status says so and the run fails
    assert claim.status == "not reproduced", claim.summary() + f"; NS-VQ minus EMA per seed: {claim.values}"
    assert claim.held is False and claim.passed is None
    assert claim not in drift_result.failed_claims  # `harness run toy2d-drift` exits 0
