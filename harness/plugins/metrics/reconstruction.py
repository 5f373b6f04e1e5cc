"""Reconstruction error metrics."""

from __future__ import annotations

import torch

from harness.contracts import EvalBatch, Metric, MetricContext


class MSE(Metric):
    """Mean squared error between inputs and reconstructions, over every element of the split.

    Images are compared in the model's ``[-1, 1]`` range after clamping the
    reconstruction (docs/protocols.md); points as they are.
    """

    name = "mse"
    higher_is_better = False

    def __init__(self, context: MetricContext) -> None:
        super().__init__(context)
        self.total = torch.zeros((), dtype=torch.float64)
        self.count = 0

    def update(self, batch: EvalBatch) -> None:
        x_hat = batch.x_hat.clamp(-1, 1) if self.context.modality == "images" else batch.x_hat
        self.total += ((x_hat.double() - batch.x.double()) ** 2).sum().cpu()
        self.count += batch.x.numel()

    def compute(self) -> dict[str, float]:
        return {self.name: float(self.total / max(self.count, 1))}
