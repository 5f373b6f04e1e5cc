"""``train.loss``: the list of loss plugins a cell trains with, and their weighted sum.

A suite composes registered losses (``harness list losses``)::

    train.loss = ["mse", { name = "lpips", net = "vgg", weight = 1.0 }, { name = "patchgan", weight = 0.0 }]

Each entry is a name or a table ``{ name, weight, **params }``. The string
form of earlier suites (``"mse"``, ``"mse+lpips"``, ``"l1+lpips"`` with
``lpips_weight``, ``lpips_net``, ``discriminator``, ``disc_lr``, ``disc_weight``,
``disc_layers``) is translated to that list for one more suite version, with a
deprecation message. The host knows no loss: names, parameters and terms all
come from the plugins.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # tensors only pass through here: checking a suite's train.loss imports no torch
    from torch import Tensor

from harness.errors import UsageError

#: the string forms of ``train.loss`` earlier suites used (deprecated)
LEGACY_FORMS = ("mse", "mse+lpips", "l1+lpips")
#: [train] keys read only by the deprecated string form of ``train.loss``
LEGACY_KEYS = ("lpips_weight", "lpips_net", "discriminator", "disc_lr", "disc_weight", "disc_layers")


def loss_specs(train: dict[str, Any]) -> list[dict[str, Any]]:
    """``train.loss`` as ``[{"name": ..., "weight": ..., **params}, ...]``."""
    loss = train.get("loss", "mse")
    if isinstance(loss, str):
        return legacy_specs(loss, train)
    specs = []
    for i, item in enumerate(loss):
        if isinstance(item, str):
            specs.append({"name": item})
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            specs.append(dict(item))
        else:
            raise UsageError(f"train.loss[{i}] must be a loss name or a table with a 'name', got {item!r}")
    return specs


def legacy_specs(loss: str, train: dict[str, Any]) -> list[dict[str, Any]]:
    """The deprecated string form: ``"a+b"`` plus the ``lpips_*`` and ``disc*`` keys."""
    specs: list[dict[str, Any]] = []
    for name in loss.split("+"):
        if name == "lpips":
            specs.append({"name": "lpips", "weight": float(train.get("lpips_weight", 1.0)),
                          "net": train.get("lpips_net", "vgg")})
        else:
            specs.append({"name": name})
    if train.get("discriminator"):
        specs.append({"name": "patchgan", "weight": 0.0, "lr": train.get("disc_lr"),
                      "disc_weight": float(train.get("disc_weight", 0.8)),
                      "layers": int(train.get("disc_layers", 3))})
    return specs


def as_list_text(specs: list[dict[str, Any]]) -> str:
    """The TOML a user writes instead of the string form."""
    def one(spec: dict[str, Any]) -> str:
        if set(spec) == {"name"}:
            return f'"{spec["name"]}"'
        fields = ", ".join(f"{k} = {_toml(v)}" for k, v in spec.items() if v is not None)
        return "{ " + fields + " }"

    return "[" + ", ".join(one(s) for s in specs) + "]"


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def deprecation(train: dict[str, Any]) -> str | None:
    """The message for a suite's raw ``[train]`` that uses the string form, else ``None``."""
    legacy = [k for k in LEGACY_KEYS if k in train]
    if not isinstance(train.get("loss", []), str) and not legacy:
        return None
    if not isinstance(train.get("loss", "mse"), str):
        raise UsageError(f"train.{legacy[0]} belongs to the deprecated string form of train.loss; with "
                         "a list, give the loss its parameters, e.g. { name = \"lpips\", net = \"vgg\" }")
    return (f"train.loss = {train.get('loss', 'mse')!r} (and {', '.join(legacy) or 'no other key'}) is the "
            f"deprecated string form, accepted for one more suite version; write "
            f"train.loss = {as_list_text(legacy_specs(train.get('loss', 'mse'), train))}")


def warn_deprecated(message: str, where: str) -> None:
    print(f"harness: warning: {where}{message}", file=sys.stderr)


class LossSet:
    """The cell's loss plugins: their weighted sum each step, and their own steps after it.

    Weights live in ``state.loss_weights`` under each loss's ``key``: ``setup``
    puts the suite's ``weight`` there before schedules start and before a
    checkpoint is restored (which then wins); a term without a weight counts once. Terms computed so far in a step
    are in ``state.terms``, so a later loss (PatchGAN's adaptive weight) can
    read the reconstruction terms before it.
    """

    def __init__(self, losses: list[Any]) -> None:
        self.losses = losses
        self.steppers = [loss for loss in losses if callable(getattr(loss, "step", None))]

    def setup(self, state: Any) -> None:
        for loss in self.losses:
            state.loss_weights[loss.key] = loss.weight
            loss.setup(state)
            if loss.state_dict():  # checkpointed with the state (harness.recovery.checkpoint)
                state.extras[getattr(loss, "state_key", f"loss.{loss.name}")] = loss

    def __call__(self, state: Any, x: Tensor, x_hat: Tensor, out: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """``(weighted sum, unweighted terms)``; the quantizer's loss is the term ``quantizer``."""
        weights = state.loss_weights
        terms: dict[str, Tensor] = {}
        state.terms = terms
        for loss in self.losses:
            if loss.active(state):
                terms.update(loss.terms(state, x, x_hat, out))
        terms["quantizer"] = out.loss
        return weighted_sum(terms, weights), terms

    def step(self, state: Any, x: Tensor, x_hat: Tensor) -> dict[str, Tensor]:
        """The losses' own optimiser steps (a discriminator's), after the model's."""
        logs: dict[str, Tensor] = {}
        for loss in self.steppers:
            if loss.active(state):
                logs.update(loss.step(state, x, x_hat))
        return logs


def weighted_sum(terms: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """``sum(w_name * term)``; unit weights add no multiplication to the step."""
    total = None
    for name, value in terms.items():
        weight = weights.get(name, 1.0)
        value = value if weight == 1.0 else weight * value
        total = value if total is None else total + value
    return total


def build_losses(host: Any, specs: list[Any]) -> LossSet:
    """Instantiate the loss plugins of a ``train.loss`` list (checked by ``check_suite`` before any cell)."""
    losses = []
    for spec in loss_specs({"loss": list(specs)}):
        params = {k: v for k, v in spec.items() if k != "name"}
        losses.append(host.losses.get(spec["name"]).obj(**params))
    return LossSet(losses)
