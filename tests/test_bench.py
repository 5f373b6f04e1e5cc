"""`harness bench` runs every selected quantizer at the given shapes and records the table (no timing asserted)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from harness.commands.bench import RssPeak, bench_search
from harness.commands.cli import main


def test_bench_records_each_measurement(tracking_uri, capsys):
    assert main(["bench", "-q", "vq", "-q", "drifting", "--tokens", "64", "--codes", "16", "--dims", "4",
                 "--repeats", "1", "--tracking-uri", tracking_uri]) == 0
    out = capsys.readouterr().out
    assert "| vq " in out and "| drifting " in out
    client = MlflowClient(tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("bench").experiment_id])[0]
    assert run.data.tags["harness.kind"] == "bench"
    assert run.data.metrics["vq-harness/vq/N64-K16-D4/ms"] > 0
    assert "bench.md" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_bench_with_peer_reports_ratios(tracking_uri, capsys):
    pytest.importorskip("vector_quantize_pytorch")
    assert main(["bench", "-q", "fsq", "--tokens", "64", "--codes", "1024", "--dims", "8", "--repeats", "1",
                 "--peer", "--no-track"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| fsq"))
    time_ratio, memory_ratio = (cell.strip() for cell in row.strip(" |").split("|")[-2:])
    assert time_ratio.endswith("x") and float(time_ratio[:-1]) > 0


def test_unknown_quantizer_is_rejected_before_work(capsys):
    assert main(["bench", "-q", "vqq", "--no-track"]) == 2
    assert "did you mean 'vq'" in capsys.readouterr().err


def test_rss_peak_sees_a_large_allocation():
    import torch

    with RssPeak() as peak:
        block = torch.ones(64, 2**20 // 4 * 4)  # 64 MiB of float32, touched
        __import__("time").sleep(0.05)  # several watcher samples while it is alive
        del block
    assert peak.extra_bytes > 32 * 2**20


def test_search_benchmark_reports_both_timings():
    result = bench_search(__import__("torch").device("cpu"), tokens=512, codes=256, dim=8, repeats=1)
    assert result["search_ms"] > 0 and result["matmul_argmin_ms"] > 0 and result["ratio"] > 0
