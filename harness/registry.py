"""One registry per plugin kind: keeps name clashes visible, suggests close matches, lists sorted.

Two plugins may register the same name. The clash never goes silent and never
breaks what worked: ``distribution:name`` (``harness-ibq:vq``, ``vq-harness:vq``)
picks one claimant in suites, ``-q`` and code; a bare name that the built-ins own
resolves to the built-in, with a warning naming both; a bare name two outside
plugins claim is an error listing the qualified names to choose from.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UnknownNameError, UsageError

#: the distribution of the built-in plugins: its names win unqualified clashes
BUILTIN_DISTRIBUTION = "vq-harness"
#: separates the qualifier from the name: ``harness-ibq:vq``
QUALIFIER = ":"

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


def canonical(name: str) -> str:
    """A distribution name as packaging compares them: ``Harness_IBQ`` == ``harness-ibq``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Registry:
    """Named entries of one kind; a name may have several claimants (see the module docstring)."""

    kind: str
    #: every claimant of every name, in registration order
    _claims: dict[str, list[Entry]] = field(default_factory=dict)
    #: names already warned about (a clash is reported once per registry)
    _warned: set[str] = field(default_factory=set)

    @property
    def noun(self) -> str:
        return self.kind[:-1]

    def add(self, name: str, obj: Any, source: Source) -> Entry:
        """Add an entry; a name claimed twice keeps both claimants (a conflict)."""
        if not isinstance(name, str) or not name:
            raise UsageError(f"{source.plugin}: {self.kind} names must be non-empty strings, got {name!r}")
        if QUALIFIER in name:
            raise UsageError(f"{source.plugin}: {self.noun} name {name!r} must not contain "
                             f"{QUALIFIER!r} (it separates a distribution from a name)")
        entry = Entry(self.kind, name, obj, source)
        self._claims.setdefault(name, []).append(entry)
        return entry

    @property
    def conflicts(self) -> dict[str, list[Source]]:
        """Names claimed by more than one plugin, with every claimant's source."""
        return {n: [e.source for e in es] for n, es in sorted(self._claims.items()) if len(es) > 1}

    def qualified(self, entry: Entry) -> str:
        return f"{entry.source.distribution}{QUALIFIER}{entry.name}"

    def conflict_message(self, name: str) -> str:
        claimants = self._claims[name]
        who = " and ".join(str(e.source) for e in claimants)
        choices = " or ".join(repr(self.qualified(e)) for e in claimants)
        builtin = self._builtin(name)
        if builtin is not None:
            return (f"two plugins register the {self.noun} {name!r}: {who}; {name!r} means the built-in "
                    f"{self.qualified(builtin)!r}; write {choices} to choose")
        return (f"two plugins register the {self.noun} {name!r}: {who}; write {choices} to choose, or "
                "uninstall one or block it with HARNESS_DISABLE_PLUGINS")

    def _builtin(self, name: str) -> Entry | None:
        builtins = [e for e in self._claims.get(name, []) if e.source.distribution == BUILTIN_DISTRIBUTION]
        return builtins[0] if len(builtins) == 1 else None

    def _qualified_get(self, name: str) -> Entry:
        qualifier, base = name.split(QUALIFIER, 1)
        claimants = self._claims.get(base, [])
        chosen = [e for e in claimants if canonical(qualifier) in
                  (canonical(e.source.distribution), canonical(e.source.plugin))]
        if len(chosen) == 1:
            return chosen[0]
        if len(chosen) > 1:
            raise UsageError(f"{name!r} names {len(chosen)} {self.kind} of one distribution: "
                             + " and ".join(str(e.source) for e in chosen))
        known = [self.qualified(e) for es in self._claims.values() for e in es]
        raise UnknownNameError(self.noun, name, known)

    def get(self, name: str) -> Entry:
        """The entry for ``name`` or ``distribution:name``; see the module docstring for clashes."""
        if QUALIFIER in name:
            return self._qualified_get(name)
        claimants = self._claims.get(name)
        if not claimants:
            raise UnknownNameError(self.noun, name, self._claims)
        if len(claimants) == 1:
            return claimants[0]
        builtin = self._builtin(name)
        if builtin is None:
            raise UsageError(self.conflict_message(name))
        if name not in self._warned:
            self._warned.add(name)
            print(f"harness: warning: {self.conflict_message(name)}", file=sys.stderr)
        return builtin

    def resolvable(self, name: str) -> bool:
        """Whether :meth:`get` returns an entry for ``name`` (qualified or not) without an error."""
        if QUALIFIER in name:
            try:
                self._qualified_get(name)
            except UsageError:
                return False
            return True
        claimants = self._claims.get(name, [])
        return len(claimants) == 1 or (len(claimants) > 1 and self._builtin(name) is not None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.resolvable(name)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self.names())

    def names(self) -> list[str]:
        """Every name a bare lookup resolves (a clash the built-ins own resolves to them)."""
        return sorted(n for n in self._claims if self.resolvable(n))

    def entries(self) -> list[Entry]:
        """The entry of each of :meth:`names`, sorted by name (no warning: listing is not choosing)."""
        return [self._claims[n][0] if len(self._claims[n]) == 1 else self._builtin(n) for n in self.names()]

    def claimants(self, name: str) -> list[Entry]:
        """Every entry registered under ``name``, in registration order."""
        return list(self._claims.get(name, []))
