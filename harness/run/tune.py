"""``harness tune``: an equal tuning budget per method, chosen on the selection split, then the seeds.

Two phases on the ordinary run lifecycle (:mod:`harness.run.lifecycle`) and executor
seam (:mod:`harness.run.executors`); nothing here trains a cell itself:

1. **Trials.** For every configuration (method, codebook size, dim) of the suite, the
   ``budget`` settings of its search space (:mod:`harness.suite.tuning`), each one cell
   at seed 0 that trains on the dataset's fit split and is scored on its selection
   split. They run nested under a *tuning* parent run. Each configuration's best
   finished trial is its choice, recorded on that parent (``tuning.json``, tags)
   with every trial's wall time and their total (the cost).
2. **Tuned cells.** The suite's seeds at each chosen setting, under an ordinary suite
   parent run. Their config carries a ``tuned`` table (budget, values, metric,
   split), so they are rows of their own beside the shared recipe's; their runs
   are tagged with the cost.

A trial or cell is a variant of the suite (``--set`` strings), so every executor can
rebuild it. ``--resume`` skips finished trials and cells; ``--shard I/N`` runs a slice
of each phase, and a configuration is chosen once all its trials are in the store
(from any shard): run again with ``--resume`` after the shards to run the rest.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from dataclasses import dataclass, field, replace
from typing import Any

from harness.cell.record import tuning_cost
from harness.cell.runner import CellResult
from harness.errors import UnknownNameError, suggest
from harness.host import Host, get_host
from harness.recovery.interrupt import InterruptGuard
from harness.recovery.signals import deferred
from harness.run import preflight
from harness.run.executors import CellOutcome, Executor
from harness.run.lifecycle import (
    SuiteResult,
    cell_options,
    choose_executor,
    close_orphans,
    close_suite,
    open_tracker,
    plan_cells,
    report_interrupted,
    select_cells,
    select_shard,
    start_parent,
)
from harness.run.options import RunOptions
from harness.suite import Cell, Suite
from harness.suite import tuning as spec
from harness.tracking import Tracker, tags_for

Slot = tuple[str, int, int]  # (method, codebook_size, dim): one configuration, tuned on its own


@dataclass
class Group:
    """The cells of one variant of the suite: one method at one setting (one ``cell_specs`` call)."""

    suite: Suite
    method: str
    values: dict[str, Any]
    cells: list[Cell]


@dataclass
class Trial:
    values: dict[str, Any]
    run_id: str | None = None
    status: str = "MISSING"
    score: float | None = None
    seconds: float = 0.0


@dataclass
class Choice:
    """One configuration's trials and the setting chosen from them (``values`` None: not decided yet)."""

    slot: Slot
    trials: list[Trial]
    values: dict[str, Any] | None = None
    score: float | None = None

    @property
    def cost(self) -> float:
        return sum(t.seconds for t in self.trials)

    def record(self) -> dict[str, Any]:
        return {"method": self.slot[0], "codebook_size": self.slot[1], "dim": self.slot[2],
                "chosen": self.values, "score": self.score, "cost_s": round(self.cost, 3),
                "trials": [t.__dict__ for t in self.trials]}


@dataclass
class TuneResult:
    suite: Suite
    tuning: spec.Tuning
    choices: dict[Slot, Choice]
    trials: list[CellResult]
    tuned: SuiteResult | None
    tuning_run_id: str | None = None
    notes: list[str] = field(default_factory=list)


# -- the protocol, checked against the plugins ----------------------------------------------------

def check_tuning(host: Host, suite: Suite, cells: list[Cell]) -> spec.Tuning:
    """The suite's ``[tuning]`` with defaults; a metric, split or knob the plugins lack: file:line."""
    tuning = spec.read_tuning(suite.data, suite.primary_metric, lambda m: host.higher_is_better(m) is not False)
    metrics = [m if isinstance(m, str) else str(m.get("name")) for m in suite.data.get("eval", {}).get("metrics", [])]
    if tuning.metric not in metrics:
        raise suite.error(str(UnknownNameError("selection metric", tuning.metric, metrics,
                                               " among the suite's eval.metrics")), ("tuning", "metric"))
    dataset = host.datasets.get(suite.data["dataset"]["name"]).obj
    splits = dict(getattr(dataset, "selection_splits", {}) or {})
    if tuning.split not in splits:
        why = " (val is what the leaderboard reports: selection never sees it)" if tuning.split == "val" else ""
        close = [c for c in suggest(tuning.split, splits) if tuning.split != "val"]
        known = f"did you mean {close[0]!r}?" if close else f"its selection splits: {', '.join(splits) or 'none'}"
        raise suite.error(f"dataset {dataset.name!r} has no selection split {tuning.split!r}{why}; {known}",
                          ("tuning", "split"))
    for method in sorted({c.method for c in cells}):
        check_knobs(host, suite, tuning, method)
    return tuning


def check_knobs(host: Host, suite: Suite, tuning: spec.Tuning, method: str) -> None:
    from harness.cell.build import check_params

    quantizer = host.quantizers.get(suite.method(method)["quantizer"]).obj
    knobs = {k.partition(".")[2]: 0 for k in spec.method_space(tuning, plugin_space(quantizer))
             if k.startswith("quantizer.")}
    try:
        check_params(quantizer, "quantizers", quantizer.name, knobs, f" (tuning.space, method {method!r})")
    except UnknownNameError as exc:
        raise suite.error(str(exc), ("tuning", "space")) from None


def plugin_space(quantizer: Any) -> dict[str, tuple[float, float, str]]:
    return dict(getattr(quantizer, "tuning_space", {}) or {})


# -- variants of the suite -------------------------------------------------------------------------

def variant(suite: Suite, method: str, values: dict[str, Any], extra: dict[str, Any]) -> Suite:
    """The suite with ``values`` set for ``method`` (train.* or its quantizer params) and ``extra`` tables."""
    data = copy.deepcopy(suite.data)
    for knob, value in values.items():
        kind, _, name = knob.partition(".")
        if kind == "train":
            data["train"][name] = value
        else:
            table = data.setdefault("methods", {}).setdefault(method, {})
            table.setdefault("params", {})[name] = value
    for path, value in extra.items():
        node = data
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return Suite(suite.name, suite.path, suite.profile, data, suite.locator)


def slot_of(cell: Cell) -> Slot:
    return (cell.method, cell.codebook_size, cell.dim)


def trial_groups(host: Host, suite: Suite, tuning: spec.Tuning, cells: list[Cell]) -> list[Group]:
    """Every method's trials: one group per setting, seed 0, on the fit and selection splits."""
    dataset = host.datasets.get(suite.data["dataset"]["name"]).obj
    extra = {"dataset.splits": {"train": dataset.selection_splits[tuning.split], "eval": tuning.split},
             "matrix.seeds": 1}
    wanted = {slot_of(c) for c in cells}
    groups = []
    for method in dict.fromkeys(c.method for c in cells):
        quantizer = host.quantizers.get(suite.method(method)["quantizer"]).obj
        for values in spec.trials(spec.method_space(tuning, plugin_space(quantizer)), tuning.budget):
            trial_suite = variant(suite, method, values, extra)
            chosen = [c for c in trial_suite.cells([method]) if slot_of(c) in wanted]
            groups.append(Group(trial_suite, method, values, chosen))
    return groups


def tuned_groups(suite: Suite, tuning: spec.Tuning, choices: dict[Slot, Choice], cells: list[Cell]
                 ) -> list[Group]:
    """The suite's seeds at each decided configuration's chosen values (tagged by their ``tuned`` table)."""
    by_setting: dict[tuple[str, str], list[Slot]] = {}
    for slot, choice in choices.items():
        if choice.values is not None:
            by_setting.setdefault((slot[0], json.dumps(choice.values, sort_keys=True)), []).append(slot)
    groups = []
    for (method, key), slots in by_setting.items():
        values = json.loads(key)
        marker = {"budget": tuning.budget, "values": values, "metric": tuning.metric, "split": tuning.split}
        tuned_suite = variant(suite, method, values, {"tuned": marker})
        seeds = {c.seed for c in cells}
        chosen = [c for c in tuned_suite.cells([method]) if slot_of(c) in slots and c.seed in seeds]
        groups.append(Group(tuned_suite, method, values, chosen))
    return groups


# -- running groups on the executor ------------------------------------------------------------------

def run_groups(executor: Executor, tracker: Tracker, groups: list[Group], parent: str, uri: str,
               options: RunOptions, host: Host) -> list[CellResult]:
    """This shard's cells of every group, in one executor call (finished ones skipped with --resume;
    a cell whose plugin code changed since its earlier run is handled as ``harness run`` does)."""
    from harness.recovery.checkpoint import checkpoint_root
    from harness.run.specs import cell_specs

    pairs = select_shard([(g, c) for g in groups for c in g.cells], options.shard)  # type: ignore[arg-type]
    results: list[CellResult] = []
    specs, cells = [], {}
    for group in groups:
        mine = [c for g, c in pairs if g is group]
        if not mine:
            continue
        skipped, todo = plan_cells(tracker, group.suite, mine, options, checkpoint_root(uri), host)
        results += skipped
        specs += cell_specs(group.suite, todo, parent, uri, cell_options(options, executor))
        cells.update({c.config_hash: c for c, _ in todo})

    def collect(outcome: CellOutcome) -> None:
        results.append(CellResult(cells[outcome.cell_hash], outcome.status, dict(outcome.metrics),
                                  dict(outcome.unavailable), error=outcome.error, run_id=outcome.run_id,
                                  seconds=outcome.seconds))
        print(f"harness: {cells[outcome.cell_hash].run_name} {outcome.status} ({outcome.seconds:.1f} s)",
              file=sys.stderr)

    if specs:
        executor.run(specs, collect)
    order = {c.config_hash: i for i, (_, c) in enumerate(pairs)}
    return sorted(results, key=lambda r: order.get(r.cell.config_hash, len(order)))


# -- choosing -----------------------------------------------------------------------------------------

def trial_runs(tracker: Tracker, suite: Suite) -> dict[str, Any]:
    """The newest run of each trial config hash in the store (a FINISHED one before any other)."""
    runs = tracker.runs(suite.name, "tags.`harness.kind` = 'cell' and tags.`harness.tuning` = 'trial'")
    newest: dict[str, Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        key = run.data.tags.get("harness.config_hash", "")
        if key in newest and newest[key].info.status == "FINISHED" and run.info.status != "FINISHED":
            continue
        newest[key] = run
    return newest


def read_trial(run: Any, values: dict[str, Any], metric: str) -> Trial:
    if run is None:
        return Trial(values)
    score = run.data.metrics.get(f"eval/{metric}")
    seconds = max(0.0, ((run.info.end_time or run.info.start_time or 0) - (run.info.start_time or 0)) / 1000)
    ok = run.info.status == "FINISHED" and score is not None and math.isfinite(score)
    return Trial(values, run.info.run_id, run.info.status, score if ok else None, seconds)


def choose(tracker: Tracker, suite: Suite, tuning: spec.Tuning, groups: list[Group]) -> dict[Slot, Choice]:
    """Each configuration's best trial, once every trial of it has ended (FINISHED or FAILED)."""
    runs = trial_runs(tracker, suite)
    choices: dict[Slot, Choice] = {}
    for group in groups:
        for cell in group.cells:
            trial = read_trial(runs.get(cell.config_hash), group.values, tuning.metric)
            choices.setdefault(slot_of(cell), Choice(slot_of(cell), [])).trials.append(trial)
    sign = 1.0 if tuning.direction == "max" else -1.0
    for choice in choices.values():
        scored = [t for t in choice.trials if t.score is not None]
        if all(t.status in ("FINISHED", "FAILED") for t in choice.trials) and scored:
            best = max(scored, key=lambda t: sign * t.score)  # type: ignore[operator]
            choice.values, choice.score = best.values, best.score
    return choices


def record_choices(tracker: Tracker, parent: str, tuning: spec.Tuning, choices: dict[Slot, Choice]) -> None:
    """``tuning.json`` (every trial, its wall time, the choice) and a tag/metric per configuration."""
    from harness.tracking import guarded

    records = [c.record() for c in choices.values()]
    guarded("saving tuning.json", lambda: tracker.log_json(parent, {"protocol": tuning.record(),
                                                                   "choices": records}, "tuning.json"))
    tags, metrics = {}, {"tuning/total_seconds": sum(c.cost for c in choices.values())}
    for (method, k, d), choice in choices.items():
        name = f"{method}-K{k}-d{d}"
        tags[f"harness.tuning.{name}"] = spec.describe(choice.values) if choice.values else "undecided"
        metrics[f"tuning/{name}/cost_s"] = choice.cost
        for trial in choice.trials:
            if trial.run_id:
                tracker.log_metrics(trial.run_id, {"tuning/trial_seconds": trial.seconds})
    tracker.set_tags(parent, tags)
    tracker.log_metrics(parent, metrics)


# -- the two phases ---------------------------------------------------------------------------------

def tuning_parent(tracker: Tracker, host: Host, suite: Suite, tuning: spec.Tuning, groups: list[Group],
                  options: RunOptions, executor: str) -> str:
    """The tuning parent run: what was searched, on which split, for which metric."""
    from harness import __version__
    from harness.tracking import git_commit

    tags = tags_for([("kind", "tuning"), ("suite", suite.name), ("suite_version", suite.version),
                     ("profile", suite.profile), ("version", __version__), ("git_commit", git_commit()),
                     ("executor", executor), ("trials", sum(len(g.cells) for g in groups)),
                     ("shard", "/".join(map(str, options.shard)) if options.shard else "1/1")])
    run_id = tracker.start_run(suite.name, f"{suite.name}-{suite.profile}-tuning", tags)
    tracker.log_params(run_id, {f"tuning.{k}": json.dumps(v) if isinstance(v, dict) else v
                                for k, v in tuning.record().items()})
    return run_id


def run_trials(tracker: Tracker, host: Host, suite: Suite, tuning: spec.Tuning, groups: list[Group],
               options: RunOptions, executor: Executor, uri: str) -> tuple[str, list[CellResult],
                                                                           dict[Slot, Choice]]:
    """Phase 1: the trials under a tuning parent, then each configuration's choice recorded on it."""
    parent = tuning_parent(tracker, host, suite, tuning, groups, options, executor.name)
    status, results, choices = "FAILED", [], {}
    try:
        results = run_groups(executor, tracker, groups, parent, uri, options, host)
        choices = choose(tracker, suite, tuning, groups)
        record_choices(tracker, parent, tuning, choices)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        with deferred():
            close_orphans(tracker, suite.name, parent, "KILLED" if status == "KILLED" else "FAILED")
            tracker.end_run(parent, status)
    return parent, results, choices


def run_tuned(tracker: Tracker, host: Host, suite: Suite, groups: list[Group], choices: dict[Slot, Choice],
              options: RunOptions, executor: Executor, uri: str, tuning_run: str) -> SuiteResult:
    """Phase 2: the suite's seeds at the chosen settings, as ordinary cells under a suite parent.

    The parent is tagged ``harness.kind = tuned``, not ``suite``: a page takes its claims and
    ranking rules from the shared recipe's runs, never from a tuned run's.
    """
    cells = [c for g in groups for c in g.cells]
    parent = start_parent(tracker, host, suite, cells, sorted({g.method for g in groups}), options,
                          executor.name, extra=(("kind", "tuned"), ("tuning_run", tuning_run)))
    status, results = "FAILED", []
    try:
        results = run_groups(executor, tracker, groups, parent, uri, options, host)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        report_interrupted(results)
        raise
    finally:
        with deferred():
            tag_cost(tracker, results, choices)
            claims = close_suite(tracker, suite, parent, results, status)
    return SuiteResult(suite, results, claims, parent)


def tag_cost(tracker: Tracker, results: list[CellResult], choices: dict[Slot, Choice]) -> None:
    """Each tuned cell's run says what its setting cost: the total wall time of its configuration's trials."""
    for result in results:
        choice = choices.get(slot_of(result.cell))
        if result.run_id and choice is not None:
            tuning_cost(tracker, result.run_id, choice.cost, len(choice.trials), spec.describe(choice.values or {}))


def tune_suite(suite: Suite, methods: list[str] | None = None, options: RunOptions | None = None,
               host: Host | None = None) -> TuneResult:
    """Trials, choices, then the seeds at the chosen settings (module docstring)."""
    from harness.tracking import resolve_uri

    options, host = options or RunOptions(), host or get_host()
    cells = select_cells(host, suite, methods, bits=options.bits)  # every name and parameter checked
    tuning = check_tuning(host, suite, cells)
    uri = resolve_uri(options.tracking_uri)
    executor = choose_executor(host, suite, options, uri)
    tracker = open_tracker(uri)
    preflight.check(host, suite, cells, options, tracker)
    groups = trial_groups(host, suite, tuning, cells)
    with InterruptGuard():
        run_id, trials, choices = run_trials(tracker, host, suite, tuning, groups, options, executor, uri)
        tuned = tuned_groups(suite, tuning, choices, cells)
        result = TuneResult(suite, tuning, choices, trials, None, run_id)
        waiting = [c for c in choices.values() if c.values is None]
        if waiting:
            result.notes.append(f"{len(waiting)} configurations wait for trials (another shard's, or failed): "
                                f"`--resume` after every shard ends chooses and runs them")
        if tuned:
            result.tuned = run_tuned(tracker, host, suite, tuned, choices, replace(options), executor, uri,
                                     run_id)
    return result
