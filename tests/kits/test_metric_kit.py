"""The metric kit passes every registered metric and fails metrics that break the contract."""

from __future__ import annotations

import pytest
import torch

from harness.contracts import EvalBatch, Metric, MetricContext
from harness.host import get_host
from harness.testing import METRIC_CHECKS, MetricCase, MetricConformance


@pytest.mark.parametrize("check", list(METRIC_CHECKS))
@pytest.mark.parametrize("modality", ["points", "images"])
@pytest.mark.parametrize("name", get_host().metrics.names())
def test_every_registered_metric(name: str, modality: str, check: str) -> None:
    """Image metrics skip on points (MetricUnavailable), weight-backed ones where weights are missing."""
    METRIC_CHECKS[check](MetricCase(name, modality=modality))


class TestPerplexityOverTwoStagesAsAPluginWouldTestIt(MetricConformance):
    metric = "perplexity"
    codebook_sizes = (8, 4)


# -- metrics that break the contract: the kit must fail each, naming the problem ---------------

class _MeanError(Metric):
    """Mean squared error, streamed properly."""

    name = "kit-mse"
    higher_is_better = False

    def __init__(self, context: MetricContext) -> None:
        super().__init__(context)
        self.total, self.count = 0.0, 0

    def update(self, batch: EvalBatch) -> None:
        self.total += float(((batch.x_hat - batch.x) ** 2).sum())
        self.count += batch.x.numel()

    def compute(self) -> dict[str, float]:
        return {self.name: self.total / self.count}


class _LastBatchOnly(_MeanError):
    """Forgets every batch but the last."""

    def update(self, batch: EvalBatch) -> None:
        self.total, self.count = 0.0, 0
        super().update(batch)


class _SharedCounts(_MeanError):
    """Keeps its sums in a class attribute shared by every instance."""

    sums: list[float] = []

    def update(self, batch: EvalBatch) -> None:
        self.sums.append(float(((batch.x_hat - batch.x) ** 2).mean()))

    def compute(self) -> dict[str, float]:
        return {self.name: sum(self.sums) / len(self.sums)}


class _TensorValue(_MeanError):
    """Returns a tensor where a number belongs."""

    def compute(self) -> dict[str, float]:
        return {self.name: torch.tensor(self.total / self.count)}  # type: ignore[dict-item]


class _Misnamed(_MeanError):
    """Reports under a name that is not its own."""

    def compute(self) -> dict[str, float]:
        return {"error": self.total / self.count}


@pytest.mark.parametrize(("plugin", "check", "message"), [
    (_LastBatchOnly, "streams", "update\\(\\) must accumulate"),
    (_SharedCounts, "instances_independent", "another instance's batches"),
    (_TensorValue, "values", "must be a finite Python number"),
    (_Misnamed, "values", "must be named 'kit-mse'"),
])
def test_the_kit_fails_a_broken_metric(plugin: type, check: str, message: str) -> None:
    METRIC_CHECKS[check](MetricCase(_MeanError))  # the sound one passes the same check
    with pytest.raises(AssertionError, match=message):
        METRIC_CHECKS[check](MetricCase(plugin))
