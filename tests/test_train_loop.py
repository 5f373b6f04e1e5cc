"""The training loop: no device sync between log steps, divergence still named by its step,
the quantizer contract checked on the first step, metrics written in the background and
flushed before checkpoints, progress resumed at the resumed step, and no method in the host."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
import torch

from harness import hookimpl
from harness.cell.callbacks import UsageWindow
from harness.cell.contract import ContractViolation, check_quantizer_output
from harness.cell.losses import build_losses
from harness.cell.train import TrainState, run, standard_callbacks, train
from harness.contracts import QuantizeOutput, Quantizer
from harness.errors import Diverged
from harness.host import build_host, get_host

HARNESS = Path(__file__).resolve().parents[1] / "harness"


def toy_state(quantizer: torch.nn.Module | None = None, steps: int = 10, log_every: int = 100,
              device: str = "cpu", **train_cfg) -> TrainState:
    host = get_host()
    torch.manual_seed(0)
    model = host.models.get("linear2d").obj(latent_dim=2).to(device)
    quantizer = (quantizer or host.quantizers.get("vq").obj(dim=2, codebook_size=4)).to(device)
    optimizer = torch.optim.Adam([*model.parameters(), *quantizer.parameters()], lr=1e-2)
    config = {"seed": 0, "train": {"batch_size": 8, "log_every": log_every, "lr": 1e-2, **train_cfg}}
    return TrainState(model, quantizer, optimizer, config, torch.device(device), steps, 4)


def points(n: int = 32) -> torch.utils.data.TensorDataset:
    return torch.utils.data.TensorDataset(torch.randn(n, 2, generator=torch.Generator().manual_seed(1)))


class NaNAt(Quantizer):
    """Identity whose loss turns NaN from training step ``at`` on."""

    name = "nan-at"

    def __init__(self, dim: int = 2, codebook_size: int = 4, at: int = 7) -> None:
        super().__init__(dim, codebook_size)
        self.at, self.calls = at, 0
        self.w = torch.nn.Parameter(torch.zeros(()))

    def quantize(self, z: torch.Tensor) -> QuantizeOutput:
        loss = self.w * 0 + (float("nan") if self.calls >= self.at else 0.0)
        self.calls += 1
        return QuantizeOutput(z, torch.zeros(len(z), dtype=torch.long), loss)


def test_divergence_is_reported_with_its_step_at_the_next_log_step():
    state = toy_state(NaNAt(at=7), steps=20, log_every=10)
    logged: list[int] = []
    with pytest.raises(Diverged) as info:
        train(state, points(), [], log=lambda values, step: logged.append(step))
    assert info.value.step == 7 and state.step == 10  # found at the log step, named by its own step
    assert logged == []  # nothing from the diverged window was logged


def test_divergence_in_the_last_window_is_reported():
    state = toy_state(NaNAt(at=13), steps=15, log_every=10)
    with pytest.raises(Diverged, match="step 13"):
        train(state, points(), [], log=lambda values, step: None)


class BadIndices(Quantizer):
    """Returns int32 indices of shape (N, 1): the bug the run-time check exists for."""

    name = "bad-indices"

    def __init__(self, dim: int = 2, codebook_size: int = 4, mode: str = "int32") -> None:
        super().__init__(dim, codebook_size)
        self.mode = mode
        self.w = torch.nn.Parameter(torch.zeros(()))

    def quantize(self, z: torch.Tensor) -> QuantizeOutput:
        idx = torch.zeros(len(z), dtype=torch.long)
        if self.mode == "int32":
            idx = idx[:, None].int()
        elif self.mode == "range":
            idx = idx + self.codebook_size
        loss = self.w * 0 + (float("inf") if self.mode == "loss" else 0.0)
        return QuantizeOutput(z + self.w, idx, loss)


@pytest.mark.parametrize("mode, message", [
    ("int32", r"indices must be int64 of shape \(8,\), got torch.int32 \(8, 1\)"),
    ("range", r"indices of stage 0 must lie in \[0, 4\), got \[4, 4\]"),
])
def test_the_contract_is_checked_on_the_first_step(mode, message):
    state = toy_state(BadIndices(mode=mode), steps=5)
    with pytest.raises(ContractViolation, match=message):
        train(state, points(), [], log=lambda values, step: None)
    assert state.step == 0  # before any update


def test_a_loss_not_finite_on_the_first_step_is_a_divergence_at_step_0():
    state = toy_state(BadIndices(mode="loss"), steps=5)
    with pytest.raises(Diverged, match=r"diverged at step 0 \(loss = inf\)"):
        train(state, points(), [], log=lambda values, step: None)


def test_multi_stage_shapes():
    class Two:
        name, stage_sizes, codebook_size = "two", (4, 8), 4

    out = QuantizeOutput(torch.zeros(3, 2), torch.tensor([[0, 7], [3, 0], [1, 1]]), torch.zeros(()))
    check_quantizer_output(Two(), 3, 2, out)
    out.indices = torch.tensor([0, 1, 2])
    with pytest.raises(ContractViolation, match=r"\(3, 2\)"):
        check_quantizer_output(Two(), 3, 2, out)


def test_a_broken_plugin_fails_its_cell_with_the_contract_message(tmp_path, monkeypatch):
    from harness.cell.runner import CellRunner
    from harness.run.options import RunOptions
    from harness.suite import load_suite
    from harness.tracking import Tracker
    from tests.conftest import TINY_SUITE

    class Plugin:
        @hookimpl
        def harness_register_quantizers(self, register):
            register(BadIndices)

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SUITE.replace('quantizer = "drifting"', 'quantizer = "bad-indices"'))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    [cell] = load_suite(str(path), overrides=["train.steps=3"], seeds=1).cells(["drifting"])
    tracker = Tracker(uri)
    suite = load_suite(str(path), overrides=["train.steps=3"], seeds=1)
    runner = CellRunner(build_host({"bad": Plugin()}), suite, tracker,
                        RunOptions(device="cpu", tracking_uri=uri, progress=False))
    result = runner.run(cell)
    assert result.status == "FAILED" and "broke the quantizer contract" in result.error
    [run_] = [r for r in tracker.runs("tiny") if r.data.tags.get("harness.kind") == "cell"]
    assert run_.info.status == "FAILED" and "int32" in run_.data.tags["harness.error"]


def test_lr_decay_per_epoch_and_logged_at_every_log_step():
    state = toy_state(steps=12, log_every=2, lr_decay=0.5)  # 4 steps per epoch
    logged: dict[int, float] = {}
    train(state, points(), [], log=lambda values, step: logged.__setitem__(step, values["train/lr"]))
    assert sorted(logged) == [2, 4, 6, 8, 10, 12]
    # the log at step 4 runs before the epoch ends; epochs 1 and 2 train at 0.5x and 0.25x
    assert logged[2] == logged[4] == pytest.approx(1e-2)
    assert logged[6] == logged[8] == pytest.approx(5e-3)
    assert logged[10] == pytest.approx(2.5e-3) and logged[12] == pytest.approx(2.5e-3)
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(1.25e-3)


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("sgd", torch.optim.SGD)])
def test_optimizers(name, cls):
    from harness.cell.optim import build_optimizer

    p = torch.nn.Parameter(torch.zeros(2))
    opt = build_optimizer([p], {"optimizer": name, "lr": 0.1, "betas": [0.5, 0.9], "weight_decay": 0.01,
                                "momentum": 0.9})
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.1 and group["weight_decay"] == 0.01
    if name == "sgd":
        assert group["momentum"] == 0.9
    else:
        assert group["betas"] == (0.5, 0.9)


def test_unknown_optimizer_suggests(tmp_path):
    from harness.cell.build import check_suite
    from harness.errors import UsageError
    from harness.suite import load_suite
    from tests.conftest import TINY_SUITE

    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SUITE)
    for sets, match in ((['train.optimizer="adamw2"'], "did you mean 'adamw'"),
                        (["train.momentum=0.9"], "momentum is read by optimizer 'sgd' only"),
                        (['train.optimizer="sgd"', "train.betas=[0.9, 0.99]"], "betas is read by adam"),
                        (["train.lr_decay=1.5"], r"lr_decay must be in \(0, 1\]")):
        with pytest.raises(UsageError, match=match) as info:
            suite = load_suite(str(path), overrides=sets)
            check_suite(get_host(), suite, suite.cells())
        # each error names where the bad value came from: the --set option (or the suite file)
        assert "--set " in str(info.value) or str(path) in str(info.value)


def test_usage_window_marks_used_codes_per_stage():
    window = UsageWindow((4, 8), torch.device("cpu"))
    window.update(torch.tensor([[0, 7], [1, 7]]))
    logs = window.flush()
    assert logs["train/utilization/stage0"].item() == 0.5 and logs["train/utilization/stage1"].item() == 1 / 8
    assert window.flush()["train/utilization"].item() == 0.0  # a flush starts a new window


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_device_sync_between_log_steps():
    """Steps between log steps run under ``torch.cuda.set_sync_debug_mode("error")``."""
    state = toy_state(steps=12, log_every=6, device="cuda")
    losses = build_losses(get_host(), ["mse"])
    losses.setup(state)
    data = [torch.randn(8, 2, device="cuda") for _ in range(12)]
    batches = iter(data)
    synced: list[int] = []

    class Strict:
        def on_step(self, s):  # the first step checks the contract and syncs once; then none
            if s.step % 6 == 1:
                torch.cuda.set_sync_debug_mode("error")

        def after_step(self, s, x, x_hat, out):
            if (s.step + 1) % 6 == 0:  # the next step count is a log step: reading is allowed
                torch.cuda.set_sync_debug_mode("default")

    callbacks = standard_callbacks(state, [Strict()], lambda values, step: synced.append(step))
    try:
        run(state, batches, losses, callbacks)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert synced == [6, 12]


class SlowClient:
    """An MLflow client whose writes wait for a gate: shows the writer never blocks the caller."""

    def __init__(self) -> None:
        self.gate, self.written = threading.Event(), []

    def log_batch(self, run_id, metrics=()):
        assert self.gate.wait(30), "the gate was never opened"
        self.written.extend((run_id, m.key, m.step, m.value) for m in metrics)


def test_metric_writer_is_in_the_background_and_flush_waits():
    from harness.tracking import MetricWriter

    client = SlowClient()
    writer = MetricWriter(client)
    from mlflow.entities import Metric

    for step in range(3):  # returns although no write can finish yet
        writer.put("r", [Metric("train/loss", float(step), 0, step)])
    assert client.written == []
    client.gate.set()
    writer.flush()
    assert [w[2] for w in client.written] == [0, 1, 2]


def test_metrics_are_in_the_store_before_each_checkpoint(tmp_path, monkeypatch):
    """A kill right after a checkpoint loses no logged point: the store has them all already."""
    from harness.recovery import checkpoint
    from harness.run.lifecycle import run_suite
    from harness.run.options import RunOptions
    from harness.suite import load_suite
    from harness.tracking import Tracker
    from tests.conftest import TINY_SUITE

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SUITE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    seen: list[tuple[int, int]] = []
    save = checkpoint.Checkpointer.save

    def watched(self, state):
        reader = Tracker(uri)
        [run_] = [r for r in reader.runs("tiny") if r.info.status == "RUNNING" and
                  r.data.tags.get("harness.kind") == "cell"]
        history = reader.client.get_metric_history(run_.info.run_id, "train/loss")
        seen.append((state.step, max((m.step for m in history), default=-1)))
        return save(self, state)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", watched)
    suite = load_suite(str(path), overrides=["train.steps=12", "train.log_every=1", "train.checkpoint_every=5"],
                       seeds=1)
    result = run_suite(suite, ["vq"], RunOptions(device="cpu", tracking_uri=uri, progress=False, executor="local"))
    assert result.cells[0].status == "FINISHED"
    periodic = [(step, logged) for step, logged in seen if step in (5, 10)]
    assert periodic == [(5, 5), (10, 10)]


def test_progress_of_a_resumed_cell_starts_at_its_step():
    from types import SimpleNamespace

    from harness.cell.stages import progress_bar

    state = toy_state(steps=20)
    state.step = 7
    built = SimpleNamespace(state=state, cell=SimpleNamespace(run_name="c"))
    bar = progress_bar(SimpleNamespace(options=SimpleNamespace(progress=True)), built)
    try:
        assert (bar.n, bar.total) == (7, 20)
    finally:
        bar.close()


def test_the_host_holds_no_method():
    """Losses, discriminators and peer-library settings live in plugins, never in ``harness/``."""
    assert not (HARNESS / "losses.py").exists() and not (HARNESS / "adversarial.py").exists()
    patterns = [r"import lpips", r"lpips\.LPIPS", r"Discriminator", r"hinge", r"adaptive_weight",
                r"vector_quantize_pytorch", r"BACKBONE_FILES", r"\(x_hat - x\)(\*\*2|\.abs)"]
    found = []
    for path in HARNESS.rglob("*.py"):
        if path.relative_to(HARNESS).parts[0] == "plugins":  # first-party plugins live under harness/
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if any(re.search(p, line) for p in patterns):
                found.append(f"{path.relative_to(HARNESS.parent)}:{i}: {line.strip()}")
    assert not found, "method code in the host:\n" + "\n".join(found)
