"""A suite's ``[tuning]`` table: the equal-budget protocol ``harness tune`` runs (docs/suites.md, "Tuning").

Every method gets the same number of trials (``budget``) drawn from its search
space, each trained on the dataset's fit split and scored on its selection split
(never on ``val``, which the leaderboard reports); the best trial's values become
the method's tuned setting. This module reads and checks the table and expands
a method's trials; :mod:`harness.run.tune` runs them.

Search space keys: ``train.<key>`` (a numeric training setting, e.g. ``train.lr``)
or ``quantizer.<param>`` (a constructor parameter of the method's quantizer).
A value is a list (the grid itself) or ``{low, high, scale}`` (``budget`` points
from ``low`` to ``high``, ``scale`` ``"log"`` (default) or ``"linear"``).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import SuiteError, suggest

Fail = Callable[[str, Sequence[Any]], SuiteError]
DIRECTIONS = ("max", "min")
SCALES = ("log", "linear")
RANGE_KEYS = ("low", "high", "scale")
KINDS = ("train", "quantizer")
DEFAULT_SPLIT = "select"
#: the default space: the suite's learning rate times 4**t for t evenly spaced in [-1, 1]
DEFAULT_LR_SPAN = 4.0
#: picks ``budget`` points of a space larger than the budget (the same points on every run)
SAMPLE_SEED = 0


@dataclass(frozen=True)
class Tuning:
    """The checked ``[tuning]`` table: per-method budget, space, selection metric and split."""

    budget: int
    metric: str
    direction: str
    split: str
    space: dict[str, list[float] | dict[str, Any]] = field(default_factory=dict)
    plugin_knobs: bool = False

    def record(self) -> dict[str, Any]:
        return {"budget": self.budget, "metric": self.metric, "direction": self.direction,
                "split": self.split, "space": self.space, "plugin_knobs": self.plugin_knobs}


# -- reading the table ---------------------------------------------------------------------------

def flatten_space(space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{train = {lr = [...]}}`` and ``{"train.lr" = [...]}`` both -> ``{"train.lr": [...]}``."""
    out: dict[str, Any] = {}
    for key, value in space.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not (set(value) & set(RANGE_KEYS)):
            out.update(flatten_space(value, name + "."))
        else:
            out[name] = value
    return out


def check_table(data: dict[str, Any], fail: Fail) -> None:
    """Checks that need no plugin: knob names, grids, ranges, direction (file and line in each error)."""
    table = data.get("tuning")
    if not table:
        return
    if table.get("direction", "max") not in DIRECTIONS:
        close = suggest(str(table["direction"]), DIRECTIONS)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise fail(f"tuning.direction must be 'max' or 'min', got {table['direction']!r}{hint}",
                   ("tuning", "direction"))
    train_keys = train_numbers()
    for knob, value in flatten_space(table.get("space", {})).items():
        at = ("tuning", "space", *knob.split("."))
        check_knob_name(knob, train_keys, lambda m, at=at: fail(m, at))
        check_values(knob, value, lambda m, at=at: fail(m, at))


def train_numbers() -> list[str]:
    """The numeric ``[train]`` settings a search space may vary."""
    from harness.suite.schema import SCHEMA

    return sorted(k for k, t in SCHEMA["train"].items() if t == (int, float))


def check_knob_name(knob: str, train_keys: list[str], fail: Callable[[str], SuiteError]) -> None:
    kind, _, name = knob.partition(".")
    if kind not in KINDS or not name:
        close = suggest(kind, KINDS)
        hint = f"; did you mean '{close[0]}.{name}'?" if close and name else ""
        raise fail(f"tuning.space key {knob!r} must be train.<setting> or quantizer.<param>{hint}")
    if kind == "train" and name not in train_keys:
        close = suggest(name, train_keys)
        hint = f"; did you mean 'train.{close[0]}'?" if close else f"; numeric settings: {', '.join(train_keys)}"
        raise fail(f"tuning.space: {knob!r} is not a numeric training setting{hint}")


def check_values(knob: str, value: Any, fail: Callable[[str], SuiteError]) -> None:
    """A grid (non-empty list of numbers) or a range ``{low, high, scale}``."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if isinstance(value, list):
        if not value or not all(number(v) for v in value):
            raise fail(f"tuning.space.{knob} must be a non-empty list of numbers, got {value!r}")
        return
    if not isinstance(value, dict):
        raise fail(f"tuning.space.{knob} must be a list of values or {{low, high, scale}}, got {value!r}")
    for key in value:
        if key not in RANGE_KEYS:
            close = suggest(key, RANGE_KEYS)
            raise fail(f"unknown key {key!r} in tuning.space.{knob}" + (f"; did you mean {close[0]!r}?" if close
                                                                        else "; known: low, high, scale"))
    if not (number(value.get("low")) and number(value.get("high")) and value["low"] <= value["high"]):
        raise fail(f"tuning.space.{knob} needs numbers low <= high, got {value!r}")
    if value.get("scale", "log") not in SCALES:
        raise fail(f"tuning.space.{knob}.scale must be 'log' or 'linear', got {value.get('scale')!r}")
    if value.get("scale", "log") == "log" and value["low"] <= 0:
        raise fail(f"tuning.space.{knob}: a log range needs low > 0, got {value['low']!r}")


def read_tuning(data: dict[str, Any], primary: str, higher_is_better: Callable[[str], bool]) -> Tuning:
    """The table with its defaults: the primary metric in its direction, the ``select`` split, the lr grid."""
    table = data.get("tuning") or {}
    metric = table.get("metric", primary)
    direction = table.get("direction") or ("max" if higher_is_better(metric) else "min")
    space = flatten_space(table.get("space", {})) or default_space(data)
    return Tuning(int(table.get("budget", 3)), metric, direction, table.get("split", DEFAULT_SPLIT), space,
                  bool(table.get("plugin_knobs", False)))


def default_space(data: dict[str, Any]) -> dict[str, Any]:
    """The learning rate on a log grid around the suite's own (lr/4 to 4 lr)."""
    from harness.suite.schema import DEFAULT_TRAIN

    lr = float(data.get("train", {}).get("lr", DEFAULT_TRAIN["lr"]))
    return {"train.lr": {"low": lr / DEFAULT_LR_SPAN, "high": lr * DEFAULT_LR_SPAN, "scale": "log"}}


# -- a method's trials ---------------------------------------------------------------------------

def grid(value: list[float] | dict[str, Any], points: int) -> list[float]:
    """A knob's candidate values: the list itself, or ``points`` values spread over the range."""
    if isinstance(value, list):
        return [float(v) if isinstance(v, float) else v for v in value]
    low, high = float(value["low"]), float(value["high"])
    if points == 1 or low == high:  # one point: the middle of the range
        middle = math.sqrt(low * high) if value.get("scale", "log") == "log" else (low + high) / 2
        return [_round(middle)]
    steps = [i / (points - 1) for i in range(points)]
    if value.get("scale", "log") == "log":
        return [_round(low * (high / low) ** t) for t in steps]
    return [_round(low + (high - low) * t) for t in steps]


def _round(x: float) -> float:
    """12 significant digits: the same grid point on every machine (it is part of config hashes)."""
    return float(f"{x:.12g}")


def trials(space: dict[str, Any], budget: int) -> list[dict[str, Any]]:
    """``budget`` settings from the space (all of it when smaller), in a fixed order.

    One knob: its grid of ``budget`` points. Several: their grids' product, from which
    ``budget`` points are drawn with a fixed seed, so every run and shard agrees.
    """
    knobs = sorted(space)
    grids = [grid(space[k], budget) for k in knobs]
    product = [dict(zip(knobs, values, strict=True)) for values in itertools.product(*grids)]
    if len(product) <= budget:
        return product
    picked = sorted(random.Random(SAMPLE_SEED).sample(range(len(product)), budget))
    return [product[i] for i in picked]


def method_space(tuning: Tuning, plugin_space: dict[str, tuple[float, float, str]]) -> dict[str, Any]:
    """The suite's space plus, with ``plugin_knobs``, the quantizer's declared knobs (the suite's win)."""
    space = dict(tuning.space)
    if tuning.plugin_knobs:
        for name, (low, high, scale) in sorted(plugin_space.items()):
            space.setdefault(f"quantizer.{name}", {"low": low, "high": high, "scale": scale})
    return space


def describe(values: dict[str, Any]) -> str:
    """``{"train.lr": 0.002}`` -> ``"lr=0.002"`` (what a page row and a run name show)."""
    return ", ".join(f"{k.partition('.')[2]}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                     for k, v in sorted(values.items()))
