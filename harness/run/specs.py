"""Cells as :class:`~harness.run.executors.CellSpec`: the suite file plus the ``--set`` strings that
rebuild the same suite anywhere.

A :class:`~harness.suite.Suite` may come from ``load_suite(path, profile, overrides=...,
seeds=...)`` in any caller, so the overrides are recovered by comparing its data
with the file's profile alone, and checked: the rebuilt suite must give the same
cells (config hashes), or the spec would train something else.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.run.executors import CellSpec
from harness.suite import Cell, Suite, load_suite

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_value(value: Any) -> str:
    """A TOML inline value (what ``--set key=VALUE`` parses back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise HarnessError(f"cannot write {value!r} as a TOML value")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _diff(base: Any, data: Any, prefix: tuple[str, ...]) -> list[str]:
    if isinstance(base, dict) and isinstance(data, dict):
        out = []
        for key, value in data.items():
            if key not in base or base[key] != value:
                out += _diff(base.get(key), value, (*prefix, key))
        return out
    if base == data:
        return []
    return [".".join(prefix) + "=" + toml_value(data)]


def suite_overrides(suite: Suite) -> tuple[str, ...]:
    """The ``--set`` strings that turn the file's profile into ``suite`` (checked by :func:`cell_specs`)."""
    base = load_suite(str(suite.path), suite.profile).data
    out: list[str] = []
    for table, value in suite.data.items():
        out += _diff(base.get(table), value, (table,))
    return tuple(out)


def cell_specs(suite: Suite, todo: list[tuple[Cell, Any]], methods: list[str] | None, parent: str,
               uri: str, options: dict[str, Any]) -> list[CellSpec]:
    """One spec per ``(cell, resume decision)``; fails if the specs would rebuild other cells."""
    path = str(Path(suite.path).resolve())
    overrides = suite_overrides(suite)
    rebuilt = {c.config_hash for c in load_suite(path, suite.profile, overrides=overrides).cells(methods)}
    lost = [cell.run_name for cell, _ in todo if cell.config_hash not in rebuilt]
    if lost:
        raise HarnessError(f"cells {', '.join(lost)} cannot be rebuilt from {path} and the overrides "
                           f"{list(overrides)}; run them with --executor local")
    return [CellSpec(path, suite.profile, overrides, tuple(methods) if methods else None, cell.config_hash,
                     cell.run_name, parent, uri,
                     {**options, "timeout": float(cell.config["train"].get("timeout") or 0)},
                     resume.plain() if resume is not None else None)
            for cell, resume in todo]
