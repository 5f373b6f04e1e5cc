"""The schedule test kit: the contract every schedule plugin keeps (docs/hooks.md).

A schedule acts on the training state through ``on_train_start``, ``on_step``
and ``on_epoch_end`` inside the harness's own loop. It must leave the state
usable (finite weights, finite loss weights and learning rates), act the same
way on the same run, and survive an interruption: a run stopped at a checkpoint
and resumed ends exactly where an uninterrupted run ends (its counters are
public number attributes, which checkpoints carry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.testing.kit import Checks, add_tests, case_of, check_declares, expect, label, lookup
from harness.testing.loop import (
    TinyTraining,
    differences,
    prepare,
    resume_differences,
    snapshot,
    train,
)


@dataclass
class ScheduleCase(TinyTraining):
    """One schedule under test (its ``params``) and the tiny training it acts on."""

    schedule: str | type = ""
    params: dict[str, Any] = field(default_factory=dict)
    #: loss plugins the cell trains with (the reconstruction term, ``rec``)
    losses: tuple[str, ...] = ("mse",)

    @property
    def cls(self) -> type:
        return lookup("schedules", self.schedule)

    @property
    def label(self) -> str:
        return label(self.schedule)

    def make(self) -> tuple[list[Any], list[Any]]:
        """Fresh plugin objects for one run: ``([schedule], [losses])``."""
        return [self.cls(**self.params)], [lookup("losses", name)() for name in self.losses]

    def run(self) -> tuple[Any, list[Any]]:
        schedules, losses = self.make()
        state, loss_set = prepare(self, schedules, losses)
        return train(self, state, loss_set, schedules), schedules


SCHEDULE_CHECKS = Checks()


@SCHEDULE_CHECKS("declares")
def check_schedule_declares(case: ScheduleCase) -> None:
    """A name and a summary line (``harness list schedules``)."""
    check_declares("schedules", case.cls, {})


@SCHEDULE_CHECKS("trains")
def check_trains(case: ScheduleCase) -> None:
    """A whole run with the schedule does not diverge and leaves finite weights, loss weights and
    learning rates."""
    from harness.errors import Diverged

    try:
        state, _ = case.run()
    except Diverged as exc:
        raise AssertionError(f"{case.label}: training with the schedule {exc}") from exc
    expect(state.step == case.steps, f"{case.label}: the run stopped at step {state.step} of {case.steps}")
    for name, module in (("model", state.model), ("quantizer", state.quantizer)):
        bad = [k for k, v in module.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        expect(not bad, f"{case.label}: non-finite {name} weights after training: {bad}")
    for key, weight in state.loss_weights.items():
        expect(isinstance(weight, (int, float)) and math.isfinite(weight),
               f"{case.label}: loss weight {key!r} = {weight!r} is not a finite number")
    for group in state.optimizer.param_groups:
        expect(math.isfinite(group["lr"]) and group["lr"] >= 0, f"{case.label}: learning rate {group['lr']!r}")


@SCHEDULE_CHECKS("deterministic")
def check_schedule_deterministic(case: ScheduleCase) -> None:
    """Two identical runs end in identical states."""
    (a, sa), (b, sb) = case.run(), case.run()
    diff = differences(snapshot(a, sa), snapshot(b, sb))
    expect(not diff, f"{case.label}: two identical runs differ at {diff[:5]}")


@SCHEDULE_CHECKS("resumes")
def check_schedule_resumes(case: ScheduleCase) -> None:
    """Stopped at half, checkpointed and resumed, a run ends where an uninterrupted one does."""
    diff = resume_differences(case, case.make)
    expect(not diff, f"{case.label}: a resumed run differs from an uninterrupted one at {diff[:5]}: keep "
                     "the schedule's progress in public number attributes (checkpoints carry those), "
                     "not in local variables or private objects")


class ScheduleConformance:
    """Subclass as ``Test<Something>`` and set ``schedule`` (and ``params``): pytest runs every check.

    Other class attributes mirror :class:`ScheduleCase` and :class:`~harness.testing.loop.TinyTraining`:
    ``quantizer``, ``quantizer_params``, ``model``, ``steps``, ``steps_per_epoch``, ...
    """

    schedule: str | type | None = None

    def conformance_case(self) -> ScheduleCase:
        return case_of(self, ScheduleCase, "schedule")


add_tests(ScheduleConformance, SCHEDULE_CHECKS)
