"""The quantizer contract, checked on the first step of every cell (not only by the conformance kit).

A plugin that returns, say, int32 indices of shape ``(N, 1)`` would otherwise
run to the end and report numbers computed from a broken output. The check
reads the output once (one device sync, on the first step only).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from harness.errors import Diverged, HarnessError


class ContractViolation(HarnessError):
    """A plugin's output breaks its contract; the cell fails with what was expected and what came."""


def check_quantizer_output(quantizer: Any, tokens: int, dim: int, out: Any, step: int = 0) -> None:
    """``out`` (a :class:`~harness.contracts.QuantizeOutput`) for ``tokens`` inputs of ``dim`` features.

    z_q: floating ``(N, D)``; indices: int64 ``(N,)`` for one stage, ``(N, stages)``
    for several, each stage's in ``[0, K_stage)``; loss: a scalar. A loss that is
    not finite is reported as what it is, a divergence at ``step``
    (:class:`~harness.errors.Diverged`): a valid method with extreme settings does that.
    """
    name = getattr(quantizer, "name", "") or type(quantizer).__name__
    problems = list(_problems(quantizer, tokens, dim, out))
    if problems:
        raise ContractViolation(f"quantizer {name!r} broke the quantizer contract on its first step: "
                                + "; ".join(problems) + " (docs/hooks.md, 'Quantizers')")
    if not bool(torch.isfinite(out.loss.detach())):
        raise Diverged(step, float(out.loss.detach()))


def _problems(quantizer: Any, n: int, dim: int, out: Any):
    for field in ("z_q", "indices", "loss"):
        if not isinstance(getattr(out, field, None), Tensor):
            yield f"{field} must be a tensor, got {type(getattr(out, field, None)).__name__}"
            return
    if tuple(out.z_q.shape) != (n, dim) or not out.z_q.is_floating_point():
        yield f"z_q must be floating ({n}, {dim}), got {out.z_q.dtype} {tuple(out.z_q.shape)}"
    sizes = tuple(getattr(quantizer, "stage_sizes", (quantizer.codebook_size,)))
    shape = (n,) if len(sizes) == 1 else (n, len(sizes))
    idx = out.indices
    if idx.dtype != torch.int64 or tuple(idx.shape) != shape:
        yield f"indices must be int64 of shape {shape}, got {idx.dtype} {tuple(idx.shape)}"
    elif n:
        low, high = idx.reshape(n, -1).amin(0).tolist(), idx.reshape(n, -1).amax(0).tolist()
        for stage, (lo, hi, k) in enumerate(zip(low, high, sizes, strict=True)):
            if lo < 0 or hi >= k:
                yield f"indices of stage {stage} must lie in [0, {k}), got [{lo}, {hi}]"
    if out.loss.dim() != 0 or not out.loss.is_floating_point():
        yield f"loss must be a floating scalar, got {out.loss.dtype} of shape {tuple(out.loss.shape)}"
