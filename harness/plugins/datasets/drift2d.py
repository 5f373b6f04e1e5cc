"""The fixed 2D cloud that Beyond Stationarity's drift demos push around (the drift is the model's)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, TensorDataset

from harness.contracts import DatasetPlugin

SPLIT_OFFSETS = {"train": 0, "val": 1, "select": 2}


class Drift2dCloud(DatasetPlugin):
    """Uniform 2D cloud in the square ``[-1, 1]^2``: the data of Beyond Stationarity's drift demos.

    Beyond Stationarity, section 11, draws a fixed point set ``X`` and moves it through a
    drift state learned online (a shift, a scaling matrix, a sign-dependent
    offset). Here ``X`` is this dataset and the drift is the encoder of the
    ``drift2d`` model, which moves during training; batches are ordinary
    shuffled samples of ``X``, and the val split, encoded by the final map, is
    the final distribution (where ``dead_codes`` is measured).

    The paper's distribution of ``X`` was lost from the extracted text; we chose
    a uniform square because its bounded support makes a dead code
    unambiguous (a code whose cell holds no mass), where Gaussian tails would
    leave far codes a few stray points by luck. ``n_train = 4096``,
    ``n_val = 4096``; the points are fixed by ``data_seed``, not by the cell's
    seed (seeds vary the codebook, not the task). Items are ``(x, label)`` with
    ``label = 1`` for ``x_1 >= 0`` (the side each point takes in the split demo).
    """

    name = "drift2d"
    paper = "Beyond Stationarity (section 11, toy demos)"
    modality = "points"
    #: the selection split is an independent sample (its own seed, ``n_val`` points); trials train on train
    selection_splits = {"select": "train"}

    def __init__(self, n_train: int = 4096, n_val: int = 4096, data_seed: int = 0) -> None:
        super().__init__()
        if n_train < 1 or n_val < 1:
            raise ValueError("n_train and n_val must be positive")
        self.sizes = {"train": n_train, "val": n_val, "select": n_val}
        self.data_seed = data_seed

    def build(self, split: str) -> Dataset:
        if split not in self.sizes:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(self.sizes)}")
        g = torch.Generator().manual_seed(self.data_seed * 10 + SPLIT_OFFSETS[split])
        x = torch.rand(self.sizes[split], 2, generator=g) * 2 - 1
        return TensorDataset(x, (x[:, 0] >= 0).long())
