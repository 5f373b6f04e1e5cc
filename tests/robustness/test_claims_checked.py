"""Claims check something: known non-reproductions are shown, not failed (a strict xfail when they
start to hold), and a claim whose metric no finished cell recorded is an error with file and line."""

from __future__ import annotations

import pytest

from harness.commands.cli import main
from harness.suite import Claim, load_suite
from harness.suite.claims import check_claim
from tests.conftest import TINY_SUITE
from tests.robustness.conftest import suite_runs

RECORDS = [{"key": {"method": "vq", "quantizer": "vq", "codebook_size": 2, "dim": 2, "seed": s},
            "metrics": {"separated": 1.0, "utilization": 1.0}} for s in range(3)]


def claim(**kw) -> Claim:
    base = {"id": "c", "text": "t", "where": {"method": "vq"}, "metric": "separated", "aggregate": "mean",
            "op": "<", "value": 0.5, "source": "suite.toml:7"}
    return Claim(**{**base, **kw})


def test_expected_not_reproduced_is_shown_and_does_not_fail():
    result = check_claim(claim(expect="not reproduced", reason="vq separates"), RECORDS)
    assert result.status == "not reproduced" and result.held is False and result.passed is None
    assert "expected not to reproduce: vq separates" in result.summary()
    assert result.record()["expect"] == "not reproduced" and result.record()["reason"] == "vq separates"


def test_expected_not_reproduced_that_holds_is_flagged_like_a_strict_xfail():
    result = check_claim(claim(op=">", expect="not reproduced", reason="r"), RECORDS)
    assert result.status == "holds (unexpected)" and result.held is True and result.passed is False


def test_plain_claim_outcomes_unchanged():
    assert check_claim(claim(), RECORDS).status == "FAILS"
    assert check_claim(claim(op=">"), RECORDS).status == "holds"
    assert check_claim(claim(where={"method": "other"}), RECORDS).status == "no data"


def test_metric_no_finished_cell_recorded_is_an_error_with_file_and_line():
    result = check_claim(claim(metric="separatd"), RECORDS)
    assert result.status == "ERROR" and result.passed is False
    assert result.error.startswith("suite.toml:7: claim 'c': metric 'separatd' is in none of the 3 finished cells")
    assert "did you mean 'separated'?" in result.error


def suite_with(extra: str, suite_file):
    return suite_file(TINY_SUITE.replace('value = 0.0\n', 'value = 0.0\n' + extra, 1))


@pytest.mark.parametrize("op, rc, status", [("<", 0, "not reproduced"), (">", 1, "holds (unexpected)")])
def test_cli_not_reproduced_claim(op, rc, status, suite_file, workdir, capsys):
    """End to end: the run exits 0 while showing the claim did not reproduce; holding after all fails it."""
    path = suite_file(TINY_SUITE.replace('op = ">"', f'op = "{op}"').replace(
        'value = 0.0\n', 'value = 0.0\nexpect = "not reproduced"\nreason = "known"\n'))
    code = main(["run", str(path), "-q", "drifting", "--seeds", "1", "--set", "train.steps=3", "--no-progress"])
    out = capsys.readouterr().out
    assert code == rc
    assert f"| drifting-uses-codes | {status}" in out
    [parent] = suite_runs(f"sqlite:///{workdir / 'mlflow.db'}")
    assert parent.data.tags["harness.claim.drifting-uses-codes"] == status


def test_cli_claim_on_a_metric_no_cell_has_is_an_error(suite_file, workdir, capsys):
    """``dead_codes/stage1`` passes the load check (``dead_codes`` is computed) but no one-stage cell has it."""
    path = suite_file(TINY_SUITE.replace('metric = "utilization"\naggregate', 'metric = "dead_codes/stage1"\naggregate'))
    line = TINY_SUITE.splitlines().index("[[claims]]") + 1
    code = main(["run", str(path), "-q", "drifting", "--seeds", "1", "--set", "train.steps=3", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert "| drifting-uses-codes | ERROR" in out
    [parent] = suite_runs(f"sqlite:///{workdir / 'mlflow.db'}")
    assert parent.data.tags["harness.claim.drifting-uses-codes"] == "ERROR"
    result = load_suite(str(path)).claims[0]
    assert result.source == f"{path}:{line}"


def test_narrowing_the_matrix_does_not_turn_claims_into_errors():
    suite = load_suite("toy2d", "full", overrides=["matrix.codebook_size=[2]"])
    assert {c.id for c in suite.claims} >= {"vq-k10-most-codes-unused"}  # reported as no data, not an error


@pytest.mark.slow
def test_toy2d_vanilla_vq_at_k2_is_shown_not_reproduced(tmp_path):
    """Liu 2026's vanilla-VQ-at-K=2 finding, on the real toy (smoke profile, vq at K=2 only)."""
    from harness.run.lifecycle import RunOptions, run_suite

    suite = load_suite("toy2d", "smoke", overrides=["matrix.codebook_size=[2]"])
    result = run_suite(suite, ["vq"], RunOptions(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                                 progress=False))
    assert not result.failed
    [vq_k2] = [c for c in result.claims if c.claim.id == "vq-k2-one-code-for-both-clusters"]
    assert vq_k2.status == "not reproduced", vq_k2.summary()
    assert not result.failed_claims  # the run exits 0
