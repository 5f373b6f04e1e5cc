"""Checkpoints in process: periodic saves, a faithful round trip, weights-only loading, atomic writes."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.cell.build import build_dataset, build_model, build_quantizer, complete_config
from harness.cell.train import TrainState, total_steps, train
from harness.errors import HarnessError
from harness.host import get_host
from harness.recovery import checkpoint
from harness.suite import load_suite


class Counter:
    """A schedule with plain state (no state_dict): its counters must survive a resume."""

    def __init__(self) -> None:
        self.seen = 0
        self.scale = 1.0

    def on_train_start(self, state) -> None:
        pass

    def on_step(self, state) -> None:
        self.seen += 1
        self.scale *= 0.5

    def on_epoch_end(self, state) -> None:
        pass


def make_state(tiny_suite: Path, steps: int):
    host = get_host()
    cell = load_suite(str(tiny_suite), overrides=[f"train.steps={steps}"]).cells(["vq"])[0]
    config = complete_config(host, cell)
    torch.manual_seed(0)
    train_set = build_dataset(host, config, None).build("train")
    model, quantizer = build_model(host, config), build_quantizer(host, config)
    optimizer = torch.optim.Adam([*model.parameters(), *quantizer.parameters()], lr=1e-2)
    total, per_epoch = total_steps(config, len(train_set))
    state = TrainState(model, quantizer, optimizer, config, torch.device("cpu"), total, per_epoch)
    return state, train_set, cell.config_hash


def test_periodic_checkpoint_round_trip(tiny_suite: Path, tmp_path: Path):
    state, train_set, key = make_state(tiny_suite, steps=12)
    counter = Counter()
    path = tmp_path / "tiny" / f"{key}.pt"
    saver = checkpoint.Checkpointer(path, key, [counter], every=5)
    train(state, train_set, [saver, counter], log=lambda values, step: None)
    assert saver.saved_step == 10  # saved before steps 5 and 10; the last save wins
    assert state.step == 12

    payload = torch.load(path, weights_only=True)
    assert payload["step"] == 10 and payload["config_hash"] == key
    assert payload["schedules"] == [{"attributes": {"seen": 10, "scale": 0.5 ** 10}}]

    fresh, _, _ = make_state(tiny_suite, steps=12)
    other = Counter()
    torch.manual_seed(123)
    checkpoint.restore(fresh, [other], checkpoint.load(path))
    assert fresh.step == 10 and (other.seen, other.scale) == (10, 0.5 ** 10)
    assert fresh.optimizer.state_dict()["state"][0]["step"] == 10
    # the restored RNG is the one saved, not the one in place before restoring
    assert torch.equal(torch.get_rng_state(), payload["rng"]["torch"])
    saved_model = payload["model"]
    for name, tensor in fresh.model.state_dict().items():
        assert torch.equal(tensor, saved_model[name])


def test_rng_states_round_trip():
    states = checkpoint.rng_states()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    checkpoint.set_rng_states(states)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_atomic_save_keeps_the_old_checkpoint_when_a_write_fails(tmp_path: Path):
    path = tmp_path / "c.pt"
    checkpoint.save(path, {"format": checkpoint.FORMAT, "step": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        checkpoint.save(path, {"format": checkpoint.FORMAT, "step": 2, "bad": Unpicklable()})
    assert checkpoint.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left


def test_damaged_or_foreign_checkpoints_are_clear_errors(tmp_path: Path):
    torn = tmp_path / "torn.pt"
    torn.write_bytes(b"PK\x03\x04 not a whole file")
    with pytest.raises(HarnessError, match=f"checkpoint {torn} cannot be read"):
        checkpoint.load(torn)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(HarnessError, match="is not a harness checkpoint"):
        checkpoint.load(foreign)
    with pytest.raises(HarnessError, match="not found"):
        checkpoint.load(tmp_path / "missing.pt")


def test_checkpoint_folder_follows_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("HARNESS_CHECKPOINT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert checkpoint.checkpoint_root(f"sqlite:///{tmp_path}/a/mlflow.db") == tmp_path / "a" / ".harness" / "checkpoints"
    assert checkpoint.checkpoint_root("http://127.0.0.1:5000") == tmp_path / ".harness" / "checkpoints"
    monkeypatch.setenv("HARNESS_CHECKPOINT_DIR", str(tmp_path / "shared"))
    assert checkpoint.checkpoint_root("http://127.0.0.1:5000") == tmp_path / "shared"
