"""Every registered quantizer passes the conformance kit (``harness.testing``).

Names come sorted from the host registry, so xdist workers collect the same
tests; a quantizer added by any plugin is checked without editing this file.
``SMALL`` keeps the slow ones cheap and supplies what a method needs at the
kit's sizes (dim 8, K 16); an entry here never exempts a quantizer from a check.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from harness.host import get_host
from harness.testing import CHECKS, QuantizerCase

SMALL: dict[str, dict[str, Any]] = {
    # FSQ has published levels only for K = 2^8, 2^10, ...: 4 x 4 = 16 codes here
    "fsq": {"params": {"levels": [4, 4]}},
    "residual-vq": {"params": {"stages": 2}},
    "transvq": {"params": {"width": 32}},
    "transvq-mlp": {"params": {"width": 32}},
    "nsvq": {"params": {"reservoir_size": 256}},
    "drifting": {"params": {"max_tokens": 256}},
}

NAMES = get_host().quantizers.names()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The kit's tensors are tiny: extra intra-op threads only contend for the shared cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def case_for(name: str) -> QuantizerCase:
    return QuantizerCase(quantizer=name, **SMALL.get(name, {}))


def test_quantizer_plugins_load() -> None:
    """A plugin that fails to import would silently drop its quantizers from the run below."""
    broken = [f"{b.name}: {b.error}" for b in get_host().broken]
    assert not broken, "broken plugins: " + "; ".join(broken)
    assert {"vq", "gumbel", "rotation", "fsq", "lfq", "residual-vq"} <= set(NAMES)


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", NAMES)
def test_conformance(name: str, check: str) -> None:
    CHECKS[check](case_for(name))
