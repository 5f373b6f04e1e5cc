"""TOML loading that can point at lines: syntax errors and key paths map to ``file:line``.

``tomllib`` parses but forgets positions; validation errors still need a line,
so :class:`KeyLocator` re-reads the text and finds where a key path is written.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from harness.errors import SuiteError

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _split_dotted(text: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return [p.strip("\"'") for p in parts]


@dataclass
class KeyLocator:
    """Maps key paths (``("train", "steps")``, ``("claims", 2, "op")``) to 1-based lines."""

    text: str

    def __post_init__(self) -> None:
        self._lines: dict[tuple[Any, ...], int] = {}
        table: list[Any] = []
        array_counts: dict[tuple[Any, ...], int] = {}
        for number, line in enumerate(self.text.splitlines(), start=1):
            stripped = line.split("#", 1)[0] if '"' not in line and "'" not in line else line
            header = _HEADER.match(stripped)
            if header:
                path = tuple(_split_dotted(header.group(2)))
                if header.group(1) == "[[":
                    index = array_counts.get(path, 0)
                    array_counts[path] = index + 1
                    table = [*path, index]
                else:
                    table = list(path)
                self._lines.setdefault(tuple(table), number)
                continue
            key = _KEY.match(line)
            if key:
                full = (*table, *_split_dotted(key.group(1)))
                for i in range(len(table) + 1, len(full) + 1):
                    self._lines.setdefault(full[:i], number)

    @classmethod
    def of_lines(cls, lines: Sequence[tuple[Sequence[Any], int]]) -> KeyLocator:
        """A locator from :meth:`lines` (a suite rebuilt from data: no text to scan)."""
        locator = cls("")
        locator._lines = {tuple(path): int(line) for path, line in lines}
        return locator

    def lines(self) -> list[tuple[list[Any], int]]:
        """Every key path found and its line, as plain data."""
        return [(list(path), line) for path, line in self._lines.items()]

    def line(self, path: Sequence[Any]) -> int | None:
        """The line where ``path`` (or its nearest written ancestor) is defined."""
        path = tuple(path)
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None


def load_toml(path: Path) -> tuple[dict[str, Any], KeyLocator]:
    """Parse ``path``; a syntax error becomes a :class:`SuiteError` with file and line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SuiteError(f"cannot read suite file: {exc.strerror}", str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        column = exc.start - raw.rfind(b"\n", 0, exc.start)
        raise SuiteError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {column}); "
                         "suite files are UTF-8", str(path), line) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        raise SuiteError(f"invalid TOML: {exc}", str(path), line) from None
    except RecursionError:
        raise SuiteError("values nested too deeply to be a suite", str(path)) from None
    return data, KeyLocator(text)


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax when it parses (``3``, ``1e-3``, ``[2, 10]``, ``true``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:  # the same refusal a suite file gets, not a traceback
        raise SuiteError(f"--set value {text[:20]}... is nested too deeply to be a suite value") from None
