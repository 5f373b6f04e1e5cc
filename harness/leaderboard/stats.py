"""Uncertainty on every number: intervals over seeds, tie sets, P(X > Y), seeds needed, mean ranks.

Pure functions over per-seed values (scipy's Student t and noncentral t functions, the
routines ``scipy.stats.t`` and ``scipy.stats.nct`` call, do the distributions), and
:func:`board_stats`, which applies them to a board's rate groups once and keeps
the result on the board for every renderer:

- a row's metric: mean and a 95% **t-interval** over its seeds (with one seed
  there is no interval, and the page says so);
- per rate group and column, the rows **tied with the best**: a row is out of
  the set only when some other row of its group is significantly better than
  it (two-sided Welch t-tests over seeds, Holm-corrected over that row's
  comparisons, alpha 0.05), so the set holds the truly best row with
  probability at least 95%, however the data happened to order the means;
- for the top pair of each group: P(X > Y) over their seeds, and how many
  seeds per row would separate them at the measured spread (80% power);
- per row label over all groups (and suites): the mean rank with a stratified
  bootstrap interval (seeds resampled within each group, as rliable does), and
  a performance profile (drawn only when the page is drawn).

Why these choices is written up in docs/leaderboard.md.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special

#: what computes the numbers, named on every page
#: (scipy.special, not scipy.stats: the same routines without 1-3 s of import on every page)
LIBRARY = "scipy"
CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
#: the seeds-needed search stops here ("more than 1000")
MAX_SEEDS = 1000
BOOTSTRAP_REPS = 2000
#: performance-profile thresholds on the group-normalised score (1 = the group's best mean)
TAUS = np.linspace(0.0, 1.0, 101)


# -- pure functions ------------------------------------------------------------------------------

def critical_value(n: Any, confidence: float = CONFIDENCE) -> Any:
    """Student's t quantile for a two-sided interval over ``n`` seeds (n - 1 degrees of freedom)."""
    if np.ndim(n) == 0:  # every cell of a page asks: one quantile per seed count
        return _scalar_critical(int(n), confidence)
    return special.stdtrit(np.asarray(n) - 1, 0.5 + confidence / 2)


@functools.lru_cache(maxsize=256)
def _scalar_critical(n: int, confidence: float) -> float:
    return float(special.stdtrit(n - 1, 0.5 + confidence / 2))


def t_interval(mean: Any, std: Any, n: Any, confidence: float = CONFIDENCE) -> tuple[Any, Any] | None:
    """The t-interval ``mean ± t * std / sqrt(n)``; None with fewer than 2 seeds (no spread known).

    Works on scalars or arrays (then every ``n`` must be at least 2).
    """
    if np.ndim(n) == 0 and n < 2:
        return None
    half = critical_value(n, confidence) * np.asarray(std) / np.sqrt(n)
    return mean - half, mean + half


def welch_p(a: tuple[float, float, int], b: tuple[float, float, int]) -> float:
    """Two-sided Welch t-test of two rows given (mean, std, n); exact 0 / 1 when neither spreads."""
    (m1, s1, n1), (m2, s2, n2) = a, b
    if s1 == 0 and s2 == 0:
        return 1.0 if m1 == m2 else 0.0
    from scipy import stats as sps  # the reference; the page's own numbers come from welch_matrix

    return float(sps.ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False).pvalue)


def welch_matrix(means: np.ndarray, stds: np.ndarray, ns: np.ndarray) -> np.ndarray:
    """``p[i, j]``: two-sided Welch p-value of row j against row i (the diagonal is 1)."""
    v = stds ** 2 / ns
    var = v[:, None] + v[None, :]
    diff = means[None, :] - means[:, None]
    dof_den = (v ** 2 / (ns - 1))[:, None] + (v ** 2 / (ns - 1))[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(diff) / np.sqrt(var)
        p = 2 * special.stdtr(var ** 2 / dof_den, -t)
    p = np.where(var == 0, np.where(diff == 0, 1.0, 0.0), p)
    np.fill_diagonal(p, 1.0)
    return p


def holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values along the last axis (each row of ``p`` is one family)."""
    p = np.asarray(p, dtype=float)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    adjusted = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def tied_with_best(means: Sequence[float], stds: Sequence[float], ns: Sequence[int],
                   higher: bool = True, alpha: float = ALPHA) -> np.ndarray:
    """Which rows could be the best: True unless another row is significantly better.

    Row i's family is its k - 1 Welch comparisons, Holm-corrected; i leaves the set
    when a comparison with a better-mean row is rejected. Every n must be at least 2.
    """
    means, stds, ns = (np.asarray(x, dtype=float) for x in (means, stds, ns))
    k = len(means)
    if k < 2:
        return np.ones(k, dtype=bool)
    off = ~np.eye(k, dtype=bool)
    p = welch_matrix(means, stds, ns)[off].reshape(k, k - 1)
    sign = 1.0 if higher else -1.0
    better = (sign * (means[None, :] - means[:, None]))[off].reshape(k, k - 1) > 0
    return ~np.any(better & (holm(p) <= alpha), axis=1)


def prob_improvement(x: Sequence[float], y: Sequence[float], higher: bool = True) -> float:
    """P(X > Y) over seeds: the share of seed pairs where x beats y, ties counting half
    (the Mann-Whitney U statistic over n_x * n_y; rliable's probability of improvement)."""
    x, y = np.asarray(x, dtype=float)[:, None], np.asarray(y, dtype=float)[None, :]
    wins = (x > y) if higher else (x < y)
    return float(np.mean(wins + 0.5 * (x == y)))


def welch_power(diff: float, s1: float, s2: float, n: np.ndarray, alpha: float) -> np.ndarray:
    """Power of a two-sided Welch test with ``n`` seeds per row (noncentral t)."""
    var = (s1 ** 2 + s2 ** 2) / n
    dof = (n - 1) * (s1 ** 2 + s2 ** 2) ** 2 / (s1 ** 4 + s2 ** 4)
    crit = special.stdtrit(dof, 1 - alpha / 2)
    nc = abs(diff) / np.sqrt(var)
    power = 1 - special.nctdtr(dof, nc, crit) + special.nctdtr(dof, nc, -crit)
    # scipy's noncentral t returns NaN far in its tail (large nc): the normal limit is exact enough there
    return np.where(np.isnan(power), special.ndtr(nc - crit) + special.ndtr(-crit - nc), power)


def seeds_needed(diff: float, s1: float, s2: float, alpha: float = ALPHA, power: float = POWER,
                 limit: int = MAX_SEEDS) -> int | None:
    """Seeds per row for a Welch test at ``alpha`` to separate two rows with ``power``, if the
    measured difference and spreads are the truth; None when ``limit`` seeds do not suffice.
    (Power grows with n: a bisection over [2, limit].)"""
    if diff == 0:
        return None
    if s1 == 0 and s2 == 0:
        return 2

    def enough(n: int) -> bool:
        return bool(welch_power(diff, s1, s2, np.float64(n), alpha) >= power)

    low, high = 2, limit
    if enough(low):
        return low
    if not enough(high):
        return None
    while high - low > 1:  # enough(high), not enough(low)
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def stratified_means(values: Sequence[Sequence[float]], reps: int, rng: np.random.Generator) -> np.ndarray:
    """(reps, rows) bootstrap means: each row's seeds resampled with replacement, row by row."""
    out = np.empty((reps, len(values)))
    for j, vals in enumerate(values):
        vals = np.asarray(vals, dtype=float)
        out[:, j] = vals[rng.integers(0, len(vals), size=(reps, len(vals)))].mean(axis=1)
    return out


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks along the last axis of a 2-d array, 1 = smallest, ties sharing their average rank
    (what ``scipy.stats.rankdata`` gives): sort, then give each run of equal values its middle."""
    rows, k = x.shape
    order = np.argsort(x, axis=1, kind="stable")
    ordered = np.take_along_axis(x, order, axis=1)
    position = np.broadcast_to(np.arange(k), (rows, k))
    starts = np.ones((rows, k), dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    ends = np.ones((rows, k), dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    last = np.minimum.accumulate(np.where(ends, position, k - 1)[:, ::-1], axis=1)[:, ::-1]
    out = np.empty((rows, k))
    np.put_along_axis(out, order, (first + last) / 2 + 1, axis=1)
    return out


def mean_ranks(tasks: Iterable[tuple[dict[str, Sequence[float]], bool]], reps: int = BOOTSTRAP_REPS,
               seed: int = 0, confidence: float = CONFIDENCE) -> dict[str, tuple[float, float, float, int]]:
    """Per entry over tasks (``{entry: seed values}``, higher-is-better): mean rank (1 = best),
    its stratified-bootstrap percentile interval, and the number of tasks it is ranked in."""
    rng = np.random.default_rng(seed)
    sums: dict[str, np.ndarray] = {}
    points: dict[str, float] = {}
    counts: dict[str, int] = {}
    for entries, higher in tasks:
        names = list(entries)
        sign = -1.0 if higher else 1.0
        point = average_ranks(sign * np.array([np.mean(entries[e]) for e in names])[None, :])[0]
        boot = average_ranks(sign * stratified_means([entries[e] for e in names], reps, rng))
        for j, name in enumerate(names):
            sums[name] = sums.get(name, 0.0) + boot[:, j]
            points[name] = points.get(name, 0.0) + point[j]
            counts[name] = counts.get(name, 0) + 1
    tail = 100 * (1 - confidence) / 2
    return {name: (points[name] / counts[name], *(np.percentile(sums[name] / counts[name],
                                                                 [tail, 100 - tail])), counts[name])
            for name in sorted(points, key=lambda e: points[e] / counts[e])}


def performance_profile(tasks: Iterable[tuple[dict[str, Sequence[float]], bool]],
                        taus: np.ndarray = TAUS) -> dict[str, np.ndarray]:
    """Per entry: the share of its seeds scoring at least tau, averaged over tasks (rliable's
    profile). A seed's score is normalised within its task: 0 = the worst row mean, 1 = the best."""
    shares: dict[str, list[np.ndarray]] = {}
    for entries, higher in tasks:
        means = {e: float(np.mean(v)) for e, v in entries.items()}
        best = max(means.values()) if higher else min(means.values())
        worst = min(means.values()) if higher else max(means.values())
        if best == worst:
            continue
        for name, vals in entries.items():
            score = (np.asarray(vals, dtype=float) - worst) / (best - worst)
            shares.setdefault(name, []).append((score[:, None] >= taus[None, :]).mean(axis=0))
    return {name: np.mean(s, axis=0) for name, s in shares.items()}


# -- a board's statistics ------------------------------------------------------------------------

@dataclass
class GroupStats:
    """One rate group and column: who is tied with the best, the top pair, seeds needed."""

    label: str
    column: str
    higher: bool
    #: rows with at least 2 clean seeds: the ones tested
    tested: list[Any]
    #: rows with a clean value but fewer than 2 seeds: no interval, not tested
    untested: list[Any]
    tied: list[Any] = field(default_factory=list)
    #: (top row, runner-up) by mean among the tested rows
    pair: tuple[Any, Any] | None = None
    p_improvement: float | None = None
    #: P(X > Y) between each pair of the top rows (up to three), best first
    top_pairs: list[tuple[Any, Any, float]] = field(default_factory=list)
    seeds: int | None = None
    #: the Holm level the runner-up's comparison with the top row is tested at
    level: float = ALPHA

    @property
    def separated(self) -> bool:
        return self.pair is not None and not any(r is self.pair[1] for r in self.tied)

    def is_tied(self, row: Any) -> bool:
        return any(r is row for r in self.tied)


@dataclass
class BoardStats:
    groups: dict[tuple[str, str], GroupStats]
    #: row id -> the label of its rate group
    group_of: dict[int, str]
    #: entry -> (mean rank, low, high, groups ranked in), best first
    ranks: dict[str, tuple[float, float, float, int]]
    profile: dict[str, np.ndarray]
    primary: str = ""

    def group(self, row: Any, column: str) -> GroupStats | None:
        return self.groups.get((self.group_of.get(id(row), ""), column))

    def tied(self, row: Any, column: str) -> bool | None:
        """True / False when the row was tested in its group, None when it was not."""
        stats = self.group(row, column)
        if stats is None or not any(r is row for r in stats.tested) or len(stats.tested) < 2:
            return None
        return stats.is_tied(row)


def clean_values(row: Any, column: str) -> list[float]:
    """A measured row's finite per-seed values of ``column`` (none when a seed came back NaN)."""
    if row.reported or column not in row.metrics or row.nan.get(column):
        return []
    return [m[column] for m in row.seed_metrics.values() if column in m] or [row.metrics[column].mean]


def group_stats(label: str, rows: list[Any], column: str, higher: bool,
                detail: bool = True) -> GroupStats | None:
    """The tie set of one group and column (and with ``detail`` its top pair, P(X > Y) and seeds
    needed); None when fewer than two rows have the column."""
    valued = [r for r in rows if clean_values(r, column)]
    if len(valued) < 2:
        return None
    tested = [r for r in valued if r.metrics[column].n >= 2]
    stats = GroupStats(label, column, higher, tested, [r for r in valued if r.metrics[column].n < 2])
    if len(tested) < 2:
        return stats
    sign = 1.0 if higher else -1.0
    tested.sort(key=lambda r: -sign * r.metrics[column].mean)
    summary = np.array([(r.metrics[column].mean, r.metrics[column].std, r.metrics[column].n)
                        for r in tested])
    mask = tied_with_best(summary[:, 0], summary[:, 1], summary[:, 2], higher)
    stats.tied = [r for r, keep in zip(tested, mask, strict=True) if keep]
    if detail:
        _top_pair(stats, summary)
    return stats


def _top_pair(stats: GroupStats, summary: np.ndarray) -> None:
    """P(X > Y) among the top rows, and seeds needed for the top two at the runner-up's Holm level."""
    rows, column, higher = stats.tested, stats.column, stats.higher
    stats.pair = (rows[0], rows[1])
    top = rows[:3]
    stats.top_pairs = [(a, b, prob_improvement(clean_values(a, column), clean_values(b, column), higher))
                       for i, a in enumerate(top) for b in top[i + 1:]]
    stats.p_improvement = stats.top_pairs[0][2]
    p = welch_matrix(summary[:, 0], summary[:, 1], summary[:, 2])[1]  # the runner-up's family
    family = np.delete(p, 1)
    open_tests = int(np.sum(holm(family) > ALPHA))  # comparisons Holm has not rejected yet
    stats.level = ALPHA / max(open_tests, 1)
    (m1, s1, _), (m2, s2, _) = summary[0], summary[1]
    stats.seeds = seeds_needed(m1 - m2, s1, s2, stats.level)


def entry_name(row: Any, peers: list[Any] = ()) -> str:
    """What a row is ranked as across groups: method, variant and recipe kind (``tuned`` /
    ``shared``, not the chosen values, which differ by group); K and dim when two rows of
    its group would share the name."""
    def base(r: Any) -> str:
        name = f"{r.method} [{r.variant}]" if r.variant else r.method
        return f"{name} ({r.tuning})" if getattr(r, "tuning", "") else name

    if sum(base(r) == base(row) for r in peers) > 1:
        return f"{base(row)} K={row.codebook_size} d={row.dim}"
    return base(row)


def rank_tasks(boards: Iterable[Any], column: str | None = None) -> list[tuple[dict[str, list[float]], bool]]:
    """Every rate group of every board as one task: entry -> clean seed values of the primary."""
    tasks = []
    for board in boards:
        col = column or board.primary
        higher = board.higher_is_better.get(col, True)
        for _, rows in board.groups():
            entries = {entry_name(r, rows): clean_values(r, col) for r in rows}
            entries = {e: v for e, v in entries.items() if v}
            if len(entries) >= 2:
                tasks.append((entries, higher))
    return tasks


def compute(board: Any) -> BoardStats:
    """Every group's tie sets (every column); the primary's top pairs, mean ranks and profile."""
    groups: dict[tuple[str, str], GroupStats] = {}
    group_of: dict[int, str] = {}
    for label, rows in board.groups():
        for row in rows:
            group_of[id(row)] = label
        for column in board.columns:
            stats = group_stats(label, rows, column, board.higher_is_better.get(column, True),
                                detail=column == board.primary)
            if stats is not None:
                groups[(label, column)] = stats
    tasks = rank_tasks([board])
    return BoardStats(groups, group_of, mean_ranks(tasks) if tasks else {},
                      performance_profile(tasks) if tasks else {}, board.primary)


def board_stats(board: Any) -> BoardStats:
    """The board's statistics, computed once and kept on it (every renderer asks)."""
    if getattr(board, "stats", None) is None:
        board.stats = compute(board)
    return board.stats


# -- words ---------------------------------------------------------------------------------------

INTERVAL_NOTE = (f"Each measured value is the mean over seeds with its 95% confidence interval "
                 f"[low, high] (Student's t over the seeds, {LIBRARY}); n = finished seeds; a row "
                 "with one seed says `n=1: no interval`.")
TIE_NOTE = ("In each rate group the rows statistically tied with the best are in bold (★ in HTML): a "
            "row is left out only when another row of its group is significantly better (two-sided "
            f"Welch t-tests over seeds, Holm-corrected over the row's comparisons, α = {ALPHA}), so "
            "several rows can be bold and a lone best mean decides nothing; rows with one seed are "
            "not tested; never across groups.")
RANK_NOTE = (f"Rank 1 is a group's best mean; a method's mean rank over the rate groups it ran in, "
             f"with a {CONFIDENCE:.0%} stratified bootstrap interval ({BOOTSTRAP_REPS} resamples of "
             "each row's seeds within its group, rliable's scheme; numpy).")


def row_interval(row: Any, column: str) -> tuple[float, float] | None:
    """The 95% t-interval of a measured row's metric; None for one seed or a reported row."""
    stat = row.metrics.get(column)
    if stat is None or row.reported:
        return None
    bounds = t_interval(stat.mean, stat.std, stat.n)
    return None if bounds is None else (float(bounds[0]), float(bounds[1]))


def tie_word(stats: BoardStats, row: Any, column: str) -> str:
    """``yes`` / ``no`` (tested), ``untested (n=1)``, or empty (no comparison in its group)."""
    tied = stats.tied(row, column)
    if tied is not None:
        return "yes" if tied else "no"
    group = stats.group(row, column)
    if group is not None and any(r is row for r in group.untested):
        return f"untested (n={row.metrics[column].n})"
    return ""


def interval_text(stat: Any, digits: int = 4) -> str:
    """``mean [low, high]`` (95% t-interval), or the mean and why there is no interval."""
    bounds = t_interval(stat.mean, stat.std, stat.n)
    if bounds is None:
        return f"{stat.mean:.{digits}g} (n={stat.n}: no interval)"
    return f"{stat.mean:.{digits}g} [{bounds[0]:.{digits}g}, {bounds[1]:.{digits}g}]"


def seeds_text(stats: GroupStats) -> str:
    if stats.pair is None:
        return ""
    a, b = stats.pair
    if stats.separated:
        return f"separated at the measured seeds (n = {a.metrics[stats.column].n}, {b.metrics[stats.column].n})"
    if stats.seeds is None:
        if a.metrics[stats.column].mean == b.metrics[stats.column].mean:
            return "equal means: no number of seeds separates them"
        return f"more than {MAX_SEEDS} seeds per row would be needed to separate them"
    return (f"≈{stats.seeds} seeds per row would separate them ({POWER:.0%} power, Welch at "
            f"α = {stats.level:.2g}, if the measured means and spreads hold)")


def group_sentence(stats: GroupStats) -> str:
    """One line under a group's table: the tie set, the untested rows, the top pair."""
    col = stats.column
    parts = []
    if len(stats.tested) >= 2:
        names = ", ".join(r.label for r in stats.tied)
        parts.append(f"Tied with the best on `{col}` (Welch t-tests over seeds, Holm-corrected, "
                     f"α = {ALPHA}; {LIBRARY}): {names}.")
    else:
        parts.append(f"No tie set on `{col}`: fewer than two rows have 2 or more seeds.")
    if stats.untested:
        parts.append("Too few seeds to test (n < 2): " + ", ".join(r.label for r in stats.untested) + ".")
    if stats.pair is not None:
        a, b = stats.pair
        parts.append(f"Top pair {a.label} vs {b.label}: P({a.label} > {b.label}) = "
                     f"{stats.p_improvement:.2f}; {seeds_text(stats)}.")
    return " ".join(parts)


def rank_text(rank: tuple[float, float, float, int]) -> str:
    mean, low, high, count = rank
    return f"{mean:.2f} [{low:.2f}, {high:.2f}] over {count} group{'s' if count != 1 else ''}"


def profile_figure(board: Any) -> Any:
    """The performance-profile figure of the primary metric (matplotlib is imported here only)."""
    stats = board_stats(board)
    if len(stats.profile) < 2:
        return None
    from harness.leaderboard.figures import Figure, _png, plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = plt.get_cmap("tab20")
    for i, (name, share) in enumerate(sorted(stats.profile.items(), key=lambda kv: -kv[1].mean())):
        ax.plot(TAUS, share, label=name, color=colours(i % 20), linestyle="-" if i < 10 else "--")
    ax.set(xlabel=f"normalised {board.primary} (0 = a group's worst row mean, 1 = its best)",
           ylabel="share of seeds scoring ≥ τ", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    ax.grid(alpha=0.3)
    caption = ("rliable-style performance profile over every rate group: for each row label, the share "
               "of its seeds (averaged over groups) whose score reaches τ; higher curves are better.")
    return Figure("performance-profile", f"Performance profile ({board.primary})", caption, _png(fig))
