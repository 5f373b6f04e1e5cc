"""Before any cell runs: every place the run writes is writable, and the data is there.

A night of cells that each fail on the same missing folder records a FAILED run
per cell and tells the user nothing they could not have been told at once. The
suite lifecycle (:mod:`harness.run.lifecycle`) calls :func:`check` after opening the
store and before creating the parent run, so a problem found here is a usage
error (exit 2) that says what to fix, with nothing recorded.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from harness.errors import DatasetMissing, UsageError

PROBE_BYTES = 64 * 1024  # a real write: a full disk fails it, not only a read-only one


class PreflightError(UsageError):
    """What would make every cell fail, found before any ran (exit 2)."""


def check(host: Any, suite: Any, cells: list[Any], options: Any, tracker: Any) -> None:
    """Raise :class:`PreflightError` listing every problem, or return when the run can start."""
    problems = [*folder_problems(tracker, suite.name), *data_problems(host, cells, options.data_root)]
    if problems:
        raise PreflightError("cannot start: nothing was run or recorded.\n" + "\n".join(f"- {p}" for p in problems))


# -- folders --------------------------------------------------------------------------------

def folder_problems(tracker: Any, suite_name: str) -> list[str]:
    from harness.recovery.checkpoint import checkpoint_root

    places = {"the working folder": Path.cwd(),
              "the checkpoint folder": checkpoint_root(tracker.uri) / suite_name}
    artifacts = artifact_folder(tracker, suite_name)
    if artifacts is not None:
        places["the artifact folder"] = artifacts
    problems = []
    for what, folder in places.items():
        problem = unwritable(folder)
        if problem:
            problems.append(f"{what} {folder}: {problem}")
    return problems


def artifact_folder(tracker: Any, suite_name: str) -> Path | None:
    """Where this suite's artifacts go on local disk (``None``: a server stores them)."""
    location = None
    try:
        exp = tracker.client.get_experiment_by_name(suite_name)
        location = exp.artifact_location if exp is not None else None
    except Exception:  # reading failed: the store check reports the store itself
        location = None
    if location is None:
        root = tracker.artifact_root()
        location = f"{root}/{suite_name}" if root else None
    if not location:
        return None
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and location.startswith("/"):
        return Path(location)
    return None


def unwritable(folder: Path) -> str | None:
    """Why nothing can be written in ``folder`` (or the nearest folder above it that exists)."""
    target = folder
    while not target.exists():
        if target.parent == target:
            return "no part of it exists"
        target = target.parent
    if not target.is_dir():
        return f"{target} is not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=target, prefix=".harness-probe-") as handle:
            handle.write(b"\0" * PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        where = "" if target == folder else f" (checked {target}, the nearest folder that exists)"
        return f"cannot write there{where}: {exc.strerror or exc}"
    return None


# -- data -----------------------------------------------------------------------------------

def data_problems(host: Any, cells: list[Any], data_root: Path | str | None) -> list[str]:
    """Each distinct dataset the cells use is built and asked whether its files are there."""
    import json

    from harness.cell.build import build_dataset

    problems, seen = [], set()
    for cell in cells:
        dataset = cell.config["dataset"]
        key = json.dumps(dataset, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            plugin = build_dataset(host, cell.config, Path(data_root) if data_root else None)
            message = plugin.check() if hasattr(plugin, "check") else None
        except DatasetMissing as exc:
            message = str(exc)
        except (TypeError, ValueError) as exc:
            message = f"cannot be set up: {type(exc).__name__}: {exc}"
        if message:
            problems.append(f"dataset {dataset['name']!r}: {message}")
    return problems
