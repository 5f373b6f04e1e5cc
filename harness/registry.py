"""One registry per plugin kind: lazy entries, visible name clashes, close matches, sorted lists.

Entries are lazy: a plugin registers a class or a ``"package.module:Class"`` string
(:mod:`harness.lazy`), and the class is imported the first time a cell, a check or a
kit asks for :attr:`Entry.obj`. Its name, kind and one-line summary are known before
that (the summary is read from the source text), so listing imports no plugin code.
A class that fails to import raises :class:`PluginLoadError` ("plugin X failed to
load: <error>") wherever its name is used, never a did-you-mean.

Two plugins may register the same name. The clash never goes silent and never
breaks what worked: ``distribution:name`` (``harness-ibq:vq``, ``vq-harness:vq``)
picks one claimant in suites, ``-q`` and code. A bare name resolves, with a warning
naming both and how to write the other, to the claimant of the distribution under
test (``HARNESS_UNDER_TEST``: set by the pytest plugin for a plugin package's own
tests, and by ``harness run`` for a suite file that package ships), else to the
built-in; a bare name two outside plugins claim is otherwise an error listing the
qualified names to choose from.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from harness import lazy
from harness.errors import UnknownNameError, UsageError

#: the distribution of the built-in plugins: its names win unqualified clashes
BUILTIN_DISTRIBUTION = "vq-harness"
#: separates the qualifier from the name: ``harness-ibq:vq``
QUALIFIER = ":"
#: the distribution whose entries a bare clashing name resolves to (its own tests and suites)
UNDER_TEST_ENV = "HARNESS_UNDER_TEST"

KINDS = ("quantizers", "datasets", "models", "schedules", "metrics", "executors", "losses")


class PluginLoadError(UsageError):
    """A registered plugin whose code cannot be imported: the name is known, the class is not."""


class NameClashWarning(UserWarning):
    """A bare name two plugins register was resolved to one of them (pytest shows it)."""


@dataclass(frozen=True)
class Source:
    """Where an entry came from: the plugin (entry-point name) and its distribution."""

    plugin: str
    distribution: str = "unknown"
    version: str = "unknown"

    def __str__(self) -> str:
        return f"{self.plugin} ({self.distribution} {self.version})"


@dataclass(eq=False)
class Entry:
    """A registered plugin: its name, its source, and its class or a lazy ``"module:Class"``."""

    kind: str
    name: str
    target: Any
    source: Source
    _obj: Any = field(default=None, repr=False)
    _error: str | None = field(default=None, repr=False)

    @property
    def lazy(self) -> bool:
        """Whether the class has not been imported yet."""
        return lazy.is_target(self.target) and self._obj is None

    @property
    def obj(self) -> Any:
        """The plugin class, imported on first use; :class:`PluginLoadError` when it cannot be."""
        if not lazy.is_target(self.target):
            return self.target
        if self._obj is None:
            if self._error is None:
                try:
                    self._obj = lazy.load(self.target)
                except Exception as exc:  # any failure of plugin code is the plugin's
                    self._error = f"{type(exc).__name__}: {exc}"
            if self._error is not None:
                raise PluginLoadError(f"plugin {self.source.plugin} failed to load: {self._error} "
                                      f"(the {self.kind[:-1]} {self.name!r} is {self.target})")
        return self._obj

    @property
    def summary(self) -> str:
        """First line of the docstring (from the source text while the class is not imported)."""
        if self.lazy:
            return lazy.static_info(self.target).summary
        doc = inspect.getdoc(self.obj) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @property
    def paper(self) -> str:
        if self.lazy:
            return lazy.static_info(self.target).paper
        return str(getattr(self.obj, "paper", "") or "")

    def parameters(self, load: bool = True) -> lazy.Parameters:
        """The constructor's parameter names. ``load=False`` (a dry run): read from the source text
        while the class is not imported, when the text settles them, so a check imports no torch;
        a plugin that fails to import is then found when its class is first needed."""
        if not load and self.lazy and self._error is None:
            found = lazy.static_parameters(self.target)
            if found is not None:
                return found
        return lazy.parameters_of(self.obj)

    def term(self, load: bool = True) -> str:
        """A loss's ``term`` (empty for a loss without one), read as :meth:`parameters` reads."""
        if not load and self.lazy and self._error is None:
            found = lazy.static_term(self.target)
            if found is not None:
                return found
        return str(getattr(self.obj, "term", "") or "")

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


def under_test() -> str | None:
    """The distribution under test (``HARNESS_UNDER_TEST``), canonical, or ``None``."""
    value = os.environ.get(UNDER_TEST_ENV, "").strip()
    return canonical(value) if value else None


def _stem(name: str) -> str:
    """``harness_cosine_vq`` and ``harness-cosine-vq`` -> ``cosine-vq`` (the scaffold's naming)."""
    return canonical(name).removeprefix("harness-")


@dataclass
class Registry:
    """Named entries of one kind; a name may have several claimants (see the module docstring)."""

    kind: str
    #: every claimant of every name, in registration order
    _claims: dict[str, list[Entry]] = field(default_factory=dict)
    #: names already warned about (a clash is reported once per registry)
    _warned: set[str] = field(default_factory=set)
    #: plugins that failed before registering anything (``harness.host.BrokenPlugin``), shared by the host
    broken: list[Any] = field(default_factory=list)

    @property
    def noun(self) -> str:
        return self.kind[:-1]

    def add(self, name: str, obj: Any, source: Source) -> Entry:
        """Add an entry (a class or a lazy ``"module:Class"``); a name claimed twice keeps both."""
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
        """Who registers ``name``, which one a bare name means (and why), how to write the others."""
        claimants = self._claims[name]
        who = " and ".join(str(e.source) for e in claimants)
        chosen = self.chosen(name)
        if chosen is None:
            choices = " or ".join(repr(self.qualified(e)) for e in claimants)
            return (f"two plugins register the {self.noun} {name!r}: {who}; write {choices} to choose, "
                    "or uninstall one or block it with HARNESS_DISABLE_PLUGINS")
        why = ("the distribution under test, $" + UNDER_TEST_ENV
               if canonical(chosen.source.distribution) == under_test() else "the built-in")
        others = " or ".join(repr(self.qualified(e)) for e in claimants if e is not chosen)
        return (f"two plugins register the {self.noun} {name!r}: {who}; {name!r} means "
                f"{self.qualified(chosen)!r} ({why}); write {others} for the other")

    def chosen(self, name: str) -> Entry | None:
        """The claimant a bare clashing ``name`` resolves to: the distribution under test's, else
        the built-in, else none (an error)."""
        claimants = self._claims.get(name, [])
        for owner in (under_test(), canonical(BUILTIN_DISTRIBUTION)):
            mine = [e for e in claimants if canonical(e.source.distribution) == owner]
            if len(mine) == 1:
                return mine[0]
        return None

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
        self.check_broken(base)
        known = [self.qualified(e) for es in self._claims.values() for e in es]
        raise UnknownNameError(self.noun, name, known)

    def check_broken(self, name: str) -> None:
        """Raise :class:`PluginLoadError` when ``name`` is one a broken plugin would register.

        A plugin that failed before registering left no names behind; the scaffold's naming
        (plugin ``harness_<name>``, distribution ``harness-<name>``) ties a name to it.
        """
        bare = name.split(QUALIFIER, 1)[-1]
        for b in self.broken:
            if _stem(bare) in (_stem(b.name), _stem(b.source.distribution)):
                raise PluginLoadError(f"plugin {b.name} failed to load: {b.error} (it would register "
                                      f"the {self.noun} {bare!r}; `harness plugins` shows it)")

    def unknown(self, name: str, known: Any = None, where: str = "") -> UnknownNameError:
        """The did-you-mean error for ``name``, noting plugins that failed to load (they may own it)."""
        self.check_broken(name)
        error = UnknownNameError(self.noun, name, self._claims if known is None else known, where)
        if self.broken:
            failed = "; ".join(f"plugin {b.name} failed to load: {b.error}" for b in self.broken)
            error.args = (f"{error.args[0]} ({failed})",)
        return error

    def get(self, name: str) -> Entry:
        """The entry for ``name`` or ``distribution:name``; see the module docstring for clashes."""
        if QUALIFIER in name:
            return self._qualified_get(name)
        claimants = self._claims.get(name)
        if not claimants:
            raise self.unknown(name)
        if len(claimants) == 1:
            return claimants[0]
        chosen = self.chosen(name)
        if chosen is None:
            raise UsageError(self.conflict_message(name))
        if name not in self._warned:
            self._warned.add(name)
            report_clash(self.conflict_message(name))
        return chosen

    def resolvable(self, name: str) -> bool:
        """Whether :meth:`get` returns an entry for ``name`` (qualified or not) without an error."""
        if QUALIFIER in name:
            try:
                self._qualified_get(name)
            except UsageError:
                return False
            return True
        claimants = self._claims.get(name, [])
        return len(claimants) == 1 or (len(claimants) > 1 and self.chosen(name) is not None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.resolvable(name)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self.names())

    def names(self) -> list[str]:
        """Every name a bare lookup resolves (a clash resolves as :meth:`chosen` says)."""
        return sorted(n for n in self._claims if self.resolvable(n))

    def entries(self) -> list[Entry]:
        """The entry of each of :meth:`names`, sorted by name (no warning: listing is not choosing)."""
        return [self._claims[n][0] if len(self._claims[n]) == 1 else self.chosen(n) for n in self.names()]

    def claimants(self, name: str) -> list[Entry]:
        """Every entry registered under ``name``, in registration order."""
        return list(self._claims.get(name, []))


def report_clash(message: str) -> None:
    """Say which claimant a bare name took: on stderr (the console) and as a
    :class:`NameClashWarning` (pytest's warnings summary, where stderr is captured)."""
    print(f"harness: warning: {message}", file=sys.stderr)
    warnings.warn(message, NameClashWarning, stacklevel=3)
