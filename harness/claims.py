"""Check a suite's claims (the papers' findings) against finished cells."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness.suite import OPS, Claim


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    #: True / False for asserted claims; None for reported ones and for claims without data
    passed: bool | None
    observed: float | None
    n: int
    values: tuple[float, ...] = ()

    @property
    def status(self) -> str:
        if self.n == 0:
            return "no data"
        if self.claim.kind == "report":
            return "reported"
        return "holds" if self.passed else "FAILS"

    def summary(self) -> str:
        observed = "n/a" if self.observed is None else f"{self.observed:.4g}"
        return f"{self.claim.id}: {self.status} (observed {observed}, n={self.n}; {self.claim.describe()})"


def matches(key: dict[str, Any], where: dict[str, Any]) -> bool:
    """``where`` values may be a scalar or a list of accepted values."""
    for name, wanted in where.items():
        accepted = wanted if isinstance(wanted, list) else [wanted]
        if key.get(name) not in accepted:
            return False
    return True


def check_claim(claim: Claim, records: Iterable[dict[str, Any]]) -> ClaimResult:
    """``records``: finished cells as ``{"key": {...}, "metrics": {...}}``."""
    values = tuple(
        float(r["metrics"][claim.metric])
        for r in records
        if matches(r["key"], claim.where) and claim.metric in r["metrics"]
        and not math.isnan(float(r["metrics"][claim.metric]))
    )
    if not values:
        return ClaimResult(claim, None, None, 0)
    op = OPS[claim.op]
    bound = float(claim.value)
    hits = [op(v, bound) for v in values]
    if claim.aggregate in ("mean", "min", "max"):
        observed = {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}[claim.aggregate]
        passed = op(observed, bound)
    else:  # all / any / fraction: the fraction of cells satisfying ``op value``
        observed = sum(hits) / len(hits)
        passed = {"all": all(hits), "any": any(hits), "fraction": None}[claim.aggregate]
    if claim.kind == "report":
        passed = None
    return ClaimResult(claim, passed, observed, len(values), values)


def check_claims(claims: Iterable[Claim], records: list[dict[str, Any]]) -> list[ClaimResult]:
    return [check_claim(c, records) for c in claims]
