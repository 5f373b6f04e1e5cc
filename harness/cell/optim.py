"""``train.optimizer`` (adam, adamw, sgd) and ``train.lr_decay`` (x per epoch)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # checking train.optimizer imports no torch; building one does
    import torch

from harness.errors import UnknownNameError, UsageError

#: ``train.optimizer`` -> the [train] keys it reads besides ``lr``
OPTIMIZERS: dict[str, tuple[str, ...]] = {
    "adam": ("betas", "weight_decay"),
    "adamw": ("betas", "weight_decay"),
    "sgd": ("momentum", "weight_decay"),
}


def check_optimizer(name: str) -> None:
    if name not in OPTIMIZERS:
        raise UnknownNameError("train.optimizer", name, OPTIMIZERS)


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """``torch.optim.Adam``, ``AdamW`` or ``SGD`` from ``[train]``.

    adam/adamw: ``lr``, ``betas`` (0.9, 0.999), ``weight_decay`` (0; AdamW's is
    decoupled). sgd: ``lr``, ``momentum`` (0), ``weight_decay`` (0).
    """
    import torch

    name = cfg.get("optimizer", "adam")
    check_optimizer(name)
    lr, decay = float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(cfg.get("momentum", 0.0)), weight_decay=decay)
    betas = tuple(float(b) for b in cfg.get("betas", (0.9, 0.999)))
    if len(betas) != 2:
        raise UsageError(f"train.betas must hold two numbers, got {cfg.get('betas')!r}")
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, betas=betas, weight_decay=decay)


class LrDecay:
    """``train.lr_decay``: every parameter group's rate times ``factor`` after each epoch.

    As Beyond Stationarity's public NS-VQ code (x0.995 per epoch, an ``ExponentialLR``
    stepped once per epoch). A factor of 1 adds nothing to the loop. On resume
    the restored optimizer state already carries the decayed rates.
    """

    name = "lr-decay"

    def __init__(self, factor: float) -> None:
        if not 0 < factor <= 1:
            raise UsageError(f"train.lr_decay must be in (0, 1], got {factor!r}")
        self.factor = float(factor)

    def on_epoch_end(self, state: Any) -> None:
        for group in state.optimizer.param_groups:
            group["lr"] *= self.factor
