"""Before any cell runs: every place the run writes is writable, and the data is there.

A night of cells that each fail on the same missing folder records a FAILED run
per cell and tells the user nothing they could not have been told at once. The
suite lifecycle (:mod:`harness.run.lifecycle`) calls :func:`check` after opening the
store and before creating the parent run, so a problem found here is a usage
error (exit 2) that says what to fix, with nothing recorded.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from harness.errors import DatasetMissing, UsageError

#: an error from building a quantizer that is about its size (any other build error fails the cell)
SIZE_WORDS = re.compile(r"\bcodebook_size\b|\bcodebook size\b|\bdim\b")
PROBE_BYTES = 64 * 1024  # a real write: a full disk fails it, not only a read-only one


class PreflightError(UsageError):
    """What would make every cell fail, found before any ran (exit 2)."""


def check(host: Any, suite: Any, cells: list[Any], options: Any, tracker: Any) -> None:
    """Raise :class:`PreflightError` listing every problem, or return when the run can start."""
    size_check(host, suite, cells, options.device)  # a codebook no machine can hold: the line that set it
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
        location = tracker.artifact_location(suite_name)
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


# -- sizes ----------------------------------------------------------------------------------

def size_check(host: Any, suite: Any, cells: list[Any], device: str) -> None:
    """Each method builds at each of its codebook sizes and fits in memory, judged on the meta device
    (nothing is allocated): a size the method refuses, or whose tensors alone exceed the memory
    this machine has, is a usage error at the line (or ``--set``) that gave the size."""
    import torch

    from harness.cell.build import build_quantizer

    limit, where = memory_limit(device)
    seen = set()
    for cell in cells:
        q = cell.config["quantizer"]
        if (cell.method, q["codebook_size"], q["dim"]) in seen:
            continue
        seen.add((cell.method, q["codebook_size"], q["dim"]))
        key = (("methods", cell.method, "codebook_size") if suite.method(cell.method).get("codebook_size")
               else ("matrix", "codebook_size"))
        at = f"method {cell.method!r} (quantizer {q['name']!r}) at codebook_size {q['codebook_size']}, dim {q['dim']}"
        try:
            with torch.device("meta"):
                module = build_quantizer(host, cell.config)
        except (OverflowError, MemoryError) as exc:
            raise suite.error(f"{at} cannot be built: {exc}", key) from None
        except (ValueError, TypeError) as exc:  # the method refuses this size (else: the cell fails)
            if SIZE_WORDS.search(str(exc)):
                raise suite.error(f"{at} cannot be built: {exc}", key) from None
            continue
        except Exception:  # noqa: BLE001 - an operation the meta device lacks: the cell itself will tell
            continue
        size = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
        if limit and size > limit:
            raise suite.error(f"{at} needs {_bytes(size)} for its parameters and buffers alone, more than "
                              f"the {_bytes(limit)} of memory {where}; lower codebook_size or dim", key)


def memory_limit(device: str) -> tuple[int | None, str]:
    """The memory a cell can use on ``device`` (``auto``: CUDA if present), and how to name it."""
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.mem_get_info()[1], "the CUDA device has"
    try:
        with open("/proc/meminfo") as handle:
            info = dict(line.split(":", 1) for line in handle)
        return int(info["MemAvailable"].split()[0]) * 1024, "available on this machine"
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine has"
        except (ValueError, OSError, AttributeError):
            return None, ""


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"
