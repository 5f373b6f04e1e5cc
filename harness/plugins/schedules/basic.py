"""Simple schedules."""

from __future__ import annotations

from typing import Any

from harness.contracts import Schedule


class Constant(Schedule):
    """Holds the named loss weights fixed for the whole run (the default recipe).

    ``weights`` maps loss terms (``rec``, ``quantizer``, ...) to constant factors;
    empty means every term keeps weight 1.
    """

    name = "constant"

    def __init__(self, weights: dict[str, float] | None = None) -> None:
        self.weights = dict(weights or {})

    def on_train_start(self, state: Any) -> None:
        state.loss_weights.update(self.weights)
