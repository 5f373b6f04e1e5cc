"""When a row's code usage says its codebook collapsed: the page says so beside its numbers.

A method that ends using a handful of its codes is not measured at its rate:
its reconstruction numbers are those of a far smaller codebook. Ranking such a
row silently among the others reads as "this method is worse" when what was
measured is a collapse (often from the regime: see ``harness diagnose``).
The rule reads the finished seeds' eval metrics only, so it applies to runs
recorded before the diagnosis existed. Thresholds are justified in
docs/diagnosis.md; ``harness diagnose`` uses the same rule for its verdict.
"""

from __future__ import annotations

from typing import Any

#: collapsed when fewer than this fraction of the codes is used over the whole eval split
UTILIZATION_BELOW = 0.05
#: ...or when the usage perplexity (effective number of codes) is below this fraction of K
PERPLEXITY_FRACTION_BELOW = 0.02
#: ...with at least this many effective codes required at any K (one or two codes: collapsed)
PERPLEXITY_AT_LEAST = 2.0


def reachable_codes(codebook_size: int, eval_tokens: int | None) -> int:
    """How many codes the eval split could use at all: ``K``, or its token count when smaller.

    A codebook larger than the split (the Leech lattice's 196,560 codes over 4,800 tokens)
    cannot show more than ``tokens / K`` usage, so the thresholds apply to what is reachable.
    """
    return min(codebook_size, eval_tokens) if eval_tokens else codebook_size


def seed_collapse(metrics: dict[str, float], codebook_size: int, eval_tokens: int | None = None) -> str:
    """Why one finished cell counts as collapsed (``"4% of codes used"``), or ``""``.

    ``eval_tokens`` (recorded as ``harness.eval_tokens``; absent in older runs) bounds the
    codes the split can reach; the rule is then judged against that bound and says so.
    """
    reachable = reachable_codes(codebook_size, eval_tokens)
    bound = f" (the {eval_tokens:,} eval tokens reach at most {reachable / codebook_size:.1%})" \
        if codebook_size and reachable < codebook_size else ""
    used = metrics.get("utilization")
    if used is not None and reachable and used * codebook_size / reachable < UTILIZATION_BELOW:
        return (f"{used:.0%} of codes used" if used >= 0.01 else f"{used:.1%} of codes used") + bound
    perplexity = metrics.get("perplexity")
    floor = max(PERPLEXITY_AT_LEAST, PERPLEXITY_FRACTION_BELOW * reachable)
    if perplexity is not None and codebook_size > 0 and perplexity < floor:
        return f"usage perplexity {perplexity:.3g} of {codebook_size} codes" + bound
    return ""


def collapse_text(row: Any) -> str:
    """A measured row's flag: ``"collapsed: 4% of codes used"``, ``"collapsed in 1 of 2 seeds: ..."``, or ``""``.

    With several seeds the reason shown is the row's mean when every seed
    collapsed, else the first collapsed seed's.
    """
    if getattr(row, "reported", False) or not row.seed_metrics:
        return ""
    tokens = row.eval_tokens
    reasons = [seed_collapse(m, row.codebook_size, tokens.get(seed))
               for seed, m in sorted(row.seed_metrics.items())]
    collapsed = [r for r in reasons if r]
    if not collapsed:
        return ""
    if len(collapsed) < len(reasons):
        return f"collapsed in {len(collapsed)} of {len(reasons)} seeds: {collapsed[0]}"
    means = {k: stat.mean for k, stat in row.metrics.items()}
    fewest = min(tokens.values()) if tokens else None
    return f"collapsed: {seed_collapse(means, row.codebook_size, fewest) or collapsed[0]}"
