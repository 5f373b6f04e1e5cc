"""Check a suite's claims (the papers' findings) against finished cells."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.errors import suggest
from harness.suite.schema import OPS, PROFILES


@dataclass(frozen=True)
class Claim:
    """A paper's finding, checked over the finished cells that match ``where``."""

    id: str
    text: str
    where: dict[str, Any]
    metric: str
    aggregate: str = "mean"
    op: str = ">="
    value: float = 0.0
    kind: str = "assert"  # "assert": must hold; "report": the number is recorded, not judged
    profiles: tuple[str, ...] = PROFILES
    #: paired comparison: ``where`` cells minus the cells of ``{**where, **compare}`` with the
    #: same codebook size, dim and seed; the aggregate runs over those differences
    compare: dict[str, Any] | None = None
    #: "holds", or "not reproduced": the suite knows the finding does not reproduce (``reason`` says why);
    #: it is shown as such and does not fail the run, but holding after all is flagged (a strict xfail)
    expect: str = "holds"
    reason: str = ""
    #: ``file:line`` of the claim in its suite file, for errors found after the cells ran
    source: str = field(default="", compare=False)

    def describe(self) -> str:
        target = ", ".join(f"{k}={v}" for k, v in sorted(self.where.items()))
        if self.compare:
            other = ", ".join(f"{k}={v}" for k, v in sorted(self.compare.items()))
            return (f"{self.aggregate}({self.metric}[{target}] - {self.metric}[{other}], paired by "
                    f"codebook_size, dim, seed) {self.op} {self.value:g}")
        if self.kind == "report":
            return f"{self.aggregate}({self.metric} {self.op} {self.value:g}) over [{target}]"
        return f"{self.aggregate}({self.metric}) {self.op} {self.value:g} over [{target}]"


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    #: True / False for asserted claims; None for reported ones, for claims without data, and for
    #: claims expected not to reproduce that indeed do not (False when one holds after all)
    passed: bool | None
    observed: float | None
    n: int
    values: tuple[float, ...] = ()
    #: whether the finding itself held over the cells, whatever was expected (None: not judged)
    held: bool | None = None
    #: why the claim could not be checked although its cells ran (names the suite file and line)
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error:
            return "ERROR"
        if self.n == 0:
            return "no data"
        if self.claim.kind == "report" or self.held is None:
            return "reported"
        if self.claim.expect == "not reproduced":
            return "holds (unexpected)" if self.held else "not reproduced"
        return "holds" if self.held else "FAILS"

    def summary(self) -> str:
        if self.error:
            return f"{self.claim.id}: ERROR: {self.error}"
        observed = "n/a" if self.observed is None else f"{self.observed:.4g}"
        text = f"{self.claim.id}: {self.status} (observed {observed}, n={self.n}; {self.claim.describe()})"
        if self.claim.expect == "not reproduced":
            text += f"; expected not to reproduce: {self.claim.reason}"
        return text

    def record(self) -> dict[str, Any]:
        """The claim's entry in the parent run's ``claims.json`` (what the leaderboard reads)."""
        return {"id": self.claim.id, "text": self.claim.text, "check": self.claim.describe(),
                "status": self.status, "observed": self.observed, "n": self.n, "values": list(self.values),
                "expect": self.claim.expect, "reason": self.claim.reason, "held": self.held,
                "error": self.error}


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
    records = list(records)
    values = claim_values(claim, records)
    if not values:
        return ClaimResult(claim, False if (error := _missing_metric(claim, records)) else None, None, 0,
                           error=error)
    op = OPS[claim.op]
    bound = float(claim.value)
    hits = [op(v, bound) for v in values]
    if claim.aggregate in ("mean", "min", "max"):
        observed = {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}[claim.aggregate]
        held = op(observed, bound)
    else:  # all / any / fraction: the fraction of cells satisfying ``op value``
        observed = sum(hits) / len(hits)
        held = {"all": all(hits), "any": any(hits), "fraction": None}[claim.aggregate]
    if claim.kind == "report":
        held = None
    passed = held
    if held is not None and claim.expect == "not reproduced":
        passed = False if held else None  # a strict xfail: holding after all is flagged
    return ClaimResult(claim, passed, observed, len(values), values, held=held)


def _missing_metric(claim: Claim, records: list[dict[str, Any]]) -> str | None:
    """An error when finished cells match the claim but none of them has its metric."""
    cells = [r for r in records if matches(r["key"], claim.where)]
    if not cells or any(claim.metric in r["metrics"] for r in cells):
        return None
    recorded = sorted({k for r in cells for k in r["metrics"]})
    close = suggest(claim.metric, recorded)
    hint = f"did you mean {close[0]!r}?" if close else "they have: " + ", ".join(recorded)
    return (f"{claim.source}: claim {claim.id!r}: metric {claim.metric!r} is in none of the "
            f"{len(cells)} finished cells its where matches; {hint}")


def check_claims(claims: Iterable[Claim], records: list[dict[str, Any]]) -> list[ClaimResult]:
    return [check_claim(c, records) for c in claims]
