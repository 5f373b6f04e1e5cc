"""The loss kit passes every registered loss and fails losses that break the contract."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from harness.contracts import Loss
from harness.host import get_host
from harness.testing import LOSS_CHECKS, LossCase, LossConformance

IMAGES = {"model": "conv-small", "input_shape": (3, 32, 32), "latent_dim": 4, "batch": 2, "steps": 4,
          "steps_per_epoch": 2}
#: what each built-in needs: image inputs for the perceptual and adversarial ones
CASES: dict[str, dict[str, Any]] = {
    "mse": {}, "l1": {},
    "lpips": {**IMAGES, "params": {"net": "alex"}},  # skips where the AlexNet weights are missing
    "patchgan": {**IMAGES, "before": ("mse",), "params": {"layers": 2}},
}


@pytest.mark.parametrize("check", list(LOSS_CHECKS))
@pytest.mark.parametrize("name", get_host().losses.names())
def test_every_registered_loss(name: str, check: str) -> None:
    LOSS_CHECKS[check](LossCase(loss=name, **CASES.get(name, IMAGES)))


class TestL1AsAPluginWouldTestIt(LossConformance):
    loss = "l1"
    weight = 0.5


# -- losses that break the contract: the kit must fail each, naming the problem ----------------

class _Rec(Loss):
    """Mean squared reconstruction error."""

    name = "kit-rec"
    term = "kit"

    def terms(self, state: Any, x: Tensor, x_hat: Tensor, out: Any) -> dict[str, Tensor]:
        return {self.term: F.mse_loss(x_hat, x)}


class _Logs(_Rec):
    """Reads its value back to the host every step."""

    def terms(self, state: Any, x: Tensor, x_hat: Tensor, out: Any) -> dict[str, Tensor]:
        value = F.mse_loss(x_hat, x)
        self.last = value.item()
        return {self.term: value}


class _Detached(_Rec):
    """Sends no gradient."""

    def terms(self, state: Any, x: Tensor, x_hat: Tensor, out: Any) -> dict[str, Tensor]:
        return {self.term: F.mse_loss(x_hat, x).detach()}


class _Renamed(_Rec):
    """Returns its term under another name than its key."""

    def terms(self, state: Any, x: Tensor, x_hat: Tensor, out: Any) -> dict[str, Tensor]:
        return {"other": F.mse_loss(x_hat, x)}


class _AlwaysOn(_Rec):
    """Ignores its weight."""

    def active(self, state: Any) -> bool:
        return True


class _ForgetfulScale(_Rec):
    """Scales its term by a running count it never returns from state_dict."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.calls = torch.zeros(())

    def terms(self, state: Any, x: Tensor, x_hat: Tensor, out: Any) -> dict[str, Tensor]:
        self.calls += 1
        return {self.term: F.mse_loss(x_hat, x) / self.calls}


@pytest.mark.parametrize(("plugin", "check", "message"), [
    (_Logs, "no_host_reads", r"calls Tensor.item\(\)"),
    (_Detached, "terms", "has no gradient path"),
    (_Renamed, "terms", "must include 'kit'"),
    (_AlwaysOn, "zero_weight_is_off", "still active at weight 0"),
    (_ForgetfulScale, "resumes", "a resumed run differs from an uninterrupted one"),
])
def test_the_kit_fails_a_broken_loss(plugin: type, check: str, message: str) -> None:
    LOSS_CHECKS[check](LossCase(loss=_Rec))  # the sound one passes the same check
    with pytest.raises(AssertionError, match=message):
        LOSS_CHECKS[check](LossCase(loss=plugin))
