"""The toy2d-drift model: a 2D encoder that drifts during training, as in Beyond Stationarity's demos."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.contracts import Model

DEMOS = ("translation", "expansion", "shrink", "split")
#: the drift's size per demo when ``strength`` is not given (see DriftingEncoder)
DEFAULT_STRENGTH = {"translation": 3.0, "expansion": 3.0, "shrink": 0.25, "split": 1.5}


class DriftingEncoder(nn.Module):
    """``z = x A_t + b_t``, with ``(A_t, b_t)`` moved toward a target map one step per training batch.

    Starts at the identity; each forward in training mode first encodes the
    batch with the current map, then takes one step
    ``theta <- theta + rate (theta* - theta)`` toward the demo's target map
    ``theta*``: gradient descent on ``1/2 ||theta - theta*||^2``, which is how
    Beyond Stationarity's demos "learn" their drift state online. The state is a set of
    buffers (checkpointed, never touched by the optimizer); eval mode (and a
    frozen encoder) encodes without drifting.
    """

    def __init__(self, demo: str, strength: float, rate: float) -> None:
        super().__init__()
        self.demo, self.rate = demo, rate
        target_a, target_b = torch.eye(2), torch.zeros(2)
        if demo == "translation":
            target_b = torch.tensor([strength, 0.0])
        elif demo in ("expansion", "shrink"):
            target_a = strength * torch.eye(2)
        else:  # split: b_t scaled by the sign of the first coordinate
            target_b = torch.tensor([strength, strength])
        self.register_buffer("a", torch.eye(2))
        self.register_buffer("b", torch.zeros(2))
        self.register_buffer("target_a", target_a)
        self.register_buffer("target_b", target_b)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def encode(self, x: Tensor) -> Tensor:
        shift = self.b
        if self.demo == "split":
            side = torch.where(x[:, :1] >= 0, 1.0, -1.0)
            shift = side * self.b
        return x @ self.a + shift

    def forward(self, x: Tensor) -> Tensor:
        z = self.encode(x)
        if self.training:
            self.advance()
        return z

    @torch.no_grad()
    def advance(self, steps: int = 1) -> None:
        keep = (1.0 - self.rate) ** steps
        self.a.copy_(self.target_a + keep * (self.a - self.target_a))
        self.b.copy_(self.target_b + keep * (self.b - self.target_b))
        self.steps += steps


class Drift2d(Model):
    """A 2D encoder that drifts during training (translation, expansion, shrink, split) and an affine decoder.

    Beyond Stationarity, section 11 (toy demos): codebook-update rules are compared "on a
    simple non-stationary 2D dataset where a global drift variable evolves
    during training"; the paper's point (section 3.1) is that *encoder* drift
    leaves codes behind as dead codes. Here the drift is the encoder's: the data
    (dataset ``drift2d``) is a fixed cloud and the encoder maps it through a map
    that moves during training (:class:`DriftingEncoder`), so batches stay i.i.d.
    samples of a static dataset, the drift follows training time, survives
    resuming (its state is in the checkpoint), and the eval split is encoded by
    the final map: dead codes are measured on the final distribution.

    Demos (the formulas were lost from the paper's text; reconstructed from its
    prose): ``translation``: ``z = x + b``, ``b -> (strength, 0)``, default 3
    (1.5 widths of the unit cloud); ``expansion``: ``z = x A``, ``A -> strength I``,
    default 3; ``shrink`` (the paper's shrink variant of expansion): default 0.25;
    ``split``: ``z = x + sign(x_1) b``, ``b -> (strength, strength)``, default 1.5:
    the cloud splits by the sign of its first coordinate into halves drifting
    to opposite quadrants. ``rate = 0.005``: the map covers ``1 - 0.995^t`` of
    the way after ``t`` steps (63% after 200, 99% after 920), so the full
    profile's 1500 steps end on the target map.

    With this cloud the expansion demo leaves no dead codes under any rule:
    scaling up about a point of a convex cloud uncovers nothing the cloud covered,
    and codes trained on past latents lie inside it (the suite records this).

    The decoder is a learned affine map initialised to the identity: the demos
    have no decoder, but a trainable path keeps every quantizer trainable
    (EMA's codebook has no gradient); it does not move the latents or the codes.
    """

    name = "drift2d"
    paper = "Beyond Stationarity (section 11, toy demos)"

    def __init__(self, latent_dim: int = 2, demo: str = "translation", strength: float | None = None,
                 rate: float = 0.005) -> None:
        super().__init__(latent_dim)
        if latent_dim != 2:
            raise ValueError(f"drift2d works in the plane: latent dim must be 2, got {latent_dim}")
        if demo not in DEMOS:
            from harness.errors import UnknownNameError

            raise UnknownNameError("drift2d demo", demo, DEMOS)
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"rate must lie in (0, 1], got {rate}")
        strength = DEFAULT_STRENGTH[demo] if strength is None else float(strength)
        if demo in ("expansion", "shrink") and strength <= 0:
            raise ValueError(f"{demo}: strength is a scale factor and must be positive, got {strength}")
        self._encoder = DriftingEncoder(demo, strength, rate)
        self._decoder = nn.Linear(2, 2)
        with torch.no_grad():
            self._decoder.weight.copy_(torch.eye(2))
            self._decoder.bias.zero_()

    @property
    def last_layer(self) -> Tensor:
        return self._decoder.weight
