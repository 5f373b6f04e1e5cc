"""Leaderboard aggregation: mean ± std over seeds, n, direction, profiles and versions kept apart."""

from __future__ import annotations

import json
import math
import re
import statistics
import time

import pytest

from harness.leaderboard import build_leaderboard
from harness.leaderboard.render import to_html, to_markdown
from harness.tracking import Tracker


def record(tracker, method, seed, metrics, *, k=4, profile="full", version=1, status="FINISHED",
           tags=None, params=None, group=None):
    """A hand-made cell run, as the runner records one (``tags`` add or replace harness tags),
    with each metric's direction as the installed plugin gives it, as a real cell records it."""
    from harness.host import get_host

    directions = {m: d for m in metrics if (d := get_host().higher_is_better(m.split("/")[0])) is not None}
    base = {"harness.kind": "cell", "harness.method": method, "harness.quantizer": method,
            "harness.metric_directions": json.dumps(directions),
            "harness.codebook_size": str(k), "harness.dim": "2", "harness.seed": str(seed),
            "harness.profile": profile, "harness.suite_version": str(version),
            "harness.group_hash": group or f"{method}-{k}-{profile}-{version}"}
    time.sleep(0.003)  # distinct start times: "newest" must be well defined
    run = tracker.start_run("board", f"{method}-K{k}-d2-s{seed}", {**base, **(tags or {})})
    if params:
        tracker.log_params(run, params)
    tracker.log_metrics(run, {f"eval/{k_}": v for k_, v in metrics.items()})
    tracker.end_run(run, status)
    return run


def suite_run(tracker, tags=None, params=None):
    """A parent run of ``harness run`` (kind suite), with the tags the runner records."""
    base = {"harness.kind": "suite", "harness.profile": "full", "harness.suite_version": "1"}
    run = tracker.start_run("board", "board-full", {**base, **(tags or {})})
    if params:
        tracker.log_params(run, params)
    tracker.end_run(run)
    return run


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

    text = to_markdown(board)  # mean [95% t-interval]; two seeds of a cannot tell it from b: both bold
    assert "**0.06 [0.03516, 0.08484]**" in text and "**0.15 [-0.4853, 0.7853]**" in text


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
    other = build_leaderboard("board", tracker=tracker, profile="big")
    assert not other.rows and "no 'big' run of suite 'board'" in other.meta["no_runs"]
    assert "(profiles recorded: full, smoke)" in other.meta["no_runs"]


def test_a_rerun_replaces_instead_of_doubling(tracker):
    record(tracker, "a", 0, {"mse": 1.0})
    record(tracker, "a", 0, {"mse": 0.5})
    row = build_leaderboard("board", tracker=tracker).rows[0]
    assert (row.n, row.metrics["mse"].mean) == (1, 0.5)


def test_reference_rows_are_marked_reported(tracker):
    record(tracker, "a", 0, {"mse": 1.0})
    board = build_leaderboard("board", tracker=tracker, references=[
        {"method": "paper-x", "codebook_size": 8192, "dim": 64, "source": "Beyond Stationarity, Table 4",
         "metrics": {"mse": 0.1}}])
    assert board.rows[-1].reported and board.rows[-1].status == "reported"
    assert board.best("mse") == 1.0  # reported numbers never win "best measured"
    assert "reported: Beyond Stationarity, Table 4" in to_markdown(board)


def test_a_suite_without_runs_shows_its_reference_rows_and_says_so(tracker):
    board = build_leaderboard("nothing", tracker=tracker, references=[
        {"method": "paper-x", "codebook_size": 256, "dim": 8, "source": "Beyond Stationarity", "metrics": {"psnr": 20.0}}])
    assert not board.measured and [r.method for r in board.reported] == ["paper-x"]
    assert "`harness run nothing` records them" in board.meta["no_runs"]
    text = to_markdown(board)
    assert "No run recorded yet" in text and "reported: Beyond Stationarity" in text
    assert "No run recorded yet." in to_html(board)


def test_regenerate_skips_a_suite_that_is_not_registered(tmp_path, capsys):
    from harness.commands.regenerate import main

    assert main(["no-such-suite", "--skip-run", "--store", str(tmp_path), "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "'no-such-suite' is not registered (yet); skipped" in out and "toy2d" in out
    assert not list(tmp_path.glob("*.html"))


def test_per_stage_metrics_get_their_own_table_and_a_lone_value_is_not_best(tracker):
    for seed, jitter in enumerate((-0.001, 0.001)):
        record(tracker, "rvq", seed, {"mse": 0.1 + jitter, "utilization/stage0": 0.25 + jitter})
        record(tracker, "vq", seed, {"mse": 0.2 + jitter})
    text = to_markdown(build_leaderboard("board", tracker=tracker, primary="mse"))
    main, stages = text.split("### Per-stage metrics")
    assert "utilization/stage0" not in main and "utilization/stage0 ↑" in stages
    assert "**0.1 [" in main and "**0.2 [" not in main  # two rows compared: the lower mse is best
    assert "| 0.25 [" in stages and "**0.25" not in stages  # one row alone wins nothing
    assert "| vq " not in stages


def rate(bits, tokens=16, pixels=64):
    return {"harness.bits_per_token": str(bits), "harness.tokens_per_item": str(tokens),
            "harness.pixels_per_item": str(pixels)}


def test_rows_are_grouped_by_rate_and_best_is_marked_within_a_group(tracker):
    for seed, jitter in enumerate((-0.001, 0.001)):  # two seeds each: enough to test
        record(tracker, "a", seed, {"mse": 0.10 + jitter}, k=256, tags=rate(8))
        record(tracker, "b", seed, {"mse": 0.20 + jitter}, k=256, tags=rate(8))
        record(tracker, "fsq", seed, {"mse": 0.30 + jitter}, k=256, tags=rate(math.log2(240)))  # within 0.15 bit
        record(tracker, "rvq", seed, {"mse": 0.01 + jitter}, k=256, tags=rate(32))
        record(tracker, "c", seed, {"mse": 0.05 + jitter}, k=256, tags=rate(32))
    board = build_leaderboard("board", tracker=tracker, primary="mse")
    assert [(label, [r.method for r in rows]) for label, rows in board.groups()] == [
        ("7.91–8 bits/token", ["a", "b", "fsq"]), ("32 bits/token", ["rvq", "c"])]
    assert [r.method for r in board.rows] == ["a", "b", "fsq", "rvq", "c"]
    assert board.rows[0].bits_per_pixel == pytest.approx(8 * 16 / 64)

    text = to_markdown(board)
    low, high = text.split("#### 32 bits/token")
    assert "#### 7.91–8 bits/token" in low
    assert "**0.1 [" in low and "**0.2 [" not in low  # best of its own group, though 0.01 is lower
    assert "**0.01 [" in high and "**0.05 [" not in high
    assert re.search(r"\| bits/token +\| bits/pixel +\|", text) and re.search(r"\| a +\| 256 +\| 2 +\| 8 +\| 2 +\|", text)
    page = to_html(board)
    assert page.count('class="best"') == 2
    assert re.search(r'<tr class="group rate"><th colspan="\d+">32 bits/token</th></tr>', page)


def test_older_plugin_code_is_never_averaged_in(tracker):
    old, new = "a" * 64, "b" * 64
    record(tracker, "vq", 0, {"mse": 1.0}, tags={"harness.plugin_digest": old})
    record(tracker, "vq", 1, {"mse": 1.2}, tags={"harness.plugin_digest": old})
    record(tracker, "vq", 0, {"mse": 0.5}, tags={"harness.plugin_digest": new})
    board = build_leaderboard("board", tracker=tracker, primary="mse")
    [row] = board.rows
    assert (row.n, row.metrics["mse"].mean, row.left_out, row.digest) == (1, 0.5, 2, new)
    assert board.meta["older_digests"].startswith("2 cell(s) made by older plugin code left out of 1 row")
    text = to_markdown(board)
    assert "`bbbbbbbbbbbb`" in text and "2 older-code cell(s) left out" in text
    assert "older plugin code: `2 cell(s)" in text
    assert board.meta["cells"] == "1"  # the cells the page stands on


def test_one_method_with_different_params_gives_labelled_rows(tracker):
    common = {"quantizer.name": "vq", "train.lr": "0.01"}
    record(tracker, "vq", 0, {"mse": 0.1}, group="g1", params={**common, "quantizer.beta": "0.25"})
    record(tracker, "vq", 0, {"mse": 0.2}, group="g2", params={**common, "quantizer.beta": "0.5"})
    record(tracker, "ema", 0, {"mse": 0.3}, params=common)
    board = build_leaderboard("board", tracker=tracker, primary="mse")
    assert [r.label for r in board.rows] == ["vq [quantizer.beta=0.25]", "vq [quantizer.beta=0.5]", "ema"]
    text = to_markdown(board)
    assert "| vq [quantizer.beta=0.25] |" in text and "| vq [quantizer.beta=0.5]  |" in text


def test_interrupted_killed_and_nan_cells_are_never_ok(tracker):
    record(tracker, "intr", 0, {"mse": 0.1})
    record(tracker, "intr", 1, {}, status="KILLED",
           tags={"harness.checkpoint_step": "300", "harness.checkpoint": "/x/ckpt.pt"})
    record(tracker, "dead", 0, {"mse": 0.1})
    record(tracker, "dead", 1, {}, status="KILLED")
    record(tracker, "nan", 0, {"mse": float("nan"), "psnr": 20.0})
    record(tracker, "nan", 1, {"mse": 0.05, "psnr": 21.0})
    record(tracker, "allnan", 0, {"mse": float("nan"), "psnr": 19.0})
    record(tracker, "stopped", 0, {}, status="KILLED", tags={"harness.checkpoint_step": "10"})
    record(tracker, "stopped", 1, {}, status="KILLED", tags={"harness.checkpoint_step": "20"})
    suite_run(tracker, params={"suite.path": "/work/my-suite.toml"})
    board = build_leaderboard("board", tracker=tracker, primary="mse")
    rows = {r.method: r for r in board.rows}
    assert {m: r.status for m, r in rows.items()} == {**{m: "partial" for m in rows}, "stopped": "interrupted"}
    assert '<tr class="interrupted" data-method="stopped">' in to_html(board)
    resume = f"harness run /work/my-suite.toml --profile full --resume --tracking-uri {tracker.uri}"
    assert board.meta["resume"] == resume
    text = to_markdown(board)
    intr = next(line for line in text.splitlines() if line.startswith("| intr "))
    assert f"1 interrupted at step 300: resume with `{resume}` (of 2 seeds)" in intr
    dead = next(line for line in text.splitlines() if line.startswith("| dead "))
    assert "1 killed (never resumed) (of 2 seeds)" in dead and "| ok " not in dead
    nan = next(line for line in text.splitlines() if line.startswith("| nan "))
    assert "0.05 (n=1: no interval) (NaN in 1)" in nan and "mse NaN in 1 (of 2 seeds)" in nan
    assert "**0.05" not in nan  # a value with NaN seeds never wins
    allnan = next(line for line in text.splitlines() if line.startswith("| allnan "))
    assert "| NaN " in allnan and rows["allnan"].n == 1
    assert 'class="nan">NaN</td>' in to_html(board)
    from harness.leaderboard.render import to_csv

    csv_text = to_csv(board)
    assert "0:ok 1:interrupted" in csv_text and "0:ok 1:killed" in csv_text


def test_primary_metric_and_directions_are_read_from_the_run(tracker):
    suite_run(tracker, {"harness.primary_metric": "utilization",
                        "harness.metric_directions": json.dumps({"mse": True, "utilization": True})})
    record(tracker, "a", 0, {"mse": 0.1, "utilization": 0.5})
    record(tracker, "b", 0, {"mse": 0.2, "utilization": 0.9})
    board = build_leaderboard("board", tracker=tracker, default_primary="mse")
    assert board.primary == "utilization" and [r.method for r in board.rows] == ["b", "a"]
    assert board.higher_is_better["mse"] is True  # as recorded, whatever the installed plugin says
    forced = build_leaderboard("board", tracker=tracker, primary="mse")
    assert forced.primary == "mse" and [r.method for r in forced.rows] == ["b", "a"]


def test_metric_stacks_are_in_the_header_and_mixed_ones_are_flagged(tracker):
    record(tracker, "a", 0, {"psnr": 20.0}, tags={"harness.metric_stack.psnr": "stack-1"})
    record(tracker, "a", 1, {"psnr": 21.0}, tags={"harness.metric_stack.psnr": "stack-2"})
    record(tracker, "b", 0, {"psnr": 22.0, "mse": 0.1},
           tags={"harness.metric_stack.psnr": "stack-1", "harness.metric_stack.mse": "mse-stack"})
    board = build_leaderboard("board", tracker=tracker, primary="psnr")
    text = to_markdown(board)
    assert "- `mse`: mse-stack" in text
    assert "- `psnr`: MIXED, 2 stacks: stack-1 (2 cells); stack-2 (1 cells)" in text
    assert '<dd class="warn">MIXED, 2 stacks' in to_html(board)


def test_pareto_front_keeps_only_points_no_cheaper_point_beats():
    from harness.leaderboard.figures import pareto_front

    points = [(8, 20.0), (8, 22.0), (10, 21.0), (10, 23.0), (12, 22.5), (12, 24.0)]
    assert pareto_front(points, higher_is_better=True) == [(8, 22.0), (10, 23.0), (12, 24.0)]
    assert pareto_front([(1, 0.5), (2, 0.6), (3, 0.1)], higher_is_better=False) == [(1, 0.5), (3, 0.1)]


SUITE_WITH_REFERENCE = """
[suite]
name = "board"
version = 1
primary_metric = "utilization"
[dataset]
name = "two-clusters"
[model]
name = "linear2d"
[train]
steps = 2
batch_size = 8
lr = 1e-2
[eval]
metrics = ["mse", "utilization"]
[methods.vq]
quantizer = "vq"
[matrix]
codebook_size = [4]
dim = [2]
seeds = 1
[[reference]]
method = "paper-x"
codebook_size = 4
dim = 2
source = "Liu 2026, figure 2"
metrics = { utilization = 1.0 }
"""


def test_the_command_only_reads_and_a_file_suite_ranks_by_its_own_primary(suite_file, workdir, capsys):
    from harness.commands.cli import main

    path = suite_file(SUITE_WITH_REFERENCE, "board.toml")
    store = workdir / "store" / "mlflow.db"
    uri = f"sqlite:///{store}"
    assert main(["leaderboard", str(path), "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "No run recorded yet" in out and "reported: Liu 2026, figure 2" in out
    assert not store.exists() and not (workdir / "mlflow.db").exists()  # reading created nothing

    assert main(["leaderboard", "toy2e", "--tracking-uri", uri]) == 2
    assert "did you mean 'toy2d'" in capsys.readouterr().err

    tracker = Tracker(uri)
    suite_run(tracker, {"harness.primary_metric": "mse"})
    record(tracker, "a", 0, {"mse": 0.1, "utilization": 0.5})
    record(tracker, "b", 0, {"mse": 0.2, "utilization": 0.9})
    kind = "tags.`harness.kind` = 'leaderboard'"
    assert main(["leaderboard", str(path), "--tracking-uri", uri, "--format", "csv"]) == 0
    assert [line.split(",")[0] for line in capsys.readouterr().out.splitlines()[1:3]] == ["b", "a"]
    assert main(["leaderboard", "board", "--tracking-uri", uri, "--format", "csv"]) == 0
    assert [line.split(",")[0] for line in capsys.readouterr().out.splitlines()[1:3]] == ["a", "b"]
    assert tracker.runs("board", kind) == []  # read twice, recorded nothing
    assert main(["leaderboard", "board", "--tracking-uri", uri, "--log"]) == 0
    assert len(tracker.runs("board", kind)) == 1
