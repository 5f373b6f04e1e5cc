"""Metrics for labelled toy data (Liu 2026's question: does each cluster get its own codes?)."""

from __future__ import annotations

import torch

from harness.contracts import EvalBatch, Metric, MetricContext
from harness.errors import MetricUnavailable


class _ClusterUsage(Metric):
    """Which codes (first stage) each labelled cluster uses over the eval split."""

    def __init__(self, context: MetricContext) -> None:
        super().__init__(context)
        self.pairs: set[tuple[int, int]] = set()

    def update(self, batch: EvalBatch) -> None:
        if batch.labels is None:
            raise MetricUnavailable(f"{self.name} needs a labelled dataset (items (x, label))")
        indices = batch.indices.reshape(batch.indices.shape[0], -1)[:, 0]
        labels = batch.labels.repeat_interleave(batch.tokens_per_item)
        pairs = torch.unique(torch.stack([labels.cpu(), indices.cpu()], dim=1), dim=0)
        self.pairs.update((int(a), int(b)) for a, b in pairs.tolist())

    def codes_by_cluster(self) -> dict[int, set[int]]:
        out: dict[int, set[int]] = {}
        for label, code in self.pairs:
            out.setdefault(label, set()).add(code)
        return out


class Separated(_ClusterUsage):
    """1 when no code serves two clusters (each cluster has codes of its own), else 0."""

    name = "separated"
    paper = "Liu 2026"
    higher_is_better = True

    def compute(self) -> dict[str, float]:
        users: dict[int, set[int]] = {}
        for label, code in self.pairs:
            users.setdefault(code, set()).add(label)
        return {self.name: float(all(len(labels) == 1 for labels in users.values()))}


class ClusterCodes(_ClusterUsage):
    """Number of codes each cluster uses (``cluster_codes/<label>``) and the smallest of them."""

    name = "cluster_codes"
    paper = "Liu 2026"
    higher_is_better = True

    def compute(self) -> dict[str, float]:
        by_cluster = self.codes_by_cluster()
        out = {f"{self.name}/{label}": float(len(codes)) for label, codes in sorted(by_cluster.items())}
        out[f"{self.name}/min"] = float(min((len(c) for c in by_cluster.values()), default=0))
        return out
