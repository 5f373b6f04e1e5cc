"""The plugin kinds' base classes (docs/architecture.md, "The contracts"); plugins import them from
:mod:`harness.contracts`, the host from here.

Plugins need not inherit from these classes (the host duck-types them), but the
base classes give the defaults the host relies on and a place to read the rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from harness.contracts.state import Callback, TrainState


@dataclass
class QuantizeOutput:
    """What ``Quantizer.forward(z)`` returns for tokens ``z`` of shape ``(N, D)``.

    ``logs`` values may stay tensors: the host converts them when it flushes to
    MLflow, so a training step never forces a device sync for logging.
    """

    z_q: Tensor
    indices: Tensor
    loss: Tensor
    logs: dict[str, Tensor | float] = field(default_factory=dict)


class Quantizer(nn.Module):
    """Base class for quantizers: ``Q(dim=D, codebook_size=K, **params)``.

    Subclasses set ``name``, ``paper`` (a citation, e.g. ``"Zhu et al. 2024, SimVQ"``; docs/references.md) and
    implement :meth:`quantize`; the base :meth:`forward` calls it in float32.
    Multi-stage quantizers set ``num_stages`` and return indices of shape
    ``(N, num_stages)``; ``stage_sizes`` gives the number of codes per stage
    (utilization is reported per stage).
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    #: knobs ``harness tune`` may search when a suite's ``[tuning]`` sets ``plugin_knobs = true``:
    #: constructor parameter -> ``(low, high, scale)`` with scale ``"log"`` or ``"linear"``
    tuning_space: ClassVar[dict[str, tuple[float, float, str]]] = {}

    def __init__(self, dim: int, codebook_size: int) -> None:
        super().__init__()
        if dim < 1 or codebook_size < 1:
            raise ValueError(f"dim and codebook_size must be positive, got {dim} and {codebook_size}")
        self.dim = int(dim)
        self.codebook_size = int(codebook_size)

    @property
    def num_stages(self) -> int:
        return 1

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,) * self.num_stages

    @property
    def bits_per_token(self) -> float:
        """The rate: bits one token's indices carry (``log2 K`` per stage, summed).

        Right for one codebook, residual stages, FSQ (``K`` = product of levels)
        and LFQ/BSQ (``K = 2**bits``); a method whose rate differs overrides it.
        """
        return float(sum(math.log2(size) for size in self.stage_sizes))

    def codebook(self) -> Tensor | None:
        """The effective ``(K, D)`` codebook in latent space, for plots; ``None`` if implicit."""
        return None

    def on_epoch_end(self, epoch: int) -> None:
        """Called by the train loop after each epoch (``epoch`` counted from 0)."""

    def forward(self, z: Tensor) -> QuantizeOutput:
        """Run :meth:`quantize` on float32 tokens with autocast off (a template method).

        Every quantizer computes in float32 because this base class says so, not
        because each plugin remembers to: ``z.float()`` alone is not enough, since
        a matmul inside an autocast region would still run in bf16. Override
        :meth:`quantize`, not this.
        """
        with torch.autocast(z.device.type, enabled=False):
            return self.quantize(z.float())

    def quantize(self, z: Tensor) -> QuantizeOutput:  # pragma: no cover - abstract
        """The method itself, on float32 ``(N, D)`` tokens outside any autocast region."""
        raise NotImplementedError


class DatasetPlugin:
    """Builds ``torch.utils.data.Dataset`` objects for the ``train`` and ``val`` splits
    (and, for ``harness tune``, the :attr:`selection_splits` it declares).

    Items are a tensor ``x`` or a pair ``(x, label)``: points are ``float32 (2,)``,
    images ``float32 (3, H, W)`` in ``[-1, 1]``. Real datasets read from ``root``
    and raise :class:`harness.errors.DatasetMissing` naming the files they expect.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    #: "points" or "images": decides which plots and metrics make sense
    modality: ClassVar[str] = "points"
    #: True for datasets read from disk (``--data-root`` or ``$HARNESS_DATA/<name>``)
    needs_root: ClassVar[bool] = False
    #: selection splits for ``harness tune``: selection split -> the split its trials train on.
    #: A selection split never overlaps ``val`` (what the leaderboard reports) nor its training
    #: split, so choosing a setting never sees the reported numbers (docs/suites.md, "Tuning").
    selection_splits: ClassVar[dict[str, str]] = {}

    def __init__(self, root: Path | None = None) -> None:
        self.root = root

    def build(self, split: str) -> torch.utils.data.Dataset:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self) -> str | None:
        """``None`` when the data is present, else a message saying what goes where."""
        return None


class Model(nn.Module):
    """An encoder/decoder pair built as ``M(latent_dim=D, **params)``.

    ``encode(x)`` returns ``(B, D)`` vectors or ``(B, D, H, W)`` feature maps;
    ``decode(z_q)`` inverts it. ``last_layer`` (optional) is the decoder's last
    weight, used by the adversarial loss's adaptive weight.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = int(latent_dim)

    @property
    def encoder(self) -> nn.Module:
        """The encoder; subclasses build it as ``self._encoder``."""
        return self._encoder

    @property
    def decoder(self) -> nn.Module:
        """The decoder; subclasses build it as ``self._decoder``."""
        return self._decoder

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    @property
    def last_layer(self) -> Tensor | None:
        return None


class Schedule(Callback):
    """Acts on :class:`~harness.contracts.state.TrainState` during training; several compose in a cell.

    Hooks run in the order the suite lists the schedules. Override any of them (a schedule is a
    :class:`~harness.contracts.state.Callback`: a misspelled hook name fails when the class is defined).
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    def on_train_start(self, state: TrainState) -> None:
        """Before the first step."""

    def on_step(self, state: TrainState) -> None:
        """Before each optimisation step (``state.step`` is the step about to run)."""

    def on_epoch_end(self, state: TrainState) -> None:
        """After each pass over the training split (``state.epoch`` just finished)."""



class Loss:
    """A training loss term: ``L(weight=1.0, **params)``; a suite lists several in ``train.loss``.

    The host calls :meth:`setup` once with the cell's ``TrainState`` (device,
    model, config), then each step :meth:`terms`, which returns *unweighted*
    terms ``{name: scalar tensor}``; the host multiplies each by
    ``state.loss_weights[name]`` (which starts at ``weight`` for the loss's
    :attr:`term` and which schedules may change) and sums them. Terms are
    logged as ``train/<name>``. A loss with its own optimiser (a discriminator)
    implements :meth:`step`, run after the model's optimiser step; its returned
    values are logged too. While :meth:`active` is false neither runs.
    ``state_dict``/``load_state_dict`` carry its state through checkpoints.
    Tensors only: a loss never calls ``.item()`` (the loop does not sync the
    device between log steps).
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    #: the key of this loss's weight in ``state.loss_weights`` (and of its main term)
    term: ClassVar[str] = ""

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = float(weight)

    @property
    def key(self) -> str:
        return self.term or self.name

    def setup(self, state: TrainState) -> None:
        """Once per cell, before the first step: move to ``state.device``, read the model."""

    def active(self, state: TrainState) -> bool:
        """Whether the term runs this step: by default while its weight is not zero."""
        return state.loss_weights.get(self.key, self.weight) != 0

    def terms(self, state: TrainState, x: Tensor, x_hat: Tensor, out: QuantizeOutput) -> dict[str, Tensor]:
        raise NotImplementedError  # pragma: no cover - abstract

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Nothing to restore by default."""


@dataclass
class EvalBatch:
    """One eval batch as metrics see it.

    ``indices`` are ``(B * T,)`` or ``(B * T, L)`` for ``T`` tokens per item and
    ``L`` stages; ``labels`` are the dataset's labels when it has them.
    """

    x: Tensor
    x_hat: Tensor
    indices: Tensor
    z: Tensor
    labels: Tensor | None = None
    tokens_per_item: int = 1


@dataclass
class MetricContext:
    """What a metric may need to know about the cell it evaluates."""

    codebook_sizes: tuple[int, ...]
    device: torch.device
    modality: str = "points"
    weights_dir: Path | None = None


class Metric:
    """A metric streamed over the eval split: ``update`` per batch, ``compute`` at the end.

    ``compute`` returns ``{name: value}`` (a metric may report several values,
    e.g. per stage). A metric that cannot run here (missing weights) raises
    :class:`harness.errors.MetricUnavailable` from ``__init__`` with the reason.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    #: pretrained weights the metric needs, as human-readable names (for ``harness doctor``)
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, context: MetricContext, **params: Any) -> None:
        self.context = context

    @property
    def stack(self) -> str:
        """What produced the number: implementation, library versions, weights digest, resizing.

        Recorded with every value (tag ``harness.metric_stack.<name>``) and shown
        in the leaderboard header, so numbers from different stacks are never
        mixed silently. Override it where a library or weights file decides the value.
        """
        from harness import __version__

        cls = type(self)
        return f"{cls.__module__}.{cls.__qualname__} (vq-harness {__version__}, torch {torch.__version__})"

    def update(self, batch: EvalBatch) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError
