"""The command line end to end: list, run (with a crashing cell), leaderboard, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from harness.commands.cli import main


def test_list_json_every_kind(capsys):
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"quantizers", "datasets", "models", "schedules", "metrics", "suites", "broken"} <= set(data)
    vq = next(q for q in data["quantizers"] if q["name"] == "vq")
    assert vq["distribution"] == "vq-harness" and vq["paper"]
    assert "toy2d" in [s["name"] for s in data["suites"]]


def test_list_one_kind_prints_a_table(capsys):
    assert main(["list", "quantizers"]) == 0
    out = capsys.readouterr().out
    assert "| drifting" in out and "| vq" in out


def test_plugins_listing(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"quantizers", "metrics"} <= {r["name"] for r in rows}
    assert all(r["status"] == "ok" for r in rows)


@pytest.mark.parametrize("argv, needle", [
    (["run", "toy2"], "did you mean 'toy2d'"),
    (["run", "toy2d", "-q", "drifitng"], "did you mean 'drifting'"),
    (["run", "toy2d", "--set", "train.stesp=3"], "train.steps"),
    (["run", "toy2d", "--profile", "smok"], "did you mean 'smoke'"),
    (["run", "toy2d", "--shard", "3/2"], "--shard"),
])
def test_bad_input_exits_2_with_reason(argv, needle, workdir, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert not (workdir / "mlflow.db").exists()  # rejected before anything was recorded


def test_unknown_quantizer_param_points_at_suite_line(suite_file, capsys):
    from tests.conftest import TINY_SUITE

    text = TINY_SUITE.replace('quantizer = "drifting"', 'quantizer = "drifting"\nparams = { tua = 1.0 }')
    path = suite_file(text)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'tau'" in err and f"{path}:" in err


def test_run_records_and_ranks(tiny_suite, tracking_uri, capsys):
    assert main(["run", str(tiny_suite), "--profile", "smoke", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "drifting-K4-d2-s1" in out and "drifting-uses-codes | holds" in out

    assert main(["leaderboard", str(tiny_suite), "--format", "csv", "--profile", "smoke"]) == 0
    csv_text = capsys.readouterr().out
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("method,quantizer,codebook_size,dim,n,failed,status")
    assert len(lines) == 3 and {lines[1].split(",")[0], lines[2].split(",")[0]} == {"vq", "drifting"}


def test_crashing_cell_is_failed_and_the_suite_goes_on(suite_file, tracking_uri, capsys):
    from tests.conftest import TINY_SUITE

    # a negative tau passes the signature check but the quantizer raises when built
    text = TINY_SUITE.replace('quantizer = "drifting"', 'quantizer = "drifting"\nparams = { tau = -1.0 }')
    path = suite_file(text)
    assert main(["run", str(path), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "2 of 4 cells failed" in captured.err
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                              "tags.`harness.kind` = 'cell'")
    status = {r.info.run_name: r.info.status for r in runs}
    assert status == {"vq-K4-d2-s0": "FINISHED", "vq-K4-d2-s1": "FINISHED",
                      "drifting-K4-d2-s0": "FAILED", "drifting-K4-d2-s1": "FAILED"}
    failed = next(r for r in runs if r.info.status == "FAILED")
    traceback_path = client.download_artifacts(failed.info.run_id, "traceback.txt")
    assert "tau must be positive" in Path(traceback_path).read_text()

    assert main(["leaderboard", str(path)]) == 0
    board = capsys.readouterr().out
    drifting_row = next(line for line in board.splitlines() if line.startswith("| drifting"))
    assert "failed" in drifting_row and "| 0 " in drifting_row


def test_unknown_loss_and_model_params_fail_before_any_cell(suite_file, workdir, capsys):
    from tests.conftest import TINY_SUITE

    path = suite_file(TINY_SUITE.replace("lr = 1e-2", 'lr = 1e-2\nloss = "mse+lpip"'))
    assert main(["run", str(path)]) == 2
    assert "did you mean 'mse+lpips'" in capsys.readouterr().err
    text = TINY_SUITE.replace('quantizer = "vq"\n', 'quantizer = "vq"\nmodel_params = { in_dimm = 2 }\n')
    assert main(["run", str(suite_file(text, "b.toml"))]) == 2
    assert "did you mean 'in_dim'" in capsys.readouterr().err
    assert not (workdir / "mlflow.db").exists()
