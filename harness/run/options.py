"""What a ``harness run`` was asked to do, shared by the suite lifecycle and each cell.

Where cells run (the executor) is layered, later layers winning: the built-in
default (``processes``: each cell isolated in a worker process), a suite's
``[executor]`` table, ``harness.toml`` in the working folder (this machine's
choice), ``--jobs N`` (``processes`` with N workers), ``--executor`` and
``--executor-option``. Options of an earlier layer carry over only while the
executor name stays the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import SuiteError, UsageError

DEFAULT_EXECUTOR = "processes"
USER_CONFIG = "harness.toml"
EXECUTOR_KEYS = {"name": str, "options": dict}


@dataclass
class RunOptions:
    device: str = "auto"
    data_root: Path | None = None
    tracking_uri: str | None = None
    shard: tuple[int, int] | None = None
    bits: float | None = None  # --bits B: only the cells of that rate group (harness.run.rate)
    progress: bool = True
    resume: bool = False  # skip finished cells, continue interrupted ones (harness.recovery.resume)
    resume_across_code_change: bool = False  # continue checkpoints of older plugin code (codechange)
    jobs: int | None = None  # --jobs N: the processes executor with N workers (None: not given)
    executor: str | None = None  # --executor NAME (None: suite, harness.toml, then the default)
    executor_options: dict[str, Any] = field(default_factory=dict)  # --executor-option KEY=VALUE


def parse_executor_options(items: list[str] | None) -> dict[str, str]:
    """``["jobs=4", "partition=gpu"]`` -> ``{"jobs": "4", "partition": "gpu"}`` (typed later)."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--executor-option expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def check_executor_table(table: Any, path: Path, locator: Any, root: tuple[Any, ...] = ("executor",)) -> None:
    """An ``[executor]`` table (suite file or ``harness.toml``): ``name`` and an ``options`` table."""
    from harness.errors import suggest

    def fail(message: str, key: tuple[Any, ...]) -> SuiteError:
        return SuiteError(message, str(path), locator.line(key))

    if not isinstance(table, dict):
        raise fail("[executor] must be a table", root)
    for key, value in table.items():
        if key not in EXECUTOR_KEYS:
            close = suggest(key, EXECUTOR_KEYS)
            hint = f"; did you mean {close[0]!r}?" if close else "; known keys: name, options"
            raise fail(f"unknown key 'executor.{key}'{hint}", (*root, key))
        if not isinstance(value, EXECUTOR_KEYS[key]):
            raise fail(f"executor.{key} must be a {'table' if key == 'options' else 'string'}", (*root, key))


def user_config(folder: Path | None = None) -> dict[str, Any]:
    """``harness.toml`` in the working folder (``{}`` when absent), validated."""
    from harness.errors import suggest
    from harness.suite.tomlsource import load_toml

    path = (folder or Path.cwd()) / USER_CONFIG
    if not path.is_file():
        return {}
    raw, locator = load_toml(path)
    for key in raw:
        if key != "executor":
            close = suggest(key, ["executor"])
            hint = "; did you mean 'executor'?" if close else "; known tables: executor"
            raise SuiteError(f"unknown table {key!r}{hint}", str(path), locator.line((key,)))
    if "executor" in raw:
        check_executor_table(raw["executor"], path, locator)
    return raw


def executor_choice(suite_table: dict[str, Any] | None, options: RunOptions,
                    default: str = DEFAULT_EXECUTOR) -> tuple[str, dict[str, Any]]:
    """The executor name and its (untyped) options after every layer (module docstring)."""
    user = user_config().get("executor")
    jobs = {"name": "processes", "options": {"jobs": options.jobs}} if options.jobs is not None else None
    if jobs and options.executor not in (None, "processes"):
        raise UsageError(f"--jobs runs the processes executor; it cannot go with --executor {options.executor}")
    cli = {"name": options.executor, "options": options.executor_options}
    name, values = default, {}
    for layer in (suite_table, user, jobs, cli):
        if not layer:
            continue
        if layer.get("name") and layer["name"] != name:
            name, values = layer["name"], {}
        values.update(layer.get("options") or {})
    return name, values
