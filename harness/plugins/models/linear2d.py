"""The toy suites' model."""

from __future__ import annotations

from torch import nn

from harness.contracts import Model


class Linear2d(Model):
    """Linear encoder and decoder between R^2 and the latent space (Liu 2026).

    Liu 2026 uses ``R^2 -> R^2`` linear maps; ``latent_dim`` other than 2 is
    allowed for experiments. Both layers have biases (PyTorch's default
    ``nn.Linear``), which the blog does not specify.
    """

    name = "linear2d"
    paper = "Liu 2026"

    def __init__(self, latent_dim: int = 2, in_dim: int = 2) -> None:
        super().__init__(latent_dim)
        self._encoder = nn.Linear(in_dim, latent_dim)
        self._decoder = nn.Linear(latent_dim, in_dim)

    @property
    def last_layer(self):
        return self._decoder.weight
