"""The metric test kit: the contract every metric plugin keeps (docs/hooks.md).

``M(context, **params)`` streams the eval split: ``update`` per batch, then
``compute`` gives ``{name or name/part: number}``. Streaming must not change the
result (two halves give what the whole gives), instances share no state, and a
metric that cannot run here raises ``MetricUnavailable`` from ``__init__``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from harness.contracts import EvalBatch, MetricContext
from harness.errors import MetricUnavailable
from harness.testing.kit import Checks, add_tests, case_of, check_declares, expect, label, lookup


@dataclass
class MetricCase:
    """One metric under test and the synthetic eval batches it sees."""

    metric: str | type
    params: dict[str, Any] = field(default_factory=dict)
    modality: str = "points"
    codebook_sizes: tuple[int, ...] = (8,)
    batch: int = 32
    dim: int = 2
    image_shape: tuple[int, int, int] = (3, 16, 16)
    #: relative tolerance of "two halves give what the whole gives"
    rtol: float = 1e-5
    device: str = "cpu"

    @property
    def cls(self) -> type:
        return lookup("metrics", self.metric)

    @property
    def label(self) -> str:
        return label(self.metric)

    def build(self) -> Any:
        context = MetricContext(codebook_sizes=tuple(self.codebook_sizes), device=torch.device(self.device),
                                modality=self.modality)
        try:
            return self.cls(context, **self.params)
        except MetricUnavailable as exc:
            pytest.skip(f"{self.label} cannot run here: {exc}")

    def batches(self, seed: int = 0, n: int = 2) -> list[EvalBatch]:
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(n):
            shape = (self.batch, self.dim) if self.modality == "points" else (self.batch, *self.image_shape)
            x = torch.rand(shape, generator=g) * 2 - 1
            x_hat = (x + 0.1 * torch.randn(shape, generator=g)).clamp(-1, 1)
            indices = torch.stack([torch.randint(k, (self.batch,), generator=g) for k in self.codebook_sizes], 1)
            out.append(EvalBatch(x=x, x_hat=x_hat, indices=indices.squeeze(1) if indices.shape[1] == 1 else indices,
                                 z=torch.randn(self.batch, self.dim, generator=g),
                                 labels=torch.randint(2, (self.batch,), generator=g)))
        return out


def merged(batches: list[EvalBatch]) -> EvalBatch:
    return EvalBatch(*(torch.cat([getattr(b, f) for b in batches]) for f in ("x", "x_hat", "indices", "z", "labels")))


def values_of(case: MetricCase, batches: list[EvalBatch]) -> dict[str, float]:
    metric = case.build()
    for batch in batches:
        metric.update(batch)
    return metric.compute()


METRIC_CHECKS = Checks()


@METRIC_CHECKS("declares")
def check_metric_declares(case: MetricCase) -> None:
    """A name, a summary line, ``higher_is_better`` (the leaderboard's direction), ``requires``."""
    check_declares("metrics", case.cls, {"higher_is_better": bool, "requires": tuple})


@METRIC_CHECKS("values")
def check_values(case: MetricCase) -> None:
    """``compute`` gives finite numbers named ``name`` or ``name/part`` (claims and columns use them)."""
    values = values_of(case, case.batches())
    name = case.cls.name
    expect(isinstance(values, dict) and bool(values), f"{case.label}: compute must return a non-empty dict")
    for key, value in values.items():
        expect(key == name or str(key).startswith(f"{name}/"),
               f"{case.label}: value {key!r} must be named {name!r} or {name!r}/<part>")
        expect(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
               f"{case.label}: {key} must be a finite Python number, got {value!r}")


@METRIC_CHECKS("streams")
def check_streams(case: MetricCase) -> None:
    """Fed in two batches, the metric gives what it gives on the whole split at once."""
    batches = case.batches()
    halves, whole = values_of(case, batches), values_of(case, [merged(batches)])
    expect(halves.keys() == whole.keys(), f"{case.label}: streaming changes the keys")
    for key, value in whole.items():
        expect(math.isclose(halves[key], value, rel_tol=case.rtol, abs_tol=1e-9),
               f"{case.label}: {key} is {halves[key]!r} over two batches but {value!r} over the same "
               "items at once: update() must accumulate, compute() must combine")


@METRIC_CHECKS("instances_independent")
def check_instances_independent(case: MetricCase) -> None:
    """A new instance starts empty: no state shared between cells through the class."""
    first, second = case.batches(seed=1), case.batches(seed=2)
    busy = case.build()
    for batch in first:
        busy.update(batch)
    expect(values_of(case, second) == values_of(case, second),
           f"{case.label}: fresh instances fed the same batches disagree: an instance sees another "
           "instance's batches (state kept on the class, e.g. a mutable class attribute)")
    alone = values_of(case, second)
    other = case.build()
    for batch in second:
        other.update(batch)
    expect(other.compute() == alone, f"{case.label}: an instance sees another instance's batches "
                                     "(state kept on the class, e.g. a mutable class attribute)")


class MetricConformance:
    """Subclass as ``Test<Something>`` and set ``metric``: pytest runs every metric check.

    Other class attributes mirror :class:`MetricCase`: ``params``, ``modality``,
    ``codebook_sizes``, ``batch``, ``dim``, ``image_shape``, ``rtol``, ``device``.
    """

    metric: str | type | None = None

    def conformance_case(self) -> MetricCase:
        return case_of(self, MetricCase, "metric")


add_tests(MetricConformance, METRIC_CHECKS)
