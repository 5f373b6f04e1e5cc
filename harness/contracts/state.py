"""What the training loop hands its callbacks: :class:`TrainState`, and :class:`Callback`, whose
subclasses are checked when they are defined, so a misspelled hook is an error, not a hook never called.

Importing this module imports no torch: the loop and the plugins that use it already have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.errors import suggest

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

#: every hook the training loop calls, in the order of a step (docs/hooks.md)
HOOKS = ("on_train_start", "on_step", "after_step", "on_log", "on_epoch_end", "on_train_end")
#: method names that look like hooks: a subclass method with one of these prefixes must be a hook
HOOK_PREFIXES = ("on_", "after_", "before_")


@dataclass
class TrainState:
    """Everything a schedule or loss may read or change during training.

    ``loss_weights`` scales the named loss terms (``rec``, ``quantizer``,
    ``lpips``, ``adv``, ...); ``terms`` holds the current step's unweighted terms
    computed so far; ``extras`` is free space for schedules and the state of
    losses (a discriminator, checkpointed with the rest).
    """

    model: nn.Module
    quantizer: nn.Module
    optimizer: torch.optim.Optimizer
    config: dict[str, Any]
    device: torch.device
    steps_total: int
    steps_per_epoch: int
    step: int = 0
    epoch: int = 0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"rec": 1.0, "quantizer": 1.0})
    extras: dict[str, Any] = field(default_factory=dict)
    terms: dict[str, Tensor] = field(default_factory=dict)
    #: model + quantizer under DistributedDataParallel when run by torchrun (harness.cell.distributed)
    wrapped: nn.Module | None = None
    stop: bool = False

    @property
    def encoder(self) -> nn.Module:
        return getattr(self.model, "encoder", self.model)

    @property
    def decoder(self) -> nn.Module:
        return getattr(self.model, "decoder", self.model)


class Callback:
    """Base for what the loop calls around its steps (schedules are callbacks); override any hook.

    The loop calls a hook only where a callback defines it, so a subclass method named like a hook
    (``on_...``, ``after_...``, ``before_...``) that is not one of :data:`HOOKS` raises
    ``TypeError`` when the class is defined: ``on_epoch_ends`` would otherwise never run.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr, value in vars(cls).items():
            if attr.startswith(HOOK_PREFIXES) and attr not in HOOKS and callable(value):
                close = suggest(attr, HOOKS)
                hint = f"did you mean {close[0]!r}?" if close else f"the hooks are {', '.join(HOOKS)}"
                raise TypeError(f"{cls.__module__}.{cls.__qualname__}.{attr} is not a training hook, so the "
                                f"loop would never call it: {hint}")


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze (``False``) or unfreeze a part of the model, as staged schedules do."""
    for p in module.parameters():
        p.requires_grad_(flag)
