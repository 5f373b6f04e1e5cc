"""The dataset test kit: the contract every dataset plugin keeps (docs/hooks.md, "Testing a plugin").

Items are a tensor ``x`` or a pair ``(x, label)``; points are ``float32 (D,)``,
images ``float32 (3, H, W)`` in ``[-1, 1]``; every item of a split has one shape;
the same parameters give the same data; a dataset that reads files says what it
misses through ``check()`` instead of failing later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from harness.testing.kit import Checks, add_tests, case_of, check_declares, expect, label, lookup

MODALITIES = ("points", "images")


@dataclass
class DatasetCase:
    """One dataset under test: ``DATASET_CHECKS[name](case)`` runs a check on it."""

    dataset: str | type
    params: dict[str, Any] = field(default_factory=dict)
    #: the data folder of a dataset that reads files (``None``: ``$HARNESS_DATA/<name>``)
    root: Path | None = None
    splits: tuple[str, ...] = ("train", "val")
    #: items checked per split (the first ones)
    items: int = 16

    @property
    def cls(self) -> type:
        return lookup("datasets", self.dataset)

    @property
    def label(self) -> str:
        return label(self.dataset)

    def build(self) -> Any:
        """The plugin as the host builds it; skips when a file-backed dataset's data is missing."""
        cls = self.cls
        if not getattr(cls, "needs_root", False):
            return cls(**self.params)
        from harness.cell.build import dataset_root

        root = Path(self.root) if self.root is not None else dataset_root(getattr(cls, "name", ""), None)
        plugin = cls(root=root, **self.params)
        missing = plugin.check()
        if missing:
            pytest.skip(f"{self.label}: its data is not on this machine: {missing}")
        return plugin

    def sample(self, split: str) -> list[Any]:
        data = self.build().build(split)
        return [data[i] for i in range(min(self.items, len(data)))]


def split_x(item: Any) -> tuple[Tensor, Any]:
    if isinstance(item, (tuple, list)):  # (x,) as TensorDataset gives it, or (x, label)
        expect(len(item) in (1, 2), f"an item is x or (x, label), got a {type(item).__name__} of {len(item)}")
        return item[0], item[1] if len(item) == 2 else None
    return item, None


DATASET_CHECKS = Checks()


@DATASET_CHECKS("declares")
def check_dataset_declares(case: DatasetCase) -> None:
    """A name, a summary line, ``modality`` points or images, ``needs_root`` a bool."""
    check_declares("datasets", case.cls, {"modality": str, "needs_root": bool})
    expect(case.cls.modality in MODALITIES, f"{case.label}: modality must be one of {MODALITIES}")


@DATASET_CHECKS("splits_build")
def check_splits_build(case: DatasetCase) -> None:
    """``build(split)`` returns a non-empty map-style dataset for every split."""
    plugin = case.build()
    for split in case.splits:
        data = plugin.build(split)
        expect(hasattr(data, "__getitem__") and hasattr(data, "__len__"),
               f"{case.label}: build({split!r}) must return a map-style Dataset, got {type(data).__name__}")
        expect(len(data) > 0, f"{case.label}: the {split!r} split is empty")


@DATASET_CHECKS("items")
def check_items(case: DatasetCase) -> None:
    """Items are float32, finite, one shape per split: points (D,), images (3, H, W) in [-1, 1]."""
    modality = case.cls.modality
    for split in case.splits:
        shapes = set()
        for i, item in enumerate(case.sample(split)):
            x, y = split_x(item)
            where = f"{case.label} {split}[{i}]"
            expect(isinstance(x, Tensor), f"{where}: x must be a tensor, got {type(x).__name__}")
            expect(x.dtype == torch.float32, f"{where}: x must be float32, got {x.dtype}")
            expect(bool(torch.isfinite(x).all()), f"{where}: x has non-finite values")
            if modality == "points":
                expect(x.dim() == 1, f"{where}: a point is (D,), got {tuple(x.shape)}")
            else:
                expect(x.dim() == 3 and x.shape[0] == 3, f"{where}: an image is (3, H, W), got {tuple(x.shape)}")
                expect(float(x.min()) >= -1 and float(x.max()) <= 1,
                       f"{where}: image values must lie in [-1, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")
            expect(y is None or int(torch.as_tensor(y)) == torch.as_tensor(y).item(),
                   f"{where}: a label must be an integer, got {y!r}")
            shapes.add(tuple(x.shape))
        expect(len(shapes) == 1, f"{case.label} {split}: items of several shapes {sorted(shapes)}")


@DATASET_CHECKS("batches")
def check_batches(case: DatasetCase) -> None:
    """PyTorch's default collate stacks a split into (B, ...) batches, as the host loads them."""
    from torch.utils.data import DataLoader

    data = case.build().build(case.splits[0])
    first = next(iter(DataLoader(data, batch_size=min(4, len(data)), shuffle=False)))
    x, _ = split_x(first)
    expect(x.shape[0] == min(4, len(data)), f"{case.label}: a batch of 4 has shape {tuple(x.shape)}")


@DATASET_CHECKS("deterministic")
def check_dataset_deterministic(case: DatasetCase) -> None:
    """The same parameters give the same items (a suite's cells must see the same data)."""
    for split in case.splits:
        first, second = case.sample(split), case.sample(split)
        for i, (a, b) in enumerate(zip(first, second, strict=True)):
            expect(torch.equal(split_x(a)[0], split_x(b)[0]),
                   f"{case.label} {split}[{i}]: two builds with the same parameters differ")


@DATASET_CHECKS("selection_splits")
def check_selection_splits(case: DatasetCase) -> None:
    """Each declared selection split and the split its trials train on build, shaped like ``val``,
    and the selection split is not ``val`` (``harness tune`` never chooses on reported data)."""
    declared = dict(getattr(case.cls, "selection_splits", {}) or {})
    if not declared:
        pytest.skip(f"{case.label} declares no selection split (harness tune refuses it)")
    plugin = case.build()
    val = split_x(plugin.build("val")[0])[0]
    for select, fit in declared.items():
        expect(select not in ("val", fit), f"{case.label}: selection split {select!r} must differ from val "
                                           f"and from the split trials train on ({fit!r})")
        for split in (select, fit):
            data = plugin.build(split)
            expect(len(data) > 0, f"{case.label}: the {split!r} split is empty")
            x = split_x(data[0])[0]
            expect(x.shape == val.shape, f"{case.label}: {split} items are {tuple(x.shape)}, val's {tuple(val.shape)}")
        expect(not torch.equal(split_x(plugin.build(select)[0])[0], val),
               f"{case.label}: the {select!r} split starts with val's first item")


@DATASET_CHECKS("reports_missing_data")
def check_reports_missing_data(case: DatasetCase) -> None:
    """A file-backed dataset pointed at an empty folder says what it expects (``check()``)."""
    cls = case.cls
    if not getattr(cls, "needs_root", False):
        pytest.skip(f"{case.label} reads no files")
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        message = cls(root=Path(folder) / "missing", **case.params).check()
    expect(isinstance(message, str) and bool(message.strip()),
           f"{case.label}: check() on a missing folder must return what to put where, got {message!r}")


class DatasetConformance:
    """Subclass as ``Test<Something>`` and set ``dataset``: pytest runs every dataset check.

    Other class attributes mirror :class:`DatasetCase`: ``params``, ``root``,
    ``splits``, ``items``.
    """

    dataset: str | type | None = None

    def conformance_case(self) -> DatasetCase:
        return case_of(self, DatasetCase, "dataset")


add_tests(DatasetConformance, DATASET_CHECKS)
