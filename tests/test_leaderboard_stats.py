"""Leaderboard statistics: interval coverage, tie sets, P(X > Y), seeds needed, mean ranks.

The simulations use fixed random seeds, so each test gives the same answer on
every run; the tolerances are several standard errors of the simulated rate,
and each check is shown to fail when the statistic under it is broken.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from harness.leaderboard import stats
from harness.leaderboard.build import build_leaderboard
from harness.leaderboard.render import to_csv, to_html, to_json, to_markdown
from harness.tracking import Tracker
from tests.test_leaderboard import record

#: |simulated coverage - 95%| allowed over 4000 seed sets (the standard error is 0.0034)
COVERAGE_TOLERANCE = 0.015
#: share of rows wrongly left out of the tie set when all rows are equal: at most alpha / 2
#: in theory (only the "better" side of each two-sided test excludes), plus simulation noise
FALSE_EXCLUSION_LIMIT = stats.ALPHA / 2 + 0.01


def coverage(n: int, sims: int = 4000, seed: int = 0) -> float:
    """The share of simulated seed sets (normal, true mean 3) whose interval holds the truth."""
    values = np.random.default_rng(seed).normal(3.0, 2.0, size=(sims, n))
    low, high = stats.t_interval(values.mean(axis=1), values.std(axis=1, ddof=1), n)
    return float(np.mean((low <= 3.0) & (high >= 3.0)))


def coverage_ok(n: int) -> bool:
    return abs(coverage(n) - stats.CONFIDENCE) <= COVERAGE_TOLERANCE


def false_exclusions(k: int = 8, n: int = 3, sims: int = 600, seed: int = 1) -> float:
    """Rows drawn from one distribution: the share left out of the tie set (each one is a best)."""
    rng = np.random.default_rng(seed)
    out = 0
    for _ in range(sims):
        values = rng.normal(0.0, 1.0, size=(k, n))
        out += int(np.sum(~stats.tied_with_best(values.mean(1), values.std(1, ddof=1), [n] * k)))
    return out / (sims * k)


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_the_interval_covers_the_true_mean_95_percent_of_the_time(n):
    assert coverage_ok(n), coverage(n)


def test_the_coverage_check_catches_an_interval_that_is_too_narrow(monkeypatch):
    # the normal quantile instead of Student's t: right for many seeds, too narrow for few
    monkeypatch.setattr(stats, "critical_value", lambda n, confidence=0.95: sps.norm.ppf(0.5 + confidence / 2))
    assert not coverage_ok(3) and coverage(3) < 0.9


def test_one_seed_has_no_interval_and_says_so():
    assert stats.t_interval(1.0, 0.0, 1) is None
    text = stats.interval_text(type("S", (), {"mean": 25.32, "std": 0.0, "n": 1})())
    assert text == "25.32 (n=1: no interval)" and "±" not in text


def test_equal_rows_are_tied_and_the_holm_correction_keeps_false_exclusions_rare():
    assert false_exclusions() <= FALSE_EXCLUSION_LIMIT


def test_the_false_tie_check_catches_a_test_without_the_correction(monkeypatch):
    monkeypatch.setattr(stats, "holm", lambda p: p)
    assert false_exclusions() > FALSE_EXCLUSION_LIMIT


def test_rows_far_apart_are_not_tied_and_a_zero_spread_is_exact():
    assert list(stats.tied_with_best([10.0, 5.0, 9.9], [0.1, 0.1, 0.1], [3, 3, 3])) == [True, False, True]
    assert list(stats.tied_with_best([1.0, 2.0], [0.0, 0.0], [2, 2], higher=False)) == [True, False]
    assert list(stats.tied_with_best([1.0, 1.0], [0.0, 0.0], [2, 2])) == [True, True]


def test_the_welch_matrix_is_scipys_welch_test():
    rng = np.random.default_rng(2)
    means, stds, ns = rng.normal(size=4), rng.uniform(0.5, 2, 4), np.array([2, 3, 5, 4])
    p = stats.welch_matrix(means, stds, ns)
    for i in range(4):
        for j in range(4):
            if i != j:
                want = sps.ttest_ind_from_stats(means[i], stds[i], ns[i], means[j], stds[j], ns[j],
                                                equal_var=False).pvalue
                assert p[i, j] == pytest.approx(want, rel=1e-9)


def test_holm_adjusts_step_down():
    assert list(stats.holm(np.array([0.01, 0.04, 0.03, 0.2]))) == pytest.approx([0.04, 0.09, 0.09, 0.2])


def test_probability_of_improvement_counts_seed_pairs_and_ties_half():
    assert stats.prob_improvement([1, 2, 3], [2, 2, 0]) == pytest.approx(6 / 9)
    assert stats.prob_improvement([1, 2, 3], [2, 2, 0], higher=False) == pytest.approx(3 / 9)
    x, y = np.random.default_rng(4).normal(size=5), np.random.default_rng(5).normal(size=3)
    u = sps.mannwhitneyu(x, y).statistic  # scipy's U: the same count
    assert stats.prob_improvement(x, y) == pytest.approx(u / 15)


def test_seeds_needed_gives_the_power_it_promises():
    n = stats.seeds_needed(1.0, 1.0, 1.0)
    normal_approx = 2 * (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) ** 2
    assert abs(n - normal_approx) <= 2  # 17 vs 15.7: the t test needs a seed or two more
    rng = np.random.default_rng(3)
    x, y = rng.normal(1.0, 1.0, size=(4000, n)), rng.normal(0.0, 1.0, size=(4000, n))
    power = np.mean(sps.ttest_ind(x, y, axis=1, equal_var=False).pvalue <= stats.ALPHA)
    assert abs(power - stats.POWER) <= 0.03
    x, y = rng.normal(1.0, 1.0, size=(4000, n - 3)), rng.normal(0.0, 1.0, size=(4000, n - 3))
    assert np.mean(sps.ttest_ind(x, y, axis=1, equal_var=False).pvalue <= stats.ALPHA) < stats.POWER
    assert stats.seeds_needed(0.0, 1.0, 1.0) is None and stats.seeds_needed(0.001, 1.0, 1.0) is None


def test_mean_ranks_and_their_bootstrap_interval():
    tasks = [({"a": [3.0, 3.1, 2.9], "b": [2.0, 2.1, 1.9], "c": [1.0, 1.1, 0.9]}, True),
             ({"a": [0.1, 0.11], "b": [0.5, 0.52], "c": [0.3, 0.31]}, False)]
    ranks = stats.mean_ranks(tasks)
    assert list(ranks) == ["a", "b", "c"]  # best first
    assert ranks["a"][:3] == pytest.approx((1.0, 1.0, 1.0)) and ranks["a"][3] == 2
    assert ranks["b"][0] == pytest.approx(2.5) and ranks["c"][0] == pytest.approx(2.5)
    noisy = stats.mean_ranks([({"a": [1.0, 3.0], "b": [2.0, 2.1]}, True)])
    assert noisy["a"][0] == 2 and noisy["a"][1:3] == (1, 2)  # overlapping seeds: either rank
    profile = stats.performance_profile(tasks)
    assert profile["a"][-1] == pytest.approx((2 / 3 + 1 / 2) / 2)  # seeds at or above the best mean
    assert profile["c"][0] == pytest.approx((2 / 3 + 1) / 2)  # seeds at or above the worst mean


# -- synthetic stores: real MLflow runs, the whole board ---------------------------------------

@pytest.fixture
def tracker(tracking_uri):
    return Tracker(tracking_uri)


def store_rows(tracker, rows: dict[str, list[float]]) -> None:
    for method, values in rows.items():
        for seed, value in enumerate(values):
            record(tracker, method, seed, {"psnr": value})


def test_two_methods_from_one_distribution_are_reported_tied(tracker):
    rng = np.random.default_rng(5)
    store_rows(tracker, {"a": list(rng.normal(22.0, 0.5, 4)), "b": list(rng.normal(22.0, 0.5, 4))})
    board = build_leaderboard("board", tracker=tracker, primary="psnr")
    a, b = board.rows
    assert stats.board_stats(board).tied(a, "psnr") and stats.board_stats(board).tied(b, "psnr")
    text = to_markdown(board)
    assert text.count("**") == 4  # both bold: neither number is "the best"
    assert "Tied with the best on `psnr`" in text and ("a, b" in text or "b, a" in text)
    assert "seeds per row would separate" in text


def test_two_methods_many_deviations_apart_are_not_tied(tracker):
    store_rows(tracker, {"a": [25.0, 25.1, 24.9], "b": [20.0, 20.1, 19.9], "c": [24.9, 25.0, 25.05]})
    board = build_leaderboard("board", tracker=tracker, primary="psnr")
    by = {r.method: r for r in board.rows}
    bs = stats.board_stats(board)
    assert (bs.tied(by["a"], "psnr"), bs.tied(by["c"], "psnr"), bs.tied(by["b"], "psnr")) == (True, True, False)
    group = bs.group(by["a"], "psnr")
    assert group.pair == (by["a"], by["c"]) and not group.separated
    assert "**" not in [line for line in to_markdown(board).splitlines() if line.startswith("| b ")][0]


def test_a_single_seed_row_is_untested_and_never_bold(tracker):
    store_rows(tracker, {"a": [25.0, 25.1], "b": [20.0, 20.2], "lone": [30.0]})
    board = build_leaderboard("board", tracker=tracker, primary="psnr")
    lone = next(r for r in board.rows if r.method == "lone")
    assert stats.board_stats(board).tied(lone, "psnr") is None
    text = to_markdown(board)
    assert "30 (n=1: no interval)" in text and "**30" not in text
    assert "Too few seeds to test (n < 2): lone." in text


def test_every_renderer_carries_the_interval_and_the_tie_set(tracker):
    store_rows(tracker, {"a": [25.0, 25.1, 24.9], "b": [20.0, 20.1, 19.9], "lone": [1.0]})
    board = build_leaderboard("board", tracker=tracker, primary="psnr")
    low, high = stats.t_interval(25.0, 0.1, 3)
    lines = to_csv(board).splitlines()
    head = lines[0].split(",")
    for column in ("psnr_ci_low", "psnr_ci_high", "psnr_tied_with_best"):
        assert column in head
    row_a = dict(zip(head, next(line for line in lines[1:] if line.startswith("a,")).split(","), strict=True))
    assert float(row_a["psnr_ci_low"]) == pytest.approx(low, rel=1e-5) and row_a["psnr_tied_with_best"] == "yes"
    row_b = dict(zip(head, next(line for line in lines[1:] if line.startswith("b,")).split(","), strict=True))
    assert row_b["psnr_tied_with_best"] == "no"
    row_lone = dict(zip(head, next(line for line in lines[1:] if line.startswith("lone,")).split(","),
                        strict=True))
    assert row_lone["psnr_ci_low"] == "" and row_lone["psnr_tied_with_best"] == "untested (n=1)"

    import json

    data = json.loads(to_json(board))
    a = next(r for r in data["rows"] if r["method"] == "a")
    assert a["metrics"]["psnr"]["ci_low"] == pytest.approx(low) and a["metrics"]["psnr"]["ci_high"] == pytest.approx(high)
    assert a["metrics"]["psnr"]["tied_with_best"] is True
    group = data["groups"][0]["columns"]["psnr"]
    assert group["tied_with_best"] == ["a"] and group["top_pair"] == ["a", "b"]
    assert group["p_improvement"] == 1.0 and data["statistics"]["library"] == "scipy"

    page = to_html(board)
    assert "P(a &gt; b) = 1.00" in page and "scipy" in page and "mean rank" in page
    assert page.count('class="best"') == 1


def test_the_command_prints_interval_and_tie_columns_as_csv_and_json(tracker, capsys):
    import csv
    import io
    import json

    from harness.commands.cli import main

    store_rows(tracker, {"a": [25.0, 25.1, 24.9], "b": [20.0, 20.1, 19.9]})
    assert main(["leaderboard", "board", "--tracking-uri", tracker.uri, "--format", "csv"]) == 0
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert rows["a"]["psnr_tied_with_best"] == "yes" and rows["b"]["psnr_tied_with_best"] == "no"
    assert float(rows["b"]["psnr_ci_low"]) < 20.0 < float(rows["b"]["psnr_ci_high"])
    assert main(["leaderboard", "board", "--tracking-uri", tracker.uri, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["groups"][0]["columns"]["psnr"]["tied_with_best"] == ["a"]


def _board(suite: str, values: dict[str, list[float]], higher: bool = True):
    """A board made by hand (no store): one rate group, one column."""
    from harness.leaderboard.build import Leaderboard
    from harness.leaderboard.rows import Row, Stat

    rows = []
    for method, vals in values.items():
        row = Row(method, method, 256, 8, n=len(vals), bits_per_token=8.0)
        row.seed_metrics = {s: {"m": v} for s, v in enumerate(vals)}
        row.metrics["m"] = Stat(float(np.mean(vals)), float(np.std(vals, ddof=1)), len(vals))
        rows.append(row)
    return Leaderboard(suite, "full", 1, "m", ["m"], {"m": higher}, rows)


def test_mean_ranks_combine_the_rate_groups_of_several_suites():
    one = _board("one", {"a": [3.0, 3.1], "b": [1.0, 1.1]})
    two = _board("two", {"a": [0.5, 0.6], "b": [0.1, 0.2]}, higher=False)  # lower is better: b wins
    ranks = stats.mean_ranks(stats.rank_tasks([one, two]))
    assert ranks["a"][0] == ranks["b"][0] == 1.5 and ranks["a"][3] == ranks["b"][3] == 2
    assert stats.mean_ranks(stats.rank_tasks([one]))["a"][0] == 1.0


def test_the_distribution_functions_are_scipy_stats_own():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 5, size=(300, 7)).astype(float)  # many ties
    assert np.allclose(stats.average_ranks(x), sps.rankdata(x, axis=1))
    y = rng.normal(size=(50, 9))  # no ties
    assert np.allclose(stats.average_ranks(y), sps.rankdata(y, axis=1))
    for n in (2, 3, 7, 50):
        assert stats.critical_value(n) == pytest.approx(sps.t.ppf(0.975, n - 1))
    ns = np.arange(2, 60.0)
    dof = (ns - 1) * (1.0 + 0.25) ** 2 / (1.0 + 0.0625)
    crit, nc = sps.t.ppf(1 - 0.01 / 2, dof), 0.7 / np.sqrt(1.25 / ns)
    want = sps.nct.sf(crit, dof, nc) + sps.nct.cdf(-crit, dof, nc)
    assert np.allclose(stats.welch_power(0.7, 1.0, 0.5, ns, 0.01), want, atol=1e-9)
