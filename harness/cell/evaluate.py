"""Evaluation: stream the val split through the model and every metric of the cell.

A metric that cannot run here (missing weights) is recorded as unavailable with
its reason: :class:`EvalResult` keeps it apart from the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from harness.cell.build import metric_specs
from harness.cell.forward import make_loader, reconstruct, split_batch
from harness.contracts.kinds import EvalBatch, Metric, MetricContext
from harness.errors import MetricUnavailable
from harness.host import Host


@dataclass
class EvalResult:
    values: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    #: what produced each number: implementation, versions, weights digest (``Metric.stack``)
    stacks: dict[str, str] = field(default_factory=dict)
    #: each metric's direction (higher is better?), recorded so a page never asks the plugins
    directions: dict[str, bool] = field(default_factory=dict)
    #: per-stage code counts over the split, for the usage histogram
    counts: list[Tensor] = field(default_factory=list)
    #: a few originals and reconstructions, for the reconstruction grid
    samples: tuple[Tensor, Tensor] | None = None


def build_metrics(host: Host, entries: list[Any], context: MetricContext
                  ) -> tuple[dict[str, Metric], dict[str, str]]:
    """Each metric of ``eval.metrics`` built with its parameters, or its reason for being unavailable."""
    metrics, unavailable = {}, {}
    for name, params in metric_specs(entries):
        cls = host.metrics.get(name).obj
        try:
            metrics[name] = cls(context, **params)
        except MetricUnavailable as exc:
            unavailable[name] = str(exc)
    return metrics, unavailable


@torch.no_grad()
def evaluate(
    host: Host,
    model: nn.Module,
    quantizer: nn.Module,
    dataset: Dataset,
    config: dict[str, Any],
    device: torch.device,
    *,
    modality: str = "points",
    keep_samples: int = 16,
) -> EvalResult:
    """Run every metric in ``eval.metrics`` over the val split in eval mode."""
    cfg = config["eval"]
    if cfg.get("max_items") and len(dataset) > cfg["max_items"]:
        dataset = Subset(dataset, range(cfg["max_items"]))
    sizes = tuple(getattr(quantizer, "stage_sizes", (quantizer.codebook_size,)))
    context = MetricContext(codebook_sizes=sizes, device=device, modality=modality)
    metrics, unavailable = build_metrics(host, cfg["metrics"], context)
    result = EvalResult(unavailable=unavailable)
    counts = [torch.zeros(k, dtype=torch.long, device=device) for k in sizes]
    precision = config["train"].get("precision", "auto")
    keep = keep_samples if modality == "images" and "reconstructions" in cfg.get("plots", []) else 0

    was_training = model.training, quantizer.training
    finite = torch.ones((), dtype=torch.bool, device=device)  # stays on the device: one sync at the end
    model.eval()
    quantizer.eval()
    try:
        for batch in make_loader(dataset, cfg["batch_size"], seed=0, shuffle=False):
            x, labels = split_batch(batch, device)
            x_hat, out, z = reconstruct(model, quantizer, x, precision)
            finite &= torch.isfinite(out.z_q).all() & (torch.isfinite(z).all() if z is not None else True)
            indices = out.indices.reshape(out.indices.shape[0], -1)
            for stage, c in enumerate(counts):
                c += torch.bincount(indices[:, stage], minlength=c.numel())
            tokens = out.indices.shape[0] // x.shape[0]
            eval_batch = EvalBatch(x=x, x_hat=x_hat, indices=out.indices, z=z, labels=labels,
                                   tokens_per_item=tokens)
            for name, metric in list(metrics.items()):
                try:
                    metric.update(eval_batch)
                except MetricUnavailable as exc:
                    unavailable[name] = str(exc)
                    del metrics[name]
            if result.samples is None and keep:  # eval.plots lists "reconstructions"
                result.samples = (x[:keep].cpu(), x_hat[:keep].clamp(-1, 1).cpu())
    finally:
        model.train(was_training[0])
        quantizer.train(was_training[1])
    for name, metric in metrics.items():
        result.stacks[name] = str(metric.stack)  # what produced the number, recorded beside it
        result.directions[name] = bool(getattr(metric, "higher_is_better", True))
        try:
            result.values.update({k: float(v) for k, v in metric.compute().items()})
        except MetricUnavailable as exc:
            unavailable[name] = str(exc)
    result.counts = [c.cpu() for c in counts]
    finite &= all(bool(torch.isfinite(t).all()) for t in (*quantizer.parameters(), *quantizer.buffers())
                  if t.is_floating_point())
    if not bool(finite):  # codes picked from non-finite latents or codebooks mean nothing: mark them
        result.values = dict.fromkeys(result.values, math.nan)
    return result
