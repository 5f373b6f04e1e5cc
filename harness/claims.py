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


#: the key fields a ``compare`` claim pairs its cells on (the method and quantizer differ)
PAIR_FIELDS = ("codebook_size", "dim", "seed")


def _metric_by_cell(claim: Claim, records: list[dict[str, Any]], where: dict[str, Any]
                    ) -> list[tuple[dict[str, Any], float]]:
    return [
        (r["key"], float(r["metrics"][claim.metric]))
        for r in records
        if matches(r["key"], where) and claim.metric in r["metrics"]
        and not math.isnan(float(r["metrics"][claim.metric]))
    ]


def claim_values(claim: Claim, records: Iterable[dict[str, Any]]) -> tuple[float, ...]:
    """The metric of each matching cell; for a ``compare`` claim, paired differences.

    A compare claim pairs each ``where`` cell with the cell of ``{**where, **compare}``
    that has the same codebook size, dim and seed (unless ``compare`` names those
    fields) and yields ``metric(this) - metric(other)``; unpaired cells are left out.
    """
    records = list(records)
    mine = _metric_by_cell(claim, records, claim.where)
    if not claim.compare:
        return tuple(v for _, v in mine)
    fields = [f for f in PAIR_FIELDS if f not in claim.compare]
    others = {tuple(k.get(f) for f in fields): v
              for k, v in _metric_by_cell(claim, records, {**claim.where, **claim.compare})}
    pairs = ((v, others.get(tuple(k.get(f) for f in fields))) for k, v in mine)
    return tuple(v - other for v, other in pairs if other is not None)


def check_claim(claim: Claim, records: Iterable[dict[str, Any]]) -> ClaimResult:
    """``records``: finished cells as ``{"key": {...}, "metrics": {...}}``."""
    values = claim_values(claim, records)
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
