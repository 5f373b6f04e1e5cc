"""The dataset kit passes every registered dataset and fails datasets that break the contract."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

from harness.contracts import DatasetPlugin
from harness.host import get_host
from harness.testing import DATASET_CHECKS, DatasetCase, DatasetConformance

#: small splits for the synthetic datasets (the checks read the first items only)
SMALL: dict[str, dict[str, Any]] = {"two-clusters": {"n_train": 64, "n_val": 64},
                                    "drift2d": {"n_train": 64, "n_val": 64}}


@pytest.mark.parametrize("check", list(DATASET_CHECKS))
@pytest.mark.parametrize("name", get_host().datasets.names())
def test_every_registered_dataset(name: str, check: str) -> None:
    DATASET_CHECKS[check](DatasetCase(name, params=SMALL.get(name, {})))


class TestTwoClustersAsAPluginWouldTestIt(DatasetConformance):
    dataset = "two-clusters"
    params = {"n_train": 32, "n_val": 32}


# -- datasets that break the contract: the kit must fail each, naming the problem -------------

class _Points(DatasetPlugin):
    """Points for the kit's own tests."""

    name = "kit-points"
    dtype = torch.float32
    scale = 1.0

    def build(self, split: str) -> TensorDataset:
        x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0)).to(self.dtype) * self.scale
        return TensorDataset(x, torch.zeros(16, dtype=torch.long))


class _Float64(_Points):
    """Float64 points."""

    dtype = torch.float64


class _Unseeded(_Points):
    """New points at every build."""

    def build(self, split: str) -> TensorDataset:
        return TensorDataset(torch.randn(16, 2))


class _BrightImages(_Points):
    """Images in [0, 255]."""

    modality = "images"

    def build(self, split: str) -> TensorDataset:
        return TensorDataset(torch.rand(8, 3, 8, 8) * 255)


class _SilentFiles(_Points):
    """Reads files but never says which are missing."""

    needs_root = True

    def check(self) -> str | None:
        return None


class _Nameless(_Points):
    name = ""


@pytest.mark.parametrize(("plugin", "check", "message"), [
    (_Float64, "items", "must be float32"),
    (_BrightImages, "items", r"must lie in \[-1, 1\]"),
    (_Unseeded, "deterministic", "two builds with the same parameters differ"),
    (_SilentFiles, "reports_missing_data", "must return what to put where"),
    (_Nameless, "declares", "set the class attribute `name`"),
])
def test_the_kit_fails_a_broken_dataset(plugin: type, check: str, message: str) -> None:
    DATASET_CHECKS[check](DatasetCase(_Points))  # the sound one passes the same check
    with pytest.raises(AssertionError, match=message):
        DATASET_CHECKS[check](DatasetCase(plugin))
