"""Per-epoch decay of a quantizer attribute (NS-VQ's kernel weight)."""

from __future__ import annotations

import math
from typing import Any

import torch

from harness.contracts import Schedule
from harness.errors import UnknownNameError


def numeric_attributes(module: torch.nn.Module) -> list[str]:
    """Public attributes a decay may act on: plain numbers and one-element buffers."""
    names = [k for k, v in vars(module).items()
             if not k.startswith("_") and isinstance(v, (int, float)) and not isinstance(v, bool)]
    names += [k for k, b in module.named_buffers(recurse=False) if b.numel() == 1 and b.is_floating_point()]
    return sorted(set(names))


class Decay(Schedule):
    """Multiplies a named quantizer attribute by ``factor`` after every epoch.

    Beyond Stationarity (NS-VQ, section 4): the weight of the kernel updates of
    non-selected codes "starts at 1 and decays x0.9 per epoch", so NS-VQ
    becomes vanilla VQ as training converges. The public NS-VQ code instead
    halves a temperature per epoch (docs/methods.md, ``ns-vq``); this schedule serves the
    paper's form and any other per-epoch decay.

    Parameters: ``attribute`` (required: the quantizer attribute, a number or a
    one-element float buffer), ``factor = 0.9`` (Beyond Stationarity), ``min_value``
    (optional floor, none by default as in the paper). The value after epoch
    ``e`` (counted from 0) is ``v0 * factor ** (e + 1)``, floored at
    ``min_value``. An attribute the quantizer lacks is an error at train start
    that lists the attributes it has, with close matches.
    """

    name = "decay"
    paper = "Beyond Stationarity (NS-VQ: kernel weight x0.9 per epoch)"

    def __init__(self, attribute: str, factor: float = 0.9, min_value: float | None = None) -> None:
        if not attribute:
            raise ValueError("decay: 'attribute' must name a quantizer attribute")
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"decay: factor must be a positive number, got {factor!r}")
        self.attribute, self.factor, self.min_value = attribute, float(factor), min_value

    def on_train_start(self, state: Any) -> None:
        known = numeric_attributes(state.quantizer)
        if self.attribute not in known:
            kind = f"numeric attribute of quantizer {type(state.quantizer).__name__}"
            listing = ", ".join(known) or "none"
            raise UnknownNameError(kind, self.attribute, known,
                                   f" (decay schedule; its numeric attributes: {listing})")
        state.extras[f"decay/{self.attribute}"] = self.value(state.quantizer)

    def value(self, quantizer: torch.nn.Module) -> float:
        return float(getattr(quantizer, self.attribute))

    def on_epoch_end(self, state: Any) -> None:
        q = state.quantizer
        new = self.value(q) * self.factor
        if self.min_value is not None:
            new = max(new, float(self.min_value))
        current = getattr(q, self.attribute)
        if isinstance(current, torch.Tensor):
            with torch.no_grad():
                current.fill_(new)
        else:
            setattr(q, self.attribute, new)
        state.extras[f"decay/{self.attribute}"] = new
