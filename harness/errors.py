"""Errors the harness raises on purpose; the CLI turns each into a message and an exit code."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """An error the user can act on; the CLI prints it without a traceback."""

    exit_code = 1


class UsageError(HarnessError):
    """Bad input from the user: unknown names, bad suite files, bad options (exit code 2)."""

    exit_code = 2


class UnknownNameError(UsageError, KeyError):
    """A name that is not registered; the message lists close matches."""

    def __init__(self, kind: str, name: str, known: Iterable[str], where: str = "") -> None:
        self.kind, self.name = kind, name
        self.known = sorted(known)
        self.matches = difflib.get_close_matches(name, self.known, n=3, cutoff=0.5)
        message = f"unknown {kind} {name!r}{where}"
        if self.matches:
            message += "; did you mean " + " or ".join(repr(m) for m in self.matches) + "?"
        elif self.known:
            message += "; known: " + ", ".join(self.known)
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class SuiteError(UsageError):
    """A suite file that does not validate; names the file, the key and the line."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        self.path, self.line = path, line
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(where + message)


class MetricUnavailable(HarnessError):
    """A metric that cannot be computed on this machine (missing weights); recorded, never faked."""


class DatasetMissing(HarnessError):
    """A real dataset whose files are not where the harness looks; says what to put where."""


class Diverged(HarnessError):
    """A non-finite training loss; the cell is recorded as FAILED."""

    def __init__(self, step: int, value: float) -> None:
        self.step, self.value = step, value
        super().__init__(f"diverged at step {step} (loss = {value})")


def env_number(name: str, default: float, *, minimum: float = 0.0, what: str = "seconds") -> float:
    """A numeric environment setting, read when used (a bad value must not break every import):
    a finite number >= ``minimum``, else a usage error naming the variable."""
    import math
    import os

    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum:
        raise UsageError(f"{name} must be a finite number of {what} >= {minimum:g}, got {text!r}; "
                         f"unset it for the default ({default:g})")
    return value


def one_line(exc: BaseException) -> str:
    """``Type: first line`` of an error for a one-line warning (SQLAlchemy's notes and SQL left out)."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("(raised as a result of")]
    return f"{type(exc).__name__}: {(lines or [''])[0][:300]}"


def suggest(name: str, known: Iterable[str]) -> list[str]:
    """Close matches for ``name`` among ``known`` (the did-you-mean list)."""
    return difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)
