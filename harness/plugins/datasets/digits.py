"""scikit-learn's 8x8 handwritten digits as a small real-image dataset (no download)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, TensorDataset

from harness.contracts import DatasetPlugin
from harness.errors import DatasetMissing

N_IMAGES = 1797
#: training positions held out as the selection split (``harness tune``): the last of the train part
N_SELECT = 200


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

    Selection split (``harness tune``): ``select`` is the last ``N_SELECT = 200``
    train positions of that permutation and ``fit`` the 1,297 before them, so a
    trial trains on ``fit``, is chosen on ``select``, and never sees ``val``.
    """

    name = "digits"
    paper = "Alpaydin & Kaynak 1998 (UCI optical recognition of handwritten digits)"
    modality = "images"
    selection_splits = {"select": "fit"}

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
        images, labels = load_digit_arrays()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.data_seed))
        chosen = order[self.positions(split, len(images))]
        x = (images[chosen] / 16.0 * 2.0 - 1.0).unsqueeze(1).repeat(1, 3, 1, 1).contiguous()
        return TensorDataset(x, labels[chosen])

    def positions(self, split: str, n_images: int) -> slice:
        """Where ``split`` lies in the seeded permutation (train = fit + select, then val)."""
        n_train = n_images - self.n_val
        n_fit = max(1, n_train - N_SELECT)
        spans = {"train": slice(0, n_train), "val": slice(n_train, n_images),
                 "fit": slice(0, n_fit), "select": slice(n_fit, n_train)}
        if split not in spans:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(spans)}")
        return spans[split]
