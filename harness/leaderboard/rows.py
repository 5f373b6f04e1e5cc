"""One leaderboard row from the runs of one configuration: seeds, their states, the rate, the code.

A row averages the newest finished run of each seed, among the cells of the
newest plugin digest only; every other seed state (failed, killed, interrupted,
running, a metric that came back NaN) is kept so the page can say it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from harness.cell.provenance import DIGEST_TAG, RATE_TAGS

#: rates closer than this (bits per token) are one comparison group: FSQ's grids
#: (240, 1000, 4375 codes) sit within 0.1 bit of 8, 10 and 12 bits
RATE_TOLERANCE = 0.15
#: config keys that never distinguish two rows (they differ by construction or say nothing)
NOT_A_VARIANT = frozenset({"seed", "quantizer.method"})


@dataclass
class Stat:
    mean: float
    std: float
    n: int

    def format(self, digits: int = 4) -> str:
        if self.n > 1:
            return f"{self.mean:.{digits}g} ± {self.std:.2g}"
        return f"{self.mean:.{digits}g}"


@dataclass
class Seed:
    """What happened to one seed of a row: ``ok``, ``nan``, ``failed``, ``killed``,
    ``interrupted`` (killed with a checkpoint: resumable) or ``running``."""

    seed: int
    state: str
    run_id: str
    step: int | None = None
    nan: tuple[str, ...] = ()


@dataclass
class Row:
    method: str
    quantizer: str
    codebook_size: int
    dim: int
    n: int = 0
    failed: int = 0
    metrics: dict[str, Stat] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    reported: bool = False
    source: str = ""
    note: str = ""
    plugin: str = ""
    #: seed -> run id of each finished cell (plots read their histories and artifacts)
    run_ids: dict[int, str] = field(default_factory=dict)
    #: seed -> eval metrics of each finished cell (claims over sharded runs are re-checked on them)
    seed_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    #: seed -> tokens its eval split fed the quantizer (bounds the codes it could use)
    eval_tokens: dict[int, int] = field(default_factory=dict)
    #: seed -> its state, for every seed the row knows of
    seeds: dict[int, Seed] = field(default_factory=dict)
    #: metric -> finished seeds whose value came back NaN or infinite
    nan: dict[str, int] = field(default_factory=dict)
    #: the params that tell this row from others of the same method, K and dim ("" when none)
    variant: str = ""
    #: the row's flattened config (params of one cell), to find what differs between rows
    params: dict[str, str] = field(default_factory=dict)
    group: str = ""
    digest: str = ""
    #: cells of this configuration made by older plugin code (another digest), not averaged in
    left_out: int = 0
    bits_per_token: float | None = None
    tokens_per_item: int | None = None
    pixels_per_item: int | None = None
    #: ``tuned`` (a setting `harness tune` chose), ``shared`` (the suite's recipe) or "" (no tuned row on
    #: the page); ``recipe`` says it in words: budget, chosen values, cost (:func:`label_tuning`)
    tuning: str = ""
    recipe: str = ""
    #: a tuned row's chosen values, trials per configuration and cost (total trial wall time, seconds)
    tuned_values: str = ""
    tuned_budget: int | None = None
    tuned_cost_s: float | None = None

    @property
    def label(self) -> str:
        base = f"{self.method} [{self.variant}]" if self.variant else self.method
        return f"{base} ({self.recipe})" if self.recipe else base

    @property
    def bits_per_pixel(self) -> float | None:
        if self.bits_per_token is None or not self.tokens_per_item or not self.pixels_per_item:
            return None
        return self.bits_per_token * self.tokens_per_item / self.pixels_per_item

    def count(self, state: str) -> int:
        return sum(s.state == state for s in self.seeds.values())

    @property
    def status(self) -> str:
        if self.reported:
            return "reported"
        if self.n == 0:  # no finished seed: what happened to them, if all alike
            states = {s.state for s in self.seeds.values()}
            return states.pop() if len(states) == 1 else "failed"
        problems = self.failed or self.count("running") or self.nan
        return "partial" if problems else "ok"


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def newest_digest(runs: list[Any]) -> str:
    """The plugin digest of the newest run that is not still running (else of the newest run)."""
    done = [r for r in runs if r.info.status not in ("RUNNING", "SCHEDULED")] or runs
    return max(done, key=lambda r: r.info.start_time or 0).data.tags.get(DIGEST_TAG, "")


def latest_per_seed(runs: list[Any]) -> dict[int, Any]:
    """The newest run per seed, a FINISHED one before any other (a re-run replaces, never doubles)."""
    latest: dict[int, Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        seed = _int(run.data.tags.get("harness.seed"))
        if seed in latest and latest[seed].info.status == "FINISHED" and run.info.status != "FINISHED":
            continue
        latest[seed] = run
    return latest


def seed_state(run: Any) -> Seed:
    seed, status, tags = _int(run.data.tags.get("harness.seed")), run.info.status, run.data.tags
    if status == "FINISHED":
        nan = tuple(sorted(k[5:] for k, v in run.data.metrics.items()
                           if k.startswith("eval/") and not math.isfinite(v)))
        return Seed(seed, "nan" if nan else "ok", run.info.run_id, nan=nan)
    if status in ("RUNNING", "SCHEDULED"):
        return Seed(seed, "running", run.info.run_id)
    if status == "KILLED" and "harness.checkpoint_step" in tags:
        return Seed(seed, "interrupted", run.info.run_id, _int(tags["harness.checkpoint_step"]))
    return Seed(seed, "killed" if status == "KILLED" else "failed", run.info.run_id)


def make_row(runs: list[Any]) -> tuple[Row, list[Any]]:
    """The row of one configuration's runs, and the runs it stands on (newest digest, one per seed)."""
    digest = newest_digest(runs)
    kept = [r for r in runs if r.data.tags.get(DIGEST_TAG, "") == digest]
    latest = latest_per_seed(kept)
    tags = kept[-1].data.tags
    row = Row(tags.get("harness.method", "?"), tags.get("harness.quantizer", "?"),
              _int(tags.get("harness.codebook_size")), _int(tags.get("harness.dim")),
              plugin=tags.get("harness.plugin_distribution", ""), group=tags.get("harness.group_hash", ""),
              digest=digest, left_out=len(runs) - len(kept))
    row.seeds = {seed: seed_state(run) for seed, run in sorted(latest.items())}
    finished = [latest[s] for s, st in row.seeds.items() if st.state in ("ok", "nan")]
    row.n = len(finished)
    row.failed = sum(st.state in ("failed", "killed", "interrupted") for st in row.seeds.values())
    _add_metrics(row, finished)
    _add_rate(row, kept)
    row.params = dict(max(kept, key=lambda r: len(r.data.params)).data.params)
    _add_tuning(row, kept)
    return row, list(latest.values())


def _add_tuning(row: Row, runs: list[Any]) -> None:
    """A tuned row's budget, chosen values and cost, from its runs' tags and config."""
    tuned = [r for r in runs if r.data.tags.get("harness.tuning") == "tuned"]
    if not tuned:
        return
    tags = max(tuned, key=lambda r: r.info.start_time or 0).data.tags
    row.tuning = "tuned"
    row.tuned_values = tags.get("harness.tuned.values", "")
    row.tuned_budget = _int(row.params.get("tuned.budget")) or None
    row.tuned_cost_s = _float(tags.get("harness.tuned.cost_s"))


def _add_metrics(row: Row, finished: list[Any]) -> None:
    values: dict[str, list[float]] = {}
    for run in finished:
        seed = _int(run.data.tags.get("harness.seed"))
        row.run_ids[seed] = run.info.run_id
        row.seed_metrics[seed] = {}
        if tokens := _int(run.data.tags.get("harness.eval_tokens")):
            row.eval_tokens[seed] = tokens
        for key, value in run.data.metrics.items():
            if not key.startswith("eval/"):
                continue
            if math.isfinite(value):
                values.setdefault(key[5:], []).append(value)
                row.seed_metrics[seed][key[5:]] = value
            else:
                row.nan[key[5:]] = row.nan.get(key[5:], 0) + 1
        for key, reason in run.data.tags.items():
            if key.startswith("harness.unavailable."):
                row.unavailable[key[len("harness.unavailable."):]] = reason
    for key, vals in values.items():
        row.metrics[key] = Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0,
                                len(vals))


def _add_rate(row: Row, runs: list[Any]) -> None:
    for run in runs:
        tags = run.data.tags
        bits = _float(tags.get(RATE_TAGS[0]))
        if bits is not None:
            row.bits_per_token = bits
            row.tokens_per_item = _int(tags.get(RATE_TAGS[1])) or None
            row.pixels_per_item = _int(tags.get(RATE_TAGS[2])) or None
            return


def label_variants(rows: list[Row]) -> None:
    """Rows of one method, K and dim that differ in params get those params as their variant."""
    same: dict[tuple[str, int, int], list[Row]] = {}
    for row in rows:
        same.setdefault((row.method, row.codebook_size, row.dim), []).append(row)
    for group in same.values():
        if len(group) < 2:
            continue
        keys = sorted({k for r in group for k in r.params} - NOT_A_VARIANT - tuning_keys(group))
        differing = [k for k in keys if len({r.params.get(k) for r in group}) > 1]
        for row in group:
            parts = [f"{k}={row.params.get(k, '–')}" for k in differing]
            tuning_only = not parts and len({r.tuned_values for r in group}) == len(group)
            row.variant = ", ".join(parts) if parts or tuning_only else f"config {row.group[:8]}"


def tuning_keys(rows: list[Row]) -> set[str]:
    """Params that differ because a row is tuned: its ``tuned.*`` record and the knobs it chose."""
    keys = {k for r in rows for k in r.params if k.startswith("tuned.")}
    for key in [k for k in keys if k.startswith("tuned.values.")]:
        kind, _, name = key[len("tuned.values."):].partition(".")
        keys.add(f"train.{name}" if kind == "train" else f"quantizer.params.{name}")
    return keys


def label_tuning(rows: list[Row]) -> None:
    """On a page with tuned rows, every measured row says its recipe: tuned (how) or the shared one."""
    if not any(r.tuning == "tuned" for r in rows):
        return
    for row in rows:
        if row.reported:
            continue
        if row.tuning != "tuned":
            row.tuning, row.recipe = "shared", "shared recipe"
            continue
        cost = f"{row.tuned_cost_s:.0f} s" if row.tuned_cost_s is not None else "cost not recorded"
        row.recipe = f"tuned: {row.tuned_values}; {row.tuned_budget or '?'} trials, {cost}"


def add_references(rows: list[Row], references: list[dict[str, Any]]) -> None:
    """The suite's ``[[reference]]`` rows (the papers' numbers), at ``log2 K`` bits per token."""
    for ref in references:
        k = int(ref.get("codebook_size", 0) or 0)
        row = Row(ref["method"], ref["method"], k, ref.get("dim", 0), reported=True,
                  source=ref.get("source", ""), note=ref.get("note", ""))
        row.metrics = {key: Stat(float(v), 0.0, 1) for key, v in ref.get("metrics", {}).items()}
        row.bits_per_token = math.log2(k) if k > 1 else None
        rows.append(row)


def rate_groups(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """Rows grouped by bits per token (rates within ``RATE_TOLERANCE`` of a group's lowest join it),
    lowest first; rows whose cells recorded no rate come last, together."""
    starts: list[float] = []  # the lowest rate of each group
    for bits in sorted({r.bits_per_token for r in rows if r.bits_per_token is not None}):
        if not starts or bits - starts[-1] > RATE_TOLERANCE:
            starts.append(bits)
    groups: list[list[Row]] = [[] for _ in starts]
    for row in rows:  # in the given order: a group keeps the board's ranking
        if row.bits_per_token is not None:
            groups[max(i for i, start in enumerate(starts) if start <= row.bits_per_token)].append(row)
    out = [(rate_label(g), g) for g in groups]
    unrated = [r for r in rows if r.bits_per_token is None]
    if unrated:
        out.append(("rate not recorded", unrated))
    return out


def rate_label(rows: list[Row]) -> str:
    low, high = min(r.bits_per_token for r in rows), max(r.bits_per_token for r in rows)
    if round(low, 2) == round(high, 2):
        return f"{low:.3g} bits/token"
    return f"{low:.3g}–{high:.3g} bits/token"
