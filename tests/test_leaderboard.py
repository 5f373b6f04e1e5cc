"""Leaderboard aggregation: mean ± std over seeds, n, direction, profiles and versions kept apart."""

from __future__ import annotations

import statistics

import pytest

from harness.errors import HarnessError
from harness.leaderboard import build_leaderboard
from harness.leaderboard.render import to_html, to_markdown
from harness.tracking import Tracker


def record(tracker, method, seed, metrics, *, k=4, profile="full", version=1, status="FINISHED"):
    tags = {"harness.kind": "cell", "harness.method": method, "harness.quantizer": method,
            "harness.codebook_size": str(k), "harness.dim": "2", "harness.seed": str(seed),
            "harness.profile": profile, "harness.suite_version": str(version),
            "harness.group_hash": f"{method}-{k}-{profile}-{version}"}
    run = tracker.start_run("board", f"{method}-K{k}-d2-s{seed}", tags)
    tracker.log_metrics(run, {f"eval/{k_}": v for k_, v in metrics.items()})
    tracker.end_run(run, status)


@pytest.fixture
def tracker(tracking_uri):
    return Tracker(tracking_uri)


def test_rows_average_seeds_and_sort_by_direction(tracker):
    for seed, (mse, util) in enumerate([(0.10, 0.5), (0.20, 0.7)]):
        record(tracker, "a", seed, {"mse": mse, "utilization": util})
    for seed, (mse, util) in enumerate([(0.05, 1.0), (0.07, 0.9), (0.06, 0.8)]):
        record(tracker, "b", seed, {"mse": mse, "utilization": util})
    board = build_leaderboard("board", tracker=tracker, primary="mse")
    assert [r.method for r in board.rows] == ["b", "a"]  # mse: lower is better
    b = board.rows[0]
    assert b.n == 3 and b.metrics["mse"].mean == pytest.approx(0.06)
    assert b.metrics["mse"].std == pytest.approx(statistics.stdev([0.05, 0.07, 0.06]))
    assert board.columns[0] == "mse" and board.higher_is_better["utilization"] is True

    by_util = build_leaderboard("board", tracker=tracker, primary="utilization")
    assert [r.method for r in by_util.rows] == ["b", "a"]
    assert by_util.best("utilization") == pytest.approx(0.9)

    text = to_markdown(board)
    assert "0.06 ± 0.01" in text and "**0.06 ± 0.01**" in text


def test_failed_cells_show_as_failed_never_as_numbers(tracker):
    record(tracker, "ok", 0, {"mse": 0.1})
    record(tracker, "bad", 0, {"mse": 0.0001}, status="FAILED")
    board = build_leaderboard("board", tracker=tracker, primary="mse")
    assert [r.method for r in board.rows] == ["ok", "bad"]
    bad = board.rows[1]
    assert bad.status == "failed" and not bad.metrics
    assert "0.0001" not in to_html(board)


def test_profiles_and_versions_are_never_mixed(tracker):
    record(tracker, "a", 0, {"mse": 1.0}, profile="smoke")
    record(tracker, "a", 0, {"mse": 2.0}, profile="full", version=1)
    record(tracker, "a", 0, {"mse": 3.0}, profile="full", version=2)
    full = build_leaderboard("board", tracker=tracker)
    assert full.rows[0].metrics["mse"].mean == 3.0
    assert full.meta["not_shown"].startswith("profile smoke; full suite version 1")
    assert "profile smoke; full suite version 1" in to_markdown(full)
    smoke = build_leaderboard("board", tracker=tracker, profile="smoke")
    assert (smoke.profile, smoke.rows[0].metrics["mse"].mean) == ("smoke", 1.0)


def test_a_rerun_replaces_instead_of_doubling(tracker):
    record(tracker, "a", 0, {"mse": 1.0})
    record(tracker, "a", 0, {"mse": 0.5})
    row = build_leaderboard("board", tracker=tracker).rows[0]
    assert (row.n, row.metrics["mse"].mean) == (1, 0.5)


def test_reference_rows_are_marked_reported(tracker):
    record(tracker, "a", 0, {"mse": 1.0})
    board = build_leaderboard("board", tracker=tracker, references=[
        {"method": "paper-x", "codebook_size": 8192, "dim": 64, "source": "paper 002, Table 4",
         "metrics": {"mse": 0.1}}])
    assert board.rows[-1].reported and board.rows[-1].status == "reported"
    assert board.best("mse") == 1.0  # reported numbers never win "best measured"
    assert "reported: paper 002, Table 4" in to_markdown(board)


def test_missing_suite_is_a_clear_error(tracker):
    with pytest.raises(HarnessError, match="harness run nothing"):
        build_leaderboard("nothing", tracker=tracker)


def test_regenerate_skips_a_suite_that_is_not_registered(tmp_path, capsys):
    from harness.leaderboard.regenerate import main

    assert main(["no-such-suite", "--skip-run", "--store", str(tmp_path), "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "'no-such-suite' is not registered (yet); skipped" in out and "toy2d" in out
    assert not list(tmp_path.glob("*.html"))


def test_per_stage_metrics_get_their_own_table_and_a_lone_value_is_not_best(tracker):
    record(tracker, "rvq", 0, {"mse": 0.1, "utilization/stage0": 0.25})
    record(tracker, "vq", 0, {"mse": 0.2})
    text = to_markdown(build_leaderboard("board", tracker=tracker, primary="mse"))
    main, stages = text.split("### Per-stage metrics")
    assert "utilization/stage0" not in main and "utilization/stage0 ↑" in stages
    assert "**0.1**" in main  # two rows compared: the lower mse is best
    assert "| 0.25 " in stages and "**0.25**" not in stages  # one row alone wins nothing
    assert "| vq " not in stages
