"""The model kit passes every registered model and fails models that break the contract."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from harness.contracts import Model
from harness.host import get_host
from harness.testing import MODEL_CHECKS, ModelCase, ModelConformance

IMAGES = {"input_shape": (3, 16, 16)}
#: what each built-in needs at the kit's sizes: image inputs, narrow layers to stay fast
CASES: dict[str, dict[str, Any]] = {
    "linear2d": {"latent_dim": 2},
    "drift2d": {"latent_dim": 2},
    "conv-small": IMAGES,
    "vqvae-celeba": {**IMAGES, "params": {"hidden": [8, 16]}},
    "taming-3stage": {**IMAGES, "params": {"channels": [8, 16, 16]}},
}


@pytest.mark.parametrize("check", list(MODEL_CHECKS))
@pytest.mark.parametrize("name", get_host().models.names())
def test_every_registered_model(name: str, check: str) -> None:
    MODEL_CHECKS[check](ModelCase(name, **CASES.get(name, IMAGES)))


class TestConvSmallAsAPluginWouldTestIt(ModelConformance):
    model = "conv-small"
    input_shape = (3, 16, 16)


# -- models that break the contract: the kit must fail each, naming the problem ----------------

class _Linear(Model):
    """A linear 2D model for the kit's own tests."""

    name = "kit-linear"

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self._encoder = nn.Linear(2, latent_dim)
        self._decoder = nn.Linear(latent_dim, 2)


class _WrongWidth(_Linear):
    """Encodes to latent_dim + 1."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self._encoder = nn.Linear(2, latent_dim + 1)
        self._decoder = nn.Linear(latent_dim + 1, 2)


class _BatchStatistics(_Linear):
    """Normalises codes by the batch's mean even in eval mode."""

    def encode(self, x: Tensor) -> Tensor:
        z = self.encoder(x)
        return z - z.mean(0, keepdim=True)


class _Orphan(_Linear):
    """A trainable parameter that nothing uses."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.unused = nn.Parameter(torch.zeros(3))


class _WrongLastLayer(_Linear):
    """Points the adaptive weight at the encoder."""

    @property
    def last_layer(self) -> Tensor:
        return self._encoder.weight


class _NumpyInit(_Linear):
    """Initialises from NumPy's unseeded generator: torch.manual_seed does not reach it."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        with torch.no_grad():
            self._encoder.weight.copy_(torch.from_numpy(np.random.default_rng().normal(size=(latent_dim, 2))))


@pytest.mark.parametrize(("plugin", "check", "message"), [
    (_WrongWidth, "encode_shape", r"encode must give \(4, 4\)"),
    (_BatchStatistics, "batch_independent", "differs from its items one by one"),
    (_Orphan, "gradients", r"no gradient reaches \['unused'\]"),
    (_WrongLastLayer, "last_layer", "one of the decoder's parameters"),
    (_NumpyInit, "deterministic", "two builds under one seed differ"),
])
def test_the_kit_fails_a_broken_model(plugin: type, check: str, message: str) -> None:
    MODEL_CHECKS[check](ModelCase(_Linear))  # the sound one passes the same check
    with pytest.raises(AssertionError, match=message):
        MODEL_CHECKS[check](ModelCase(plugin))
