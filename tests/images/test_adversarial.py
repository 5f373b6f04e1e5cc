"""The ``patchgan`` loss: taming's PatchGAN, hinge losses, the adaptive weight, and when it runs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.cell.losses import build_losses
from harness.cell.train import TrainState, train
from harness.contracts import Model, QuantizeOutput, Quantizer
from harness.plugins.losses.patchgan import (
    PatchDiscriminator,
    PatchGAN,
    adaptive_weight,
    generator_loss,
    hinge_d_loss,
)


def test_patch_discriminator_layers():
    d = PatchDiscriminator()
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    layout = [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.bias is not None) for c in convs]
    assert layout == [(3, 64, (4, 4), (2, 2), True), (64, 128, (4, 4), (2, 2), False),
                      (128, 256, (4, 4), (2, 2), False), (256, 512, (4, 4), (1, 1), False),
                      (512, 1, (4, 4), (1, 1), True)]
    assert [m.num_features for m in d.modules() if isinstance(m, nn.BatchNorm2d)] == [128, 256, 512]
    assert {m.negative_slope for m in d.modules() if isinstance(m, nn.LeakyReLU)} == {0.2}
    # 32 -> 16 -> 8 -> 4 (stride 2), then 3 -> 2 (k4 s1 p1): one logit per patch
    assert d(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 2, 2)


def test_hinge_losses_by_hand():
    real = torch.tensor([2.0, 0.0])
    fake = torch.tensor([-2.0, 0.0])
    # real: relu(1-2)=0, relu(1-0)=1 -> 0.5; fake: relu(1-2)=0, relu(1+0)=1 -> 0.5
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5)
    assert generator_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)


def test_adaptive_weight_by_hand():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    rec = 3 * w.sum()  # gradient (3, 3): norm 3 sqrt(2)
    g = -w.sum()  # gradient (-1, -1): norm sqrt(2)
    expected = 3 * math.sqrt(2) / (math.sqrt(2) + 1e-4) * 0.8
    assert adaptive_weight(rec, g, w, 0.8).item() == pytest.approx(expected, rel=1e-6)
    flat = 0 * w.sum()  # zero generator gradient: the ratio is clamped to 1e4
    assert adaptive_weight(rec, flat, w, 0.5).item() == pytest.approx(0.5e4)
    assert not adaptive_weight(rec, g, w, 1.0).requires_grad


class TinyModel(Model):
    name = "tiny-image"

    def __init__(self, latent_dim: int = 2) -> None:
        super().__init__(latent_dim)
        self._encoder = nn.Conv2d(3, latent_dim, 1)
        self._decoder = nn.Conv2d(latent_dim, 3, 1)

    @property
    def last_layer(self) -> torch.Tensor:
        return self._decoder.weight


class Identity(Quantizer):
    """A pass-through quantizer: keeps the test about the adversarial machinery."""

    def __init__(self, dim: int = 2, codebook_size: int = 1) -> None:
        super().__init__(dim, codebook_size)

    def quantize(self, z: torch.Tensor) -> QuantizeOutput:
        return QuantizeOutput(z, torch.zeros(len(z), dtype=torch.long), z.new_zeros(()))


class StartAdversarial:
    """Switches the adversarial term on at ``at`` steps (what nsvq-stages does)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step(self, state):
        if state.step == self.at:
            state.loss_weights["adv"] = 1.0


def make_state(steps: int) -> TrainState:
    torch.manual_seed(0)
    model, quantizer = TinyModel(), Identity()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    config = {"seed": 0, "model": {"name": "tiny-image"},
              "train": {"batch_size": 2, "lr": 1e-3, "log_every": 1,
                        "loss": ["mse", {"name": "patchgan", "weight": 0.0, "disc_weight": 0.8}]}}
    return TrainState(model, quantizer, optimizer, config, torch.device("cpu"), steps, steps)


def patchgan_of(state: TrainState):
    from harness.host import get_host

    losses = build_losses(get_host(), state.config["train"]["loss"])
    losses.setup(state)
    return losses, losses.losses[-1]


def snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_inactive_while_weight_is_zero_then_steps():
    state = make_state(steps=4)
    losses, adv = patchgan_of(state)
    assert state.loss_weights["adv"] == 0.0 and not adv.active(state)
    before = snapshot(adv.discriminator)
    data = torch.utils.data.TensorDataset(torch.rand(16, 3, 32, 32) * 2 - 1)
    logs: dict[int, dict] = {}
    seen: dict[int, list[torch.Tensor]] = {}

    class Watch:
        def on_step(self, s):
            seen[s.step] = snapshot(adv.discriminator)

    train(state, data, [StartAdversarial(at=2), Watch()], log=lambda v, step: logs.__setitem__(step, v),
          losses=losses)
    # steps 1 and 2 ran with adv = 0: no term, no discriminator step
    assert all(torch.equal(a, b) for a, b in zip(before, seen[2], strict=True))
    assert "train/adv" not in logs[1] and "train/disc_loss" not in logs[2]
    # steps 3 and 4 ran with adv = 1: the term is in the loss and the discriminator moved
    assert "train/adv" in logs[3] and "train/disc_loss" in logs[3]
    assert any(not torch.equal(a, b) for a, b in zip(before, snapshot(adv.discriminator), strict=True))
    weight = float(logs[4]["train/adv_weight"])
    assert 0 < weight <= 1e4 * 0.8
    total = sum(float(logs[4][f"train/{k}"]) for k in ("rec", "quantizer", "adv"))
    assert float(logs[4]["train/loss"]) == pytest.approx(total, rel=1e-5)


def test_adaptive_weight_reads_the_earlier_terms():
    """lambda balances the gradient of the losses listed before patchgan against the generator's."""
    state = make_state(steps=1)
    losses, adv = patchgan_of(state)
    state.loss_weights["adv"] = 1.0
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_hat = state.model.decode(state.model.encode(x))
    out = QuantizeOutput(x_hat, torch.zeros(2, dtype=torch.long), torch.zeros(()))
    _, terms = losses(state, x, x_hat, out)
    rec = ((x_hat - x) ** 2).mean()
    g = generator_loss(adv._logits(x_hat))
    expected = adaptive_weight(rec, g, state.model.last_layer, 0.8)
    assert adv.last_weight.item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["adv"].item() == pytest.approx((expected * g).item(), rel=1e-5)


def test_generator_term_leaves_discriminator_gradients_alone():
    state = make_state(steps=1)
    _, adv = patchgan_of(state)
    state.loss_weights["adv"] = 1.0
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_hat = state.model.decode(state.model.encode(x))
    state.terms = {"rec": ((x_hat - x) ** 2).mean()}
    term = adv.terms(state, x, x_hat, None)["adv"]
    term.backward()
    assert all(p.grad is None for p in adv.discriminator.parameters())
    assert all(p.requires_grad for p in adv.discriminator.parameters())
    assert state.model.last_layer.grad is not None


def test_discriminator_state_round_trips_through_a_checkpoint():
    from harness.recovery import checkpoint

    state = make_state(steps=1)
    _, adv = patchgan_of(state)
    assert state.extras["discriminator"] is adv  # checkpointed with the state
    payload = checkpoint.capture(state, [], "h")
    other_state = make_state(steps=1)
    _, other = patchgan_of(other_state)
    with torch.no_grad():
        for p in other.discriminator.parameters():
            p.add_(1.0)
    checkpoint.restore(other_state, [], payload)
    assert all(torch.equal(a, b) for a, b in zip(snapshot(adv.discriminator), snapshot(other.discriminator),
                                                  strict=True))


def test_model_without_last_layer_is_refused():
    from harness.errors import UsageError

    state = make_state(steps=1)
    state.model = nn.Conv2d(3, 3, 1)
    with pytest.raises(UsageError, match="last_layer"):
        PatchGAN().setup(state)


def test_negative_weight_is_refused():
    with pytest.raises(ValueError, match="weight"):
        PatchGAN(weight=-1.0)
