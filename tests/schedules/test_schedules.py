"""Each schedule's effect on a TrainState around a tiny model, alone and composed, and in a real run."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.cell.train import TrainState, train
from harness.errors import UnknownNameError
from harness.plugins.models.linear2d import Linear2d
from harness.plugins.quantizers.vq import VectorQuantizer
from harness.plugins.schedules.decay import Decay
from harness.plugins.schedules.lr import WarmupCosine
from harness.plugins.schedules.stages import NSVQStages, StagedFreeze
from harness.run.lifecycle import RunOptions, run_suite
from harness.suite import load_suite


class NormedModel(Linear2d):
    """Linear2d with a BatchNorm in the encoder: eval mode must stop its running statistics."""

    def __init__(self) -> None:
        super().__init__(latent_dim=2)
        self._encoder = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


def make_state(steps_total: int = 20, steps_per_epoch: int = 5, lr: float = 0.1) -> TrainState:
    torch.manual_seed(0)
    model, quantizer = NormedModel(), VectorQuantizer(dim=2, codebook_size=4)
    optimizer = torch.optim.Adam([*model.parameters(), *quantizer.parameters()], lr=lr)
    config = {"train": {"batch_size": 8}, "seed": 0}
    return TrainState(model, quantizer, optimizer, config, torch.device("cpu"), steps_total, steps_per_epoch)


def drive(state: TrainState, schedules: list, until: int) -> None:
    """Mimic the loop's hook order without training: on_step per step, on_epoch_end per epoch."""
    if state.step == 0:
        for s in schedules:
            s.on_train_start(state)
    while state.step < until:
        for s in schedules:
            s.on_step(state)
        state.step += 1
        if state.step % state.steps_per_epoch == 0:
            for s in schedules:
                s.on_epoch_end(state)
            state.epoch += 1


def grads(module: nn.Module) -> set[bool]:
    return {p.requires_grad for p in module.parameters()}


# -- decay ---------------------------------------------------------------------

def test_decay_multiplies_the_attribute_each_epoch():
    state = make_state()
    drive(state, [Decay("beta", factor=0.5)], until=15)  # three epochs
    assert state.quantizer.beta == pytest.approx(0.25 * 0.5**3)
    assert state.extras["decay/beta"] == pytest.approx(0.25 / 8)


def test_decay_stops_at_min_value():
    state = make_state()
    drive(state, [Decay("beta", factor=0.5, min_value=0.1)], until=20)
    assert state.quantizer.beta == pytest.approx(0.1)


def test_decay_acts_on_a_scalar_buffer_in_place():
    state = make_state()
    state.quantizer.register_buffer("weight", torch.tensor(1.0))
    buffer = state.quantizer.weight
    drive(state, [Decay("weight", factor=0.9)], until=10)
    assert state.quantizer.weight is buffer
    assert float(buffer) == pytest.approx(0.81)


def test_decay_unknown_attribute_lists_attributes_and_suggests():
    state = make_state()
    with pytest.raises(UnknownNameError) as info:
        Decay("betta").on_train_start(state)
    assert "did you mean 'beta'" in str(info.value)
    with pytest.raises(UnknownNameError) as info:
        Decay("zzz").on_train_start(state)
    assert "numeric attributes: " in str(info.value) and "beta" in str(info.value)


# -- nsvq-stages ---------------------------------------------------------------

def test_nsvq_stages_freeze_encoder_then_start_adversarial():
    state = make_state()
    stages = NSVQStages(freeze_encoder_at=6, adversarial_at=12, adversarial_weight=0.5)
    drive(state, [stages], until=6)
    assert state.extras["stage"] == "joint" and state.loss_weights["adv"] == 0.0
    assert grads(state.encoder) == {True}
    drive(state, [stages], until=7)  # on_step of step 6 froze the encoder
    assert state.extras["stage"] == "frozen-encoder"
    assert grads(state.encoder) == {False} and not state.encoder.training
    assert grads(state.decoder) == {True} and grads(state.quantizer) == {True}
    assert state.loss_weights["adv"] == 0.0
    drive(state, [stages], until=13)
    assert state.extras["stage"] == "adversarial" and state.loss_weights["adv"] == 0.5
    assert grads(state.encoder) == {False}


def test_nsvq_stages_epoch_switch_point():
    state = make_state(steps_per_epoch=5)
    stages = NSVQStages(freeze_encoder_epoch=2)
    drive(state, [stages], until=10)
    assert grads(state.encoder) == {True}
    drive(state, [stages], until=11)
    assert grads(state.encoder) == {False}


def test_nsvq_stages_rejects_adversarial_before_freezing_and_double_switch_points():
    with pytest.raises(ValueError, match="after the encoder is frozen"):
        NSVQStages(freeze_encoder_at=10, adversarial_at=5).on_train_start(make_state())
    with pytest.raises(ValueError, match="not both"):
        NSVQStages(freeze_encoder_at=10, freeze_encoder_epoch=2)


def test_frozen_encoder_stops_changing_in_real_training():
    """Through the real loop: after the switch the encoder's weights and BatchNorm stats stay put."""
    state = make_state(steps_total=12, steps_per_epoch=4, lr=0.05)
    data = torch.utils.data.TensorDataset(torch.randn(32, 2))
    snapshots = {}

    def log(values, step):
        snapshots[step] = {k: v.clone() for k, v in state.encoder.state_dict().items()}

    state.config["train"].update(log_every=1)
    train(state, data, [NSVQStages(freeze_encoder_at=4)], log=log)
    changed = [k for k in snapshots[4] if not torch.equal(snapshots[1][k], snapshots[4][k])]
    assert "0.weight" in changed and "1.running_mean" in changed  # stage 1 trains the encoder
    for k, v in snapshots[4].items():
        assert torch.equal(v, snapshots[12][k]), k
    assert state.extras["stage"] == "frozen-encoder"


# -- staged-freeze -------------------------------------------------------------

def test_staged_freeze_holds_decoder_then_releases_it():
    state = make_state()
    schedule = StagedFreeze(release_decoder_at=8)
    drive(state, [schedule], until=1)
    state.model.train()  # what the loop does after on_train_start
    drive(state, [schedule], until=8)
    assert grads(state.decoder) == {False} and not state.decoder.training
    assert grads(state.encoder) == {True}
    drive(state, [schedule], until=9)
    assert grads(state.decoder) == {True} and state.decoder.training
    assert state.extras["stage"] == "joint"


def test_staged_freeze_needs_a_release_point():
    with pytest.raises(ValueError, match="release_decoder_at"):
        StagedFreeze()


# -- warmup-cosine -------------------------------------------------------------

def lr_at(schedule: WarmupCosine, state: TrainState, step: int) -> float:
    drive(state, [schedule], until=step)
    schedule.on_step(state)  # the step about to run
    return state.optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize(("step", "expected"), [
    (0, 0.1 * 1 / 4),            # warm-up: (step + 1) / warmup
    (3, 0.1),                    # last warm-up step reaches the base rate
    (4, 0.1),                    # cosine starts at 1
    (12, 0.1 * (0.2 + 0.8 * 0.5)),  # half way through the cosine: cos(pi/2) = 0
    (20, 0.1 * 0.2),             # steps_total: min_lr_ratio
])
def test_warmup_cosine_lr(step, expected):
    state = make_state(steps_total=20, lr=0.1)
    assert lr_at(WarmupCosine(warmup_steps=4, min_lr_ratio=0.2), state, step) == pytest.approx(expected)


def test_warmup_cosine_keeps_each_groups_base_rate():
    state = make_state(steps_total=10)
    state.optimizer.param_groups[0]["lr"] = 0.2
    state.optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "lr": 0.02})
    schedule = WarmupCosine()
    lr_at(schedule, state, 5)
    factor = 0.5 * (1 + math.cos(math.pi * 0.5))
    assert [g["lr"] for g in state.optimizer.param_groups] == pytest.approx([0.2 * factor, 0.02 * factor])


def test_warmup_longer_than_the_run_is_an_error():
    with pytest.raises(ValueError, match="exceeds"):
        WarmupCosine(warmup_steps=50).on_train_start(make_state(steps_total=20))


# -- composition ---------------------------------------------------------------

def test_schedules_compose_in_one_cell():
    state = make_state(steps_total=20, steps_per_epoch=5, lr=0.1)
    schedules = [StagedFreeze(release_decoder_at=5), NSVQStages(freeze_encoder_at=10, adversarial_at=15),
                 Decay("beta", factor=0.5), WarmupCosine(warmup_steps=5)]
    drive(state, schedules, until=3)
    assert grads(state.decoder) == {False} and grads(state.encoder) == {True}
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 3 / 5)
    drive(state, schedules, until=11)
    assert grads(state.decoder) == {True} and grads(state.encoder) == {False}
    assert state.quantizer.beta == pytest.approx(0.25 * 0.5**2)
    drive(state, schedules, until=16)
    assert state.loss_weights["adv"] == 1.0 and state.extras["stage"] == "adversarial"
    assert state.quantizer.beta == pytest.approx(0.25 * 0.5**3)
    expected = 0.1 * 0.5 * (1 + math.cos(math.pi * (15 - 5) / 15))
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(expected)


# -- end to end ----------------------------------------------------------------

SCHEDULED_SUITE = """
[suite]
name = "tiny-scheduled"

[dataset]
name = "two-clusters"
params = { n_train = 128, n_val = 64 }

[model]
name = "linear2d"

[train]
steps = 12
batch_size = 32
lr = 1e-2
log_every = 4

[methods.vq]
quantizer = "vq"
schedules = [{ name = "nsvq-stages", params = { freeze_encoder_at = 6 } }]

[methods.vq-typo]
quantizer = "vq"
schedules = [{ name = "decay", params = { attribute = "betta" } }]

[[schedules]]
name = "warmup-cosine"
params = { warmup_steps = 2 }

[[schedules]]
name = "decay"
params = { attribute = "beta", factor = 0.5 }

[matrix]
codebook_size = [4]
dim = [2]
seeds = 1
"""


def test_scheduled_suite_runs_end_to_end(suite_file, tracking_uri):
    """Suite schedules then the method's, in order; a bad attribute fails only its own cell."""
    from mlflow.tracking import MlflowClient

    suite = load_suite(str(suite_file(SCHEDULED_SUITE)), "full")
    result = run_suite(suite, None, RunOptions(tracking_uri=tracking_uri, progress=False))
    good, typo = result.cells
    assert good.status == "FINISHED", good.error
    run = MlflowClient(tracking_uri).get_run(good.run_id)
    params = run.data.params
    assert [params[f"schedules.{i}.name"] for i in range(3)] == ["warmup-cosine", "decay", "nsvq-stages"]
    assert params["schedules.1.factor"] == "0.5" and params["schedules.2.freeze_encoder_at"] == "6"
    assert "eval/dead_codes" in run.data.metrics
    assert typo.status == "FAILED" and "did you mean 'beta'" in typo.error
