"""How the nets run on a device: bf16 autocast and channels-last, the same for the host's loop and
a plugin's own nets (a discriminator), so one suite setting (``train.precision``,
``train.channels_last``) means the same everywhere.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn


def autocast_for(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """bf16 autocast for the nets on CUDA (``precision`` auto or bf16), none on CPU."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def channels_last(config: dict[str, Any], device: torch.device, model: nn.Module) -> bool:
    """Channels-last memory format for conv nets on CUDA (``train.channels_last``)."""
    return (device.type == "cuda" and bool(config["train"].get("channels_last", True))
            and any(isinstance(m, nn.Conv2d) for m in model.modules()))
