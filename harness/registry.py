"""One registry per plugin kind: rejects duplicates, suggests close matches, lists sorted."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UnknownNameError, UsageError

KINDS = ("quantizers", "datasets", "models", "schedules", "metrics", "executors", "losses")


@dataclass(frozen=True)
class Source:
    """Where an entry came from: the plugin (entry-point name) and its distribution."""

    plugin: str
    distribution: str = "unknown"
    version: str = "unknown"

    def __str__(self) -> str:
        return f"{self.plugin} ({self.distribution} {self.version})"


@dataclass(frozen=True)
class Entry:
    """A registered plugin object (a class) with its name and source."""

    kind: str
    name: str
    obj: Any
    source: Source
    aliases: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        """First line of the docstring."""
        doc = inspect.getdoc(self.obj) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @property
    def paper(self) -> str:
        return str(getattr(self.obj, "paper", "") or "")

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "summary": self.summary,
            "paper": self.paper,
            "plugin": self.source.plugin,
            "distribution": self.source.distribution,
            "version": self.source.version,
        }


@dataclass
class Registry:
    """Named entries of one kind."""

    kind: str
    _entries: dict[str, Entry] = field(default_factory=dict)
    #: names claimed by more than one plugin: neither wins, using the name is an error
    conflicts: dict[str, list[Source]] = field(default_factory=dict)

    def add(self, name: str, obj: Any, source: Source) -> Entry | None:
        """Add an entry; a name claimed twice becomes a conflict that names both sources."""
        if not isinstance(name, str) or not name:
            raise UsageError(f"{source.plugin}: {self.kind} names must be non-empty strings, got {name!r}")
        if name in self.conflicts:
            self.conflicts[name].append(source)
            return None
        if name in self._entries:
            self.conflicts[name] = [self._entries.pop(name).source, source]
            return None
        entry = Entry(self.kind, name, obj, source)
        self._entries[name] = entry
        return entry

    def conflict_message(self, name: str) -> str:
        claimants = " and ".join(str(s) for s in self.conflicts[name])
        return (f"two plugins register the {self.kind[:-1]} {name!r}: {claimants}; "
                "uninstall one or block it with HARNESS_DISABLE_PLUGINS")

    def get(self, name: str) -> Entry:
        if name in self.conflicts:
            raise UsageError(self.conflict_message(name))
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind[:-1], name, self._entries) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]
