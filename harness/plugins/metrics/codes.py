"""Code-usage metrics over the whole eval split."""

from __future__ import annotations

import torch
from torch import Tensor

from harness.contracts import EvalBatch, Metric, MetricContext


class _UsageMetric(Metric):
    """Accumulates a code histogram per stage; subclasses turn it into numbers."""

    def __init__(self, context: MetricContext) -> None:
        super().__init__(context)
        self.counts = [torch.zeros(k, dtype=torch.long) for k in context.codebook_sizes]

    def update(self, batch: EvalBatch) -> None:
        indices = batch.indices.reshape(batch.indices.shape[0], -1).cpu()
        for stage, counts in enumerate(self.counts):
            counts += torch.bincount(indices[:, stage], minlength=counts.numel())

    def per_stage(self, values: list[float]) -> dict[str, float]:
        out = {self.name: sum(values) / len(values)}
        if len(values) > 1:
            out.update({f"{self.name}/stage{i}": v for i, v in enumerate(values)})
        return out

    @staticmethod
    def entropy(counts: Tensor) -> float:
        p = counts.double() / counts.sum().clamp_min(1)
        p = p[p > 0]
        return float(-(p * p.log()).sum())


class Utilization(_UsageMetric):
    """Fraction of codes used at least once over the eval split (mean over stages, and per stage)."""

    name = "utilization"
    higher_is_better = True

    def compute(self) -> dict[str, float]:
        return self.per_stage([float((c > 0).float().mean()) for c in self.counts])


class Perplexity(_UsageMetric):
    """``exp`` of the entropy of code usage over the whole eval split (not per batch)."""

    name = "perplexity"
    higher_is_better = True

    def compute(self) -> dict[str, float]:
        return self.per_stage([float(torch.tensor(self.entropy(c)).exp()) for c in self.counts])


class DeadCodes(_UsageMetric):
    """Number of codes never used over the eval split (summed over stages, and per stage)."""

    name = "dead_codes"
    higher_is_better = False

    def compute(self) -> dict[str, float]:
        dead = [float((c == 0).sum()) for c in self.counts]
        out = {self.name: sum(dead)}
        if len(dead) > 1:
            out.update({f"{self.name}/stage{i}": v for i, v in enumerate(dead)})
        return out
