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
from harness.plugins.quantizers.vq import VectorQuantizer
from harness.testing import CHECKS, QuantizerCase, QuantizerConformance

SMALL: dict[str, dict[str, Any]] = {
    # FSQ has published levels only for K = 2^8, 2^10, ...: 4 x 4 = 16 codes here
    "fsq": {"params": {"levels": [4, 4]}},
    "residual-vq": {"params": {"stages": 2}},
    "transvq": {"params": {"width": 32}},
    "transvq-mlp": {"params": {"width": 32}},
    "nsvq": {"params": {"reservoir_size": 256}},
    "drifting": {"params": {"max_tokens": 256}},
    # no start-up phase (1,000 forwards by default, in which z passes unquantized)
    "sf-diveq": {"params": {"skip_iters": 0, "avg_iters": 0}},
    "fsp": {"params": {"levels": [4, 4]}},  # FSQ's levels, as fsq above
    # the authors' zero-initialised head: no gradient below it on the first step only
    # (tests/quantizers/test_vqbridge.py shows every parameter learning from the second)
    "vqbridge": {"no_grad_params": ("embedding", "bridge.embed.*", "bridge.blocks.*")},
    "qinco": {"params": {"stages": 2, "blocks": 2, "hidden": 16}},
    # whole token maps only: the kit's N = 1 is a map only at one 1 x 1 scale
    # (tests/quantizers/test_msvq.py runs the kit on 2 x 2 maps over two scales)
    "msvq": {"params": {"scales": [1]}},
    # one fixed size, the Leech lattice's 196,560 minimal vectors (dim 8 goes through Linear maps
    # to and from 24); the exhaustive search is CPU-heavy at 20,000 tokens, 4,096 spans several tiles
    "leech-sq": {"codebook_size": 196_560, "large_n": 4096},
}

NAMES = get_host().quantizers.names()



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


class TestResidualOverGumbel(QuantizerConformance):
    """The base-class way a plugin package runs the kit, here on residual VQ with a non-STE base."""

    quantizer = "residual-vq"
    params = {"stages": 2, "base": "gumbel"}
    large_n = 2000


# --- the kit must fail on quantizers that break the contract -------------------------------


class DetachedOutput(VectorQuantizer):
    """z_q carries no gradient to z: the encoder would never learn."""

    def forward(self, z):
        out = super().forward(z)
        out.z_q = out.z_q.detach()
        return out


class Int32Indices(VectorQuantizer):
    def forward(self, z):
        out = super().forward(z)
        out.indices = out.indices.int()
        return out


class CountsInEval(VectorQuantizer):
    """Updates a usage buffer in every forward, eval included."""

    def __init__(self, dim: int, codebook_size: int) -> None:
        super().__init__(dim, codebook_size)
        self.register_buffer("usage", torch.zeros(codebook_size))

    def forward(self, z):
        out = super().forward(z)
        self.usage += torch.bincount(out.indices, minlength=self.codebook_size).float()
        return out


class ScaleOutsideState(VectorQuantizer):
    """Keeps a random output scale in a plain attribute: the state dict does not restore it."""

    def __init__(self, dim: int, codebook_size: int) -> None:
        super().__init__(dim, codebook_size)
        self.scale = 1.0 + torch.rand(()).item()

    def forward(self, z):
        out = super().forward(z)
        out.z_q = out.z_q * self.scale
        return out


class Bf16Leak(VectorQuantizer):
    """Quantizes in the input's dtype instead of float32."""

    def forward(self, z):
        out = super().forward(z)
        out.z_q = out.z_q.to(z.dtype)
        return out


class Float32Forgotten(VectorQuantizer):
    """Overrides forward with ``z.float()`` but leaves autocast on: its distance matmul runs in bf16.

    z_q still comes out float32 (a lookup), so only the dispatch-level check sees it.
    """

    def __init__(self, dim: int, codebook_size: int) -> None:
        super().__init__(dim, codebook_size, entropy_weight=0.1)

    def forward(self, z):
        return self.quantize(z.float())


class FrozenParameter(VectorQuantizer):
    """A trainable parameter nothing uses."""

    def __init__(self, dim: int, codebook_size: int) -> None:
        super().__init__(dim, codebook_size)
        self.unused = torch.nn.Parameter(torch.zeros(3))


@pytest.mark.parametrize(("broken", "check", "message"), [
    (DetachedOutput, "gradients", "z_q is detached"),
    (Int32Indices, "output_shapes", "indices must be int64"),
    (CountsInEval, "eval_is_pure", r"eval forwards changed \['usage'\]"),
    (ScaleOutsideState, "state_dict_round_trip", "different eval outputs"),
    (Bf16Leak, "bf16_input", "z_q must be float32"),
    (FrozenParameter, "gradients", r"without gradient: \['unused'\]"),
    (Float32Forgotten, "float32_under_autocast", r"reduced precision under bf16 autocast: .*addmm"),
])
def test_kit_catches_contract_violations(broken: type, check: str, message: str) -> None:
    case = QuantizerCase(quantizer=broken, large_n=500)
    with pytest.raises(AssertionError, match=message):
        CHECKS[check](case)


def test_exemptions_must_name_real_parameters() -> None:
    CHECKS["gradients"](QuantizerCase(quantizer=FrozenParameter, no_grad_params=("unused",)))
    with pytest.raises(AssertionError, match="match no trainable parameter"):
        CHECKS["gradients"](QuantizerCase(quantizer="vq", no_grad_params=("typo*",)))


def test_bf16_output_check_alone_misses_a_forgotten_autocast() -> None:
    """Why the dispatch-level check exists: the output-dtype check passes this broken plugin."""
    CHECKS["bf16_input"](QuantizerCase(quantizer=Float32Forgotten))
    CHECKS["float32_under_autocast"](QuantizerCase(quantizer="vq", params={"entropy_weight": 0.1}))
