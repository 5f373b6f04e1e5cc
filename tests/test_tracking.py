"""The MLflow layout (docs/architecture.md): experiment per suite, parent run, nested cells, params, tags, artifacts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness.run.lifecycle import RunOptions, run_suite
from harness.suite import load_suite
from harness.tracking import Tracker, flatten, resolve_uri


def test_default_store_is_sqlite_in_the_working_folder(workdir):
    assert resolve_uri() == f"sqlite:///{workdir / 'mlflow.db'}"


def test_flatten_merges_params_into_their_table():
    flat = flatten({"quantizer": {"name": "vq", "params": {"beta": 0.25}},
                    "schedules": [{"name": "constant", "params": {}}], "train": {"betas": [0.9, 0.99]}})
    assert flat == {"quantizer.name": "vq", "quantizer.beta": "0.25", "schedules.0.name": "constant",
                    "train.betas": "[0.9, 0.99]"}


def test_run_layout(tiny_suite, tracking_uri, workdir):
    suite = load_suite(str(tiny_suite), "smoke", seeds=1)
    result = run_suite(suite, ["drifting"], RunOptions(tracking_uri=tracking_uri, progress=False))
    assert [c.status for c in result.cells] == ["FINISHED"]

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags["harness.kind"] == "suite")
    cell = next(r for r in runs if r.data.tags["harness.kind"] == "cell")
    assert cell.info.run_name == "drifting-K4-d2-s0"
    assert cell.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.info.status == cell.info.status == "FINISHED"

    params = cell.data.params
    assert params["quantizer.name"] == "drifting" and params["quantizer.tau"] == "1.0"
    assert params["train.lr"] == "0.01" and params["dataset.n_train"] == "256"
    tags = cell.data.tags
    for key in ("suite", "suite_version", "profile", "version", "git_commit", "plugin_distribution",
                "plugin_version", "device"):
        assert tags[f"harness.{key}"], key
    assert tags["harness.profile"] == "smoke" and tags["harness.plugin_distribution"] == "vq-harness"

    history = client.get_metric_history(cell.info.run_id, "train/loss")
    assert [m.step for m in history] == [10]
    assert {"eval/utilization", "eval/perplexity", "eval/dead_codes", "eval/mse", "eval/separated"} <= set(cell.data.metrics)

    artifacts = {a.path for a in client.list_artifacts(cell.info.run_id)}
    assert {"config.json", "plots", "checkpoint"} <= artifacts
    plots = {a.path for a in client.list_artifacts(cell.info.run_id, "plots")}
    assert {"plots/code_usage.png", "plots/training_curves.png"} <= plots
    assert (workdir / "mlartifacts").is_dir() and not (workdir / "mlruns").exists()
    assert "claims.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}


DRAW_NOTHING = """
import sys
import harness.run.lifecycle as lifecycle
lifecycle.FigureDrawer.submit = lambda self, run_id, name: None  # as if the suite's process
lifecycle.draw_figures = lambda tracker, results: None  # had drawn nothing yet
from harness.suite import load_suite
result = lifecycle.run_suite(load_suite(sys.argv[1], "smoke", seeds=1), ["drifting"],
                             lifecycle.RunOptions(tracking_uri=sys.argv[2], progress=False))
print(result.cells[0].status, result.cells[0].run_id, "matplotlib" in sys.modules)
"""


def test_a_cell_saves_what_its_figures_need_and_the_suite_draws_them_once(tiny_suite, tracking_uri, workdir):
    """A cell imports no matplotlib and draws nothing: it saves ``plots/figures.pt``. The suite's
    process draws the PNGs from it (``draw_recorded``, on harness.run.figures' thread), once."""
    from harness.cell.plots import draw_recorded

    out = subprocess.run([sys.executable, "-c", DRAW_NOTHING, str(tiny_suite), tracking_uri], cwd=workdir,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    status, run_id, imported = out.stdout.split()
    assert (status, imported) == ("FINISHED", "False")
    tracker = Tracker(tracking_uri)
    assert tracker.list_artifacts(run_id, "plots") == ["plots/figures.pt"]
    assert draw_recorded(tracker, run_id) == ["plots/code_usage.png", "plots/training_curves.png"]
    assert set(tracker.list_artifacts(run_id, "plots")) == {
        "plots/figures.pt", "plots/code_usage.png", "plots/training_curves.png"}
    assert tracker.read_artifact(run_id, "plots/code_usage.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert draw_recorded(tracker, run_id) == []


def test_shards_split_cells(tiny_suite, tracking_uri):
    suite = load_suite(str(tiny_suite), "smoke")
    names = []
    for i in (1, 2):
        result = run_suite(suite, None, RunOptions(tracking_uri=tracking_uri, progress=False, shard=(i, 2)))
        names.append([c.cell.run_name for c in result.cells])
    assert names == [["vq-K4-d2-s0", "drifting-K4-d2-s0"], ["vq-K4-d2-s1", "drifting-K4-d2-s1"]]


def test_the_tracker_reads_what_the_harness_needs(tracking_uri):
    """The read and write methods the rest of the harness uses instead of the client."""
    tracker = Tracker(tracking_uri)
    parent = tracker.start_run("exp", "parent", {"harness.kind": "suite"})
    child = tracker.start_run("exp", "cell", {"harness.kind": "cell", "harness.config_hash": "abc"}, parent=parent)
    other = tracker.start_run("exp", "cell2", {"harness.kind": "cell", "harness.config_hash": "def"}, parent=parent)
    for step in (10, 20, 30):
        tracker.log_metrics(child, {"train/loss": step / 10, "eval/x": 1.0}, step)
    tracker.log_json(other, {"a": 1}, "sub/data.json")
    tracker.flush()

    assert "exp" in tracker.experiment_names() and tracker.experiment_of(child) == "exp"
    assert tracker.artifact_location("exp").endswith("/exp") and tracker.artifact_location("nope") is None
    assert [r.info.run_id for r in tracker.child_runs(parent, "tags.`harness.config_hash` = 'abc'")] == [child]
    assert {r.info.run_id for r in tracker.child_runs(parent)} == {child, other}
    assert [m.step for m in tracker.metric_history(child, "train/loss")] == [10, 20, 30]
    assert json.loads(tracker.read_artifact(other, "sub/data.json")) == {"a": 1}
    with pytest.raises(MlflowException):
        tracker.read_artifact(other, "missing.json")

    copied = tracker.copy_metrics(child, other, "train/", 20)
    assert sorted(m.step for m in copied) == [10, 20]
    assert [m.step for m in tracker.metric_history(other, "train/loss")] == [10, 20]
    assert "eval/x" not in tracker.get_run(other).data.metrics

    tracker.terminate(other, "KILLED")
    assert tracker.get_run(other).info.status == "KILLED"
    tracker.delete_run(other)
    assert [r.info.run_id for r in tracker.child_runs(parent)] == [child]


def test_a_worker_tracker_beats_on_every_store_call(tracking_uri):
    """ProcessTracker wraps the client: reads and writes alike count as the worker's progress."""
    from harness.run.executors import ProcessTracker, set_heartbeat

    beats: list[int] = []
    set_heartbeat(lambda: beats.append(1))
    try:
        tracker = ProcessTracker(tracking_uri)
        run = tracker.start_run("exp", "cell", {})
        for call in (lambda: tracker.set_tags(run, {"a": "1"}), lambda: tracker.get_run(run),
                     lambda: tracker.log_metrics(run, {"m": 1.0}), lambda: tracker.end_run(run)):
            before = len(beats)
            call()
            assert len(beats) > before
    finally:
        set_heartbeat(None)


def _stored(client: MlflowClient, run_id: str) -> tuple[dict, dict]:
    run = client.get_run(run_id)
    history = {key: sorted((m.step, m.timestamp, repr(m.value)) for m in client.get_metric_history(run_id, key))
               for key in run.data.metrics}  # repr: NaN is not equal to itself
    return history, {key: repr(value) for key, value in run.data.metrics.items()}


def test_the_metric_writers_sql_path_stores_what_log_batch_stores(tracking_uri):
    """NaN, infinities, points out of step order, a duplicate in a batch and one across batches."""
    import math

    from mlflow.entities import Metric

    from harness.tracking.metric_rows import SqlMetricRows

    tracker = Tracker(tracking_uri)
    client = tracker.client
    rows = SqlMetricRows.of(client)
    assert rows is not None
    experiment = client.create_experiment("metric-rows")
    by_mlflow, by_rows = (client.create_run(experiment).info.run_id for _ in range(2))
    batches = [
        [Metric("a", 1.0, 10, 0), Metric("a", 2.0, 10, 0), Metric("b", math.nan, 10, 0), Metric("a", 2.0, 10, 0)],
        [Metric("a", 0.5, 12, 3), Metric("a", 9.0, 11, 1), Metric("b", math.inf, 11, 2), Metric("c", -math.inf, 9, 5)],
        [Metric("a", 0.25, 12, 2), Metric("b", 3.0, 13, 2), Metric("c", 4.0, 9, 5)],
        [Metric("a", 0.5, 12, 3), Metric("d", 1.0, 14, 0)],  # ("a", 0.5, 12, 3) is stored already
    ]
    written = []
    for batch in batches:
        client.log_batch(by_mlflow, metrics=batch)
        written.append(rows.write(by_rows, batch))
    assert written == [True, True, True, False]  # the duplicate goes to log_batch, which drops it
    client.log_batch(by_rows, metrics=batches[-1])
    assert _stored(client, by_rows) == _stored(client, by_mlflow)
    history, latest = _stored(client, by_rows)
    assert latest == {"a": "0.5", "b": "3.0", "c": "4.0", "d": "1.0"}
    assert len(history["a"]) == 5


def test_the_metric_writer_leaves_what_it_does_not_vouch_for_to_mlflow(tracking_uri):
    from mlflow.entities import Metric

    from harness.tracking.metric_rows import SqlMetricRows

    client = Tracker(tracking_uri).client
    rows = SqlMetricRows.of(client)
    run_id = client.create_run(client.create_experiment("metric-rows-refused")).info.run_id
    assert rows.write(run_id, [Metric("bad key?", 1.0, 1, 0)]) is False  # MLflow's validation refuses it
    client.delete_run(run_id)
    assert rows.write(run_id, [Metric("a", 1.0, 1, 0)]) is False  # a deleted run takes no metrics
    assert client.get_metric_history(run_id, "a") == []
    assert SqlMetricRows.of(MlflowClient("http://127.0.0.1:9")) is None  # a server writes its own rows
