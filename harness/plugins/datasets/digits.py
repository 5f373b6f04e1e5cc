"""scikit-learn's 8x8 handwritten digits as a small real-image dataset (no download)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, TensorDataset

from harness.contracts import DatasetPlugin
from harness.errors import DatasetMissing

N_IMAGES = 1797


def load_digit_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,797 images ``(N, 8, 8)`` with values 0-16 and their labels, from the installed package."""
    try:
        from sklearn.datasets import load_digits

        bunch = load_digits()
    except (ImportError, OSError) as exc:
        raise DatasetMissing(f"scikit-learn's digits data cannot be read ({exc}); "
                             "install scikit-learn: pip install scikit-learn") from exc
    return torch.as_tensor(bunch.images, dtype=torch.float32), torch.as_tensor(bunch.target, dtype=torch.long)


class Digits(DatasetPlugin):
    """The 8x8 handwritten digits shipped inside scikit-learn (1,797 images), labelled 0-9.

    The UCI optical-recognition digits as ``sklearn.datasets.load_digits``
    reads them from a file inside the package (docs/protocols.md): values 0-16
    divided by 16, scaled to ``[-1, 1]``, repeated to 3 channels, 8x8.
    Split (no paper fixes one): a permutation of the 1,797 images seeded by
    ``data_seed = 0``; the last ``n_val = 300`` positions are val, the first
    1,497 train. The data never depends on the cell's seed, so seeds vary the
    model, not the task.
    """

    name = "digits"
    paper = "Alpaydin & Kaynak 1998 (UCI optical recognition of handwritten digits)"
    modality = "images"

    def __init__(self, n_val: int = 300, data_seed: int = 0) -> None:
        super().__init__()
        if not 1 <= n_val < N_IMAGES:
            raise ValueError(f"n_val must be between 1 and {N_IMAGES - 1}, got {n_val}")
        self.n_val, self.data_seed = n_val, data_seed

    def check(self) -> str | None:
        try:
            load_digit_arrays()
        except DatasetMissing as exc:
            return str(exc)
        return None

    def build(self, split: str) -> Dataset:
        if split not in ("train", "val"):
            raise ValueError(f"unknown split {split!r}; expected 'train' or 'val'")
        images, labels = load_digit_arrays()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.data_seed))
        n_train = len(images) - self.n_val
        chosen = order[:n_train] if split == "train" else order[n_train:]
        x = (images[chosen] / 16.0 * 2.0 - 1.0).unsqueeze(1).repeat(1, 3, 1, 1).contiguous()
        return TensorDataset(x, labels[chosen])
