"""benchmarks/gpu.py on a CPU: the no-CUDA answer, --quick's JSON, and the sync watch's logic.

No timing is asserted (benchmarks stay benchmarks). The sync check needs CUDA, so
``torch.cuda.set_sync_debug_mode`` is replaced by a recorder and a planted
"device read" raises torch's error message when the mode is "error", as CUDA would.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import harness.cell.record as record
import harness.cell.train as train_module

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def last_json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_without_cuda_nothing_is_measured_and_the_answer_says_so(gpu, no_cuda, capsys):
    assert gpu.main([]) == 0
    out = last_json(capsys)
    assert out["cuda"] is False
    assert "no CUDA" in out["reason"] and "--quick" in out["reason"]
    assert "throughput" not in out


def test_an_unknown_method_is_a_usage_error_before_anything_runs(gpu, no_cuda, capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu.main(["--quick", "--method", "vqq"])
    assert exit_.value.code == 2
    err = capsys.readouterr()
    assert "did you mean 'vq'" in err.err and err.out == ""


def test_quick_on_cpu_reports_every_part(gpu, no_cuda, capsys):
    assert gpu.main(["--quick"]) == 0
    out = last_json(capsys)
    assert out["cuda"] is False and out["quick"] is True and out["harness_installed"] is True
    for part in ("sync", "sync_unlogged", "throughput", "nearest_code", "bench"):
        assert "seconds" in out[part], part
    assert out["sync"]["status"] == "skipped" and "CUDA" in out["sync"]["reason"]
    loop = out["throughput"]
    assert loop["status"] == "ok", loop
    assert loop["precision"] == "fp32" and loop["bare_images_per_s"] > 0 and loop["harness_images_per_s"] > 0
    assert out["nearest_code"]["status"] == "ok" and out["nearest_code"]["codes"] == 512
    rows = out["bench"]["rows"]
    assert {r["method"] for r in rows} == {"vq", "fsq"}
    assert all("ms" in r for r in rows if r["library"] == "vq-harness"), rows


class FakeCuda:
    """``set_sync_debug_mode`` recorded; :meth:`read` fails like a synchronizing op while armed."""

    def __init__(self) -> None:
        self.mode, self.reads = "default", 0

    def set_mode(self, mode: str) -> None:
        self.mode = mode

    def read(self) -> None:
        self.reads += 1
        if self.mode == "error":
            raise RuntimeError("called a synchronizing CUDA operation")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    fake = FakeCuda()
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", fake.set_mode)
    return fake


def test_a_read_at_log_steps_passes(gpu, fake, monkeypatch):
    original = record.as_floats
    monkeypatch.setattr(record, "as_floats", lambda values: (fake.read(), original(values))[1])
    out = gpu.sync_logged_cell(torch.device("cpu"), gpu.SIZES["quick"])
    assert out["status"] == "pass", out
    assert out["armed_steps"] == gpu.SIZES["quick"]["sync_steps"] - 1
    assert fake.reads >= 1 and fake.mode == "default"


def test_a_read_between_log_steps_is_named(gpu, fake, monkeypatch):
    original = train_module.optimise

    def optimise(state, *args):
        if state.step == 3:
            fake.read()
        return original(state, *args)

    monkeypatch.setattr(train_module, "optimise", optimise)
    out = gpu.sync_logged_cell(torch.device("cpu"), gpu.SIZES["quick"])
    assert out["status"] == "fail", out
    assert out["first"]["step"] == 3 and "synchronizing" in out["first"]["error"]
    assert any("test_gpu_benchmark.py" in w and "fake.read()" in w for w in out["first"]["where"])
    assert fake.mode == "default"
