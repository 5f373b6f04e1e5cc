"""The schedule kit passes every registered schedule and fails schedules that break the contract."""

from __future__ import annotations

import random
from typing import Any

import pytest

from harness.contracts import Schedule
from harness.host import get_host
from harness.testing import SCHEDULE_CHECKS, ScheduleCase, ScheduleConformance

#: what each built-in needs to act within the kit's 12 steps (and the quantizer it acts on)
CASES: dict[str, dict[str, Any]] = {
    "codebook-init-scale": {"params": {"scale": 0.1}},
    "constant": {"params": {"weights": {"quantizer": 0.5}}},
    "decay": {"params": {"attribute": "beta", "factor": 0.5}},
    "warmup-cosine": {"params": {"warmup_steps": 3}},
    "staged-freeze": {"params": {"release_decoder_at": 5}},
    "nsvq-stages": {"quantizer": "nsvq", "params": {"freeze_encoder_at": 5}},
}
#: known defects the kit found, each a strict xfail: fixing the plugin turns it into a failure here
KNOWN: dict[tuple[str, str], str] = {}


def _params() -> list[Any]:
    out = []
    for name in get_host().schedules.names():
        for check in SCHEDULE_CHECKS:
            marks = [pytest.mark.xfail(strict=True, reason=KNOWN[name, check])] if (name, check) in KNOWN else []
            out.append(pytest.param(name, check, marks=marks, id=f"{name}-{check}"))
    return out


@pytest.mark.parametrize(("name", "check"), _params())
def test_every_registered_schedule(name: str, check: str) -> None:
    SCHEDULE_CHECKS[check](ScheduleCase(schedule=name, **CASES.get(name, {})))


class TestDecayAsAPluginWouldTestIt(ScheduleConformance):
    schedule = "decay"
    params = {"attribute": "beta", "factor": 0.8}


# -- schedules that break the contract: the kit must fail each, naming the problem -------------

class _Anneal(Schedule):
    """Anneals the quantizer loss weight with the steps seen (a public counter: checkpoints carry it)."""

    name = "kit-anneal"

    def __init__(self) -> None:
        self.seen = 0

    def on_step(self, state: Any) -> None:
        self.seen += 1
        state.loss_weights["quantizer"] = 1.0 / (1 + self.seen)


class _PrivateCounter(_Anneal):
    """Counts in a private dict, which no checkpoint carries."""

    def __init__(self) -> None:
        self._count = {"seen": 0}

    def on_step(self, state: Any) -> None:
        self._count["seen"] += 1
        state.loss_weights["quantizer"] = 1.0 / (1 + self._count["seen"])


class _Jitter(_Anneal):
    """Draws its weight from Python's unseeded generator."""

    def on_step(self, state: Any) -> None:
        state.loss_weights["quantizer"] = random.random()


class _InfiniteRate(_Anneal):
    """Divides the learning rate by zero at step 5."""

    def on_step(self, state: Any) -> None:
        if state.step == 5:
            for group in state.optimizer.param_groups:
                group["lr"] = float("inf")


@pytest.mark.parametrize(("plugin", "check", "message"), [
    (_PrivateCounter, "resumes", "a resumed run differs from an uninterrupted one"),
    (_Jitter, "deterministic", "two identical runs differ"),
    (_InfiniteRate, "trains", "training with the schedule diverged at step"),
])
def test_the_kit_fails_a_broken_schedule(plugin: type, check: str, message: str) -> None:
    SCHEDULE_CHECKS[check](ScheduleCase(schedule=_Anneal))  # the sound one passes the same check
    with pytest.raises(AssertionError, match=message):
        SCHEDULE_CHECKS[check](ScheduleCase(schedule=plugin))
