"""The page's parts from a real tiny run: claims, inline plots, and its own `leaderboard` run."""

from __future__ import annotations

import base64
import dataclasses
import re
import statistics
from pathlib import Path

import pytest

from harness.commands.cli import main
from harness.leaderboard.build import build_leaderboard
from harness.leaderboard.claims import latest_claims
from harness.leaderboard.figures import mean_curve, metric_vs_codebook_size
from harness.leaderboard.page import ARTIFACTS
from harness.leaderboard.render import to_csv, to_html, to_markdown
from harness.tracking import Tracker
from tests.leaderboard_page.conftest import MEASURED

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("leaderboard_page")]
PNG = b"\x89PNG\r\n\x1a\n"


def test_claims_of_the_suite_run_are_on_the_page(page):
    assert page.claims is not None and page.claims.run_name == "lbpage-full"
    assert [(c.id, c.status, c.n) for c in page.claims.claims] == [
        ("drifting-uses-codes", "holds", 4), ("vq-separation-rate", "reported", 4)]
    text = to_markdown(page)
    assert "### Claims" in text
    assert re.search(r"\| drifting-uses-codes +\| holds +\|", text)
    assert re.search(r"\| vq-separation-rate +\| reported +\|", text)
    assert '<table id="claims">' in to_html(page) and '<td class="text holds">holds</td>' in to_html(page)


def test_claims_fall_back_to_tags_and_skip_other_profiles(recorded):
    tracker = Tracker(recorded.uri)
    tags = {"harness.kind": "suite", "harness.profile": "full", "harness.suite_version": "3"}
    old = tracker.start_run("lbtags", "old", {**tags, "harness.claim.a": "FAILS"})
    tracker.log_metrics(old, {"claim/a": 0.25})
    tracker.end_run(old, "FAILED")
    smoke = tracker.start_run("lbtags", "smoke", {**tags, "harness.profile": "smoke", "harness.claim.a": "holds"})
    tracker.end_run(smoke)
    tracker.start_run("lbtags", "still-running", {**tags, "harness.claim.a": "holds"})

    claims = latest_claims(tracker, "lbtags", "full", 3)
    assert claims.run_name == "old"
    assert [(c.id, c.status, c.observed) for c in claims.claims] == [("a", "FAILS", 0.25)]
    assert latest_claims(tracker, "lbtags", "full", 2) is None


def test_plots_are_inline_pngs_and_nothing_is_fetched(page):
    ids = {f.id for f in page.figures}
    assert ids == {"rate-distortion", "utilization", "metric-vs-k", "performance-profile",
                   *(f"latent-{m}-K{k}-d2" for m, k in MEASURED)}
    page_html = to_html(page)
    sources = re.findall(r'(?:src|href)="([^"]*)"', page_html)
    assert len(sources) == len(page.figures)
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == PNG
    assert not re.search(r"https?://|url\(|<script|<link", page_html)
    assert "data:" not in to_markdown(page)


def test_metric_against_k_needs_several_sizes(page):
    one_size = dataclasses.replace(page, rows=[r for r in page.rows if r.codebook_size == 2])
    assert metric_vs_codebook_size(one_size, ["utilization"]) is None
    assert metric_vs_codebook_size(page, ["utilization", "not-a-metric"]) is not None


def test_curves_average_seeds_on_the_steps_all_logged():
    steps, means, stds = mean_curve([[(0, 0.5), (10, 1.0)], [(0, 1.0), (10, 0.5), (20, 1.0)]])
    assert steps == [0, 10] and means == [0.75, 0.75]
    assert stds == pytest.approx([statistics.stdev([0.5, 1.0])] * 2)


def test_failed_cells_and_reported_rows_on_every_form(page):
    broken = [r for r in page.rows if r.method == "broken"]
    assert {r.codebook_size for r in broken} == {2, 4} and all(r.n == 0 and r.failed == 2 for r in broken)
    assert page.meta["cells"] == "12" and page.meta["failed_cells"] == "4"
    html_text = to_html(page)
    assert html_text.count('<td class="failed">failed</td>') == 2 * len(page.columns)
    assert "reported: Liu 2026, figure 2" in html_text and "reported: Liu 2026, figure 2" in to_markdown(page)
    csv_lines = to_csv(page).splitlines()
    assert csv_lines[0].startswith("method,quantizer,codebook_size,dim,n,failed,status,source")
    assert sum(line.startswith("broken,") and ",failed," in line for line in csv_lines) == 2


def test_the_command_logs_a_leaderboard_run_that_is_not_a_cell(recorded, tmp_path, capsys):
    tracker = Tracker(recorded.uri)
    before = build_leaderboard("lbpage", tracker=tracker)
    kind = "tags.`harness.kind` = 'leaderboard'"
    count = len(tracker.runs("lbpage", kind))
    output = tmp_path / "page.html"
    args = ["leaderboard", str(recorded.suite_path), "--tracking-uri", recorded.uri]
    assert main([*args, "--format", "html", "--output", str(output)]) == 0  # reading logs nothing
    assert len(tracker.runs("lbpage", kind)) == count
    assert main([*args, "--format", "html", "--output", str(output), "--log"]) == 0
    assert "harness.kind = leaderboard" in capsys.readouterr().err

    runs = tracker.runs("lbpage", kind)
    assert len(runs) == count + 1
    run = max(runs, key=lambda r: r.info.start_time)
    assert run.info.status == "FINISHED" and run.data.tags["harness.profile"] == "full"
    names = {a.path for a in tracker.client.list_artifacts(run.info.run_id)}
    assert names == set(ARTIFACTS.values())
    logged = Path(tracker.client.download_artifacts(run.info.run_id, ARTIFACTS["html"], str(tmp_path / "a")))
    assert logged.read_text(encoding="utf-8") == output.read_text(encoding="utf-8")

    after = build_leaderboard("lbpage", tracker=tracker)
    assert [(r.method, r.codebook_size, r.n, r.failed) for r in after.rows] == \
           [(r.method, r.codebook_size, r.n, r.failed) for r in before.rows]
    assert after.meta["cells"] == before.meta["cells"] == "12"

    assert main(args) == 0
    assert "| drifting" in capsys.readouterr().out
    assert len(tracker.runs("lbpage", kind)) == count + 1


def test_claims_are_rechecked_over_all_cells_after_a_sharded_run(page, recorded):
    from harness.leaderboard.claims import recheck
    from harness.suite import load_suite

    shard = dataclasses.replace(page.claims, shard="1/2")
    again = recheck(page, load_suite(recorded.suite_path, "full").claims, shard)
    assert again.rechecked and "shard 1/2" in again.describe()
    # the same cells checked again give what the unsharded run recorded
    assert [(c.id, c.status, c.observed, c.n) for c in again.claims] == \
           [(c.id, c.status, c.observed, c.n) for c in page.claims.claims]


def test_cells_record_their_code_and_rate_and_the_run_its_ranking_rules(recorded, page):
    import json
    import math

    tracker = Tracker(recorded.uri)
    cells = tracker.runs("lbpage", "tags.`harness.kind` = 'cell'")
    finished = [r for r in cells if r.info.status == "FINISHED"]
    for quantizer in ("vq", "drifting"):  # one process: one digest per plugin (hashed once, when first used)
        digests = {r.data.tags["harness.plugin_digest"] for r in finished
                   if r.data.tags["harness.quantizer"] == quantizer}
        assert len(digests) == 1 and re.fullmatch(r"[0-9a-f]{64}", digests.pop())
    for run in finished:
        k = int(run.data.tags["harness.codebook_size"])
        assert float(run.data.tags["harness.bits_per_token"]) == pytest.approx(math.log2(k), abs=1e-5)
        assert run.data.tags["harness.tokens_per_item"] == "1" and "harness.pixels_per_item" not in run.data.tags
    [parent] = tracker.runs("lbpage", "tags.`harness.kind` = 'suite'")
    assert parent.data.tags["harness.primary_metric"] == "utilization"
    directions = json.loads(parent.data.tags["harness.metric_directions"])
    assert directions["mse"] is False and directions["utilization"] is True
    # the broken method fails while its quantizer is built, before it has a rate
    assert [(label, {r.method for r in rows}) for label, rows in page.groups()] == [
        ("1 bits/token", {"vq", "drifting"}), ("2 bits/token", {"vq", "drifting"}),
        ("rate not recorded", {"broken"})]


def test_rate_distortion_figure_has_a_curve_per_method_and_the_front(page):
    from harness.leaderboard.figures import rate_distortion, rate_metrics

    assert rate_metrics(page) == ["mse"]  # points: no PSNR or rFID
    figure = rate_distortion(page)
    assert figure is not None and figure.png[:8] == PNG and "Pareto front" in figure.caption
    one_rate = dataclasses.replace(page, rows=[r for r in page.rows if r.codebook_size == 2])
    assert rate_distortion(one_rate) is None  # one rate is not a curve


def test_claims_are_rechecked_when_the_newest_run_ran_a_subset(page, recorded):
    from harness.leaderboard.claims import recheck
    from harness.suite import load_suite

    subset = dataclasses.replace(page.claims, cells=2)
    again = recheck(page, load_suite(recorded.suite_path, "full").claims, subset)
    assert again.rechecked and "ran 2 of them" in again.describe()
    assert page.claims.cells == 12 and not page.claims.rechecked  # the run saw every cell: as recorded


def test_a_recheck_leaves_out_rows_of_configurations_the_suite_no_longer_has(page, recorded):
    """A method whose config changed keeps its old row on the page (labelled), but not in the claims."""
    from harness.leaderboard.claims import recheck
    from harness.suite import load_suite

    suite = load_suite(recorded.suite_path, "full")
    current = frozenset(cell.group_hash for cell in suite.cells())
    assert {row.group for row in page.measured} <= current  # the recorded rows are the suite's own
    claims = [c for c in suite.claims if c.id == "drifting-uses-codes"]
    everything = recheck(page, claims, page.claims, current)
    stale = frozenset(current - {row.group for row in page.measured if row.method == "drifting"})
    without = recheck(page, claims, page.claims, stale)
    drifting_seeds = sum(len(r.seed_metrics) for r in page.measured if r.method == "drifting")
    assert everything.claims[0].n - without.claims[0].n == drifting_seeds > 0
