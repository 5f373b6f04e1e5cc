"""The loss test kit: the contract every loss plugin keeps (docs/hooks.md).

``L(weight=1.0, **params)``; ``terms(state, x, x_hat, out)`` returns unweighted
0-dim float tensors including its main term (``key``) with a gradient path to
the model; it never reads a tensor back to the host (no ``.item()``: the loop
does not sync the device between log steps); a zero weight turns it off; and
its state (a discriminator) survives a checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from harness.testing.kit import Checks, add_tests, case_of, check_declares, expect, label, lookup
from harness.testing.loop import (
    TinyTraining,
    differences,
    prepare,
    resume_differences,
    snapshot,
    train,
)

#: Tensor methods that copy a value to the host (a device sync on a GPU)
HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__")


class HostRead(AssertionError):
    """A loss read a tensor back to the host inside ``terms``."""


@contextmanager
def no_host_reads(what: str, graph_only: bool = False) -> Iterator[None]:
    """Inside, reading a tensor's value on the host raises :class:`HostRead` naming ``what``.

    ``graph_only``: refuse only values computed in the autograd graph (an optimiser's own
    step counter, a CPU scalar by design, is read by PyTorch itself).
    """
    saved = {name: getattr(Tensor, name) for name in HOST_READS}

    def refuse(name: str) -> Any:
        def read(self: Tensor, *args: Any, **kwargs: Any) -> Any:
            if graph_only and self.grad_fn is None and not self.requires_grad:
                return saved[name](self, *args, **kwargs)
            raise HostRead(f"{what} calls Tensor.{name}(): a device sync every step (keep values as tensors)")

        return read

    try:
        for name in HOST_READS:
            setattr(Tensor, name, refuse(name))
        yield
    finally:
        for name, method in saved.items():
            setattr(Tensor, name, method)


@dataclass
class LossCase(TinyTraining):
    """One loss under test (``weight``, ``params``), after the ``before`` losses, in a tiny training."""

    loss: str | type = ""
    params: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    #: losses listed before it in ``train.loss`` (PatchGAN's adaptive weight reads ``rec``)
    before: tuple[str, ...] = ()

    @property
    def cls(self) -> type:
        return lookup("losses", self.loss)

    @property
    def label(self) -> str:
        return label(self.loss)

    def build(self) -> Any:
        return self.cls(weight=self.weight, **self.params)

    def make(self) -> tuple[list[Any], list[Any]]:
        return [], [*(lookup("losses", name)() for name in self.before), self.build()]


def one_forward(case: LossCase) -> tuple[Any, Any, Tensor, Tensor, Any]:
    """A set-up state and the loss under test, with one batch through the model: ``(state, loss, x, x_hat, out)``."""
    from harness.cell.forward import reconstruct
    from harness.testing.loop import batches

    _, losses = case.make()
    state, loss_set = prepare(case, [], losses)
    x = next(batches(case, 0))
    x_hat, out, _ = reconstruct(state.model, state.quantizer, x, "fp32")
    for earlier in losses[:-1]:  # what the losses before it put in state.terms
        state.terms.update(earlier.terms(state, x, x_hat, out))
    return state, losses[-1], x, x_hat, out


LOSS_CHECKS = Checks()


@LOSS_CHECKS("declares")
def check_loss_declares(case: LossCase) -> None:
    """A name and a summary line; ``key`` (its weight's name in ``state.loss_weights``) is a string."""
    check_declares("losses", case.cls, {})
    expect(isinstance(case.build().key, str) and bool(case.build().key), f"{case.label}: `key` must be a name")


@LOSS_CHECKS("terms")
def check_terms(case: LossCase) -> None:
    """``terms`` gives finite 0-dim float tensors, its main term among them, with a gradient to the model."""
    state, loss, x, x_hat, out = one_forward(case)
    terms = loss.terms(state, x, x_hat, out)
    expect(isinstance(terms, dict) and loss.key in terms, f"{case.label}: terms() must include {loss.key!r}")
    for name, value in terms.items():
        expect(isinstance(value, Tensor) and value.dim() == 0 and value.is_floating_point(),
               f"{case.label}: term {name!r} must be a 0-dim float tensor, got {value!r}")
        expect(bool(torch.isfinite(value)), f"{case.label}: term {name!r} is not finite")
    expect(terms[loss.key].requires_grad, f"{case.label}: term {loss.key!r} has no gradient path")
    terms[loss.key].backward()
    grads = [p.grad for p in state.model.parameters() if p.grad is not None]
    expect(bool(grads) and any(bool(g.abs().sum() > 0) for g in grads),
           f"{case.label}: term {loss.key!r} sends no gradient to the model")


@LOSS_CHECKS("no_host_reads")
def check_no_host_reads(case: LossCase) -> None:
    """``terms`` never reads a tensor's value on the host (no device sync per step); ``step``
    never reads a value it computed."""
    state, loss, x, x_hat, out = one_forward(case)
    with no_host_reads(f"{case.label}.terms"):
        terms = loss.terms(state, x, x_hat, out)
    total = sum(terms.values())
    total.backward()
    if callable(getattr(loss, "step", None)):
        with no_host_reads(f"{case.label}.step", graph_only=True):
            loss.step(state, x, x_hat.detach())


@LOSS_CHECKS("zero_weight_is_off")
def check_zero_weight_is_off(case: LossCase) -> None:
    """While its weight (``state.loss_weights[key]``, which schedules change) is zero it is inactive."""
    state, loss, *_ = one_forward(case)
    expect(loss.active(state), f"{case.label}: inactive at weight {case.weight}")
    state.loss_weights[loss.key] = 0.0
    expect(not loss.active(state), f"{case.label}: still active at weight 0")


@LOSS_CHECKS("trains")
def check_loss_trains(case: LossCase) -> None:
    """A few steps of the harness's loop with it: deterministic, finite."""
    runs = []
    for _ in range(2):
        schedules, losses = case.make()
        state, loss_set = prepare(case, schedules, losses)
        runs.append(snapshot(train(case, state, loss_set, schedules), schedules))
    diff = differences(*runs)
    expect(not diff, f"{case.label}: two identical runs differ at {diff[:5]}")


@LOSS_CHECKS("resumes")
def check_loss_resumes(case: LossCase) -> None:
    """Stopped at half, checkpointed and resumed, a run ends where an uninterrupted one does
    (a loss with state returns it from ``state_dict``)."""
    diff = resume_differences(case, case.make)
    expect(not diff, f"{case.label}: a resumed run differs from an uninterrupted one at {diff[:5]}")


class LossConformance:
    """Subclass as ``Test<Something>`` and set ``loss``: pytest runs every loss check.

    Other class attributes mirror :class:`LossCase`: ``params``, ``weight``,
    ``before``, and the tiny training (``model``, ``input_shape``, ``steps``, ...).
    """

    loss: str | type | None = None

    def conformance_case(self) -> LossCase:
        return case_of(self, LossCase, "loss")


add_tests(LossConformance, LOSS_CHECKS)
