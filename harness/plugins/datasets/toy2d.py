"""Synthetic 2D point clouds for the toy suites."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, TensorDataset

from harness.contracts import DatasetPlugin

SPLIT_OFFSETS = {"train": 0, "val": 1, "select": 2}


class TwoClusters(DatasetPlugin):
    """Two dense 2D clusters, points labelled by cluster (Liu 2026's toy data).

    Liu 2026 shows two dense clusters in the plane ("they look more like a
    rectangle") without coordinates, so we chose: each cluster uniform in a
    square of half-width ``half_width = 0.25`` centred at ``(-separation/2, 0)``
    and ``(+separation/2, 0)`` with ``separation = 2``; ``n_train = 4096`` and
    ``n_val = 2048`` points split evenly. The data is fixed by ``data_seed``
    (not by the cell's seed), so seeds vary the model, not the task.
    """

    name = "two-clusters"
    paper = "Liu 2026"
    modality = "points"
    #: the selection split is an independent sample (its own seed, ``n_val`` points); trials train on train
    selection_splits = {"select": "train"}

    def __init__(self, n_train: int = 4096, n_val: int = 2048, separation: float = 2.0,
                 half_width: float = 0.25, data_seed: int = 0) -> None:
        super().__init__()
        if n_train < 2 or n_val < 2:
            raise ValueError("n_train and n_val must be at least 2")
        self.sizes = {"train": n_train, "val": n_val, "select": n_val}
        self.separation, self.half_width, self.data_seed = separation, half_width, data_seed

    def build(self, split: str) -> Dataset:
        if split not in self.sizes:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(self.sizes)}")
        n = self.sizes[split]
        g = torch.Generator().manual_seed(self.data_seed * 10 + SPLIT_OFFSETS[split])
        labels = torch.arange(n) % 2
        centres = torch.stack([(labels.float() - 0.5) * self.separation, torch.zeros(n)], dim=1)
        noise = (torch.rand(n, 2, generator=g) * 2 - 1) * self.half_width
        return TensorDataset((centres + noise).float(), labels)
