"""The plugin host: discovers plugins through entry points and fills one registry per kind.

Two roads, both lazy (docs/hooks.md):

- the ``harness`` group: a module of hookimpls (pluggy), imported at start-up; its
  hooks call ``register`` with classes or, to stay cheap, ``"module:Class"`` strings;
- the ``harness.<kind>`` groups (``harness.quantizers``, ...): one entry point per
  plugin, ``name = "module:Class"``; nothing is imported until the class is used.

A plugin that fails to import or to register is kept in :attr:`Host.broken` with
its error and the rest still load; ``HARNESS_DISABLE_PLUGINS`` (comma-separated
entry-point or distribution names) blocks plugins before they are imported.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlparse

import pluggy

from harness import hookspecs, lazy
from harness.errors import HarnessError
from harness.registry import (
    BUILTIN_DISTRIBUTION,
    KINDS,
    UNDER_TEST_ENV,
    Entry,
    Registry,
    Source,
    canonical,
)

GROUP = "harness"
DISABLE_ENV = "HARNESS_DISABLE_PLUGINS"


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be loaded or registered, with the reason."""

    name: str
    source: Source
    error: str
    traceback: str = ""


@dataclass
class Host:
    """The pluggy manager plus the registries it filled."""

    manager: pluggy.PluginManager
    registries: dict[str, Registry]
    sources: dict[str, Source] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)

    def __getattr__(self, kind: str) -> Registry:
        registries = self.__dict__.get("registries", {})
        if kind in registries:
            return registries[kind]
        raise AttributeError(kind)

    def higher_is_better(self, metric: str) -> bool | None:
        """The installed metric plugin's direction (``None``: no such metric). Runs record it
        (``harness.metric_directions``); this answers for what no run recorded."""
        if metric not in self.metrics:
            return None
        return bool(getattr(self.metrics.get(metric).obj, "higher_is_better", True))

    def plugins(self, load: bool = False) -> list[dict[str, Any]]:
        """Every plugin seen, loaded or broken, sorted by name (the ``harness plugins`` listing);
        ``load`` also imports every lazy entry, so a class that fails to import shows too."""
        failed = self.load_all() if load else []
        rows = []
        for name, source in sorted(self.sources.items()):
            plugin = self.manager.get_plugin(name)
            hooks = sorted(c.name for c in self.manager.get_hookcallers(plugin) or []) if plugin else []
            entries = self.entries_of(source.plugin)
            rows.append({"name": name, "distribution": source.distribution, "version": source.version,
                         "hooks": hooks or sorted({e.kind for e in entries}), "status": "ok"})
            errors = [f"{e.kind[:-1]} {e.name!r}: cannot find the module of {e.target}"
                      for e in entries if e.lazy and not _findable(e.target)]
            errors += [f.error for f in failed if f.name == name]
            if errors:
                rows[-1].update(status="broken", error="; ".join(errors))
        for b in self.broken:
            rows = [r for r in rows if r["name"] != b.name]
            rows.append({"name": b.name, "distribution": b.source.distribution,
                         "version": b.source.version, "hooks": [], "status": "broken",
                         "error": b.error})
        for name in self.disabled:
            rows.append({"name": name, "distribution": "", "version": "", "hooks": [],
                         "status": "disabled"})
        return sorted(rows, key=lambda r: r["name"])

    def entries_of(self, plugin: str) -> list[Entry]:
        """Every entry the plugin registered, all kinds."""
        return [e for r in self.registries.values() for es in r._claims.values() for e in es
                if e.source.plugin == plugin]

    def load_all(self) -> list[BrokenPlugin]:
        """Import every lazy entry (``harness plugins --load``): the ones whose class fails to load."""
        failed = []
        for registry in self.registries.values():
            for entries in registry._claims.values():
                for entry in entries:
                    try:
                        entry.obj  # noqa: B018 - importing it is the point
                    except HarnessError as exc:
                        failed.append(BrokenPlugin(entry.source.plugin, entry.source, str(exc)))
        return failed


def _findable(target: str) -> bool:
    """Whether a lazy target's module exists (found, not run: ``harness plugins`` stays cheap)."""
    module = lazy.split(target)[0]
    return module in sys.modules or lazy.module_file(module) is not None


def disabled_plugins() -> set[str]:
    return {p.strip() for p in os.environ.get(DISABLE_ENV, "").split(",") if p.strip()}


def new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(GROUP)
    manager.add_hookspecs(hookspecs)
    return manager


def build_host(extra_plugins: dict[str, ModuleType | object] | None = None) -> Host:
    """Load every installed plugin (plus ``extra_plugins``, for tests) and fill the registries."""
    manager = new_manager()
    host = Host(manager, {})
    host.registries = {kind: Registry(kind, broken=host.broken) for kind in KINDS}
    blocked = disabled_plugins()
    installed = entry_points()  # one scan of the installed distributions for every group

    for ep in sorted(installed.select(group=GROUP), key=lambda e: e.name):
        source = _source(ep, ep.name)
        if ep.name in blocked:
            host.disabled.append(ep.name)
            continue
        try:
            module = ep.load()
            manager.register(module, name=ep.name)
        except Exception as exc:  # a broken plugin must not take the host down
            host.broken.append(BrokenPlugin(ep.name, source, f"{type(exc).__name__}: {exc}",
                                            traceback.format_exc()))
            continue
        host.sources[ep.name] = source

    for name, plugin in (extra_plugins or {}).items():
        if name in blocked:
            host.disabled.append(name)
            continue
        manager.register(plugin, name=name)
        host.sources[name] = Source(name, "local", "")

    for kind in KINDS:
        _collect(host, kind)
        _collect_entry_points(host, kind, blocked, installed.select(group=f"{GROUP}.{kind}"))
    return host


def _source(ep: Any, plugin: str | None = None) -> Source:
    dist = getattr(ep, "dist", None)
    name = dist.metadata["Name"] if dist else "unknown"
    return Source(plugin or name, name, dist.version if dist else "unknown")


def _collect_entry_points(host: Host, kind: str, blocked: set[str], found: Any) -> None:
    """The ``harness.<kind>`` group: ``name = "module:Class"``, registered without importing it.

    The plugin of such an entry is its distribution (``harness plugins``, the qualifier,
    ``HARNESS_DISABLE_PLUGINS``).
    """
    blocked_dists = {canonical(b) for b in blocked}
    for ep in sorted(found, key=lambda e: e.name):
        source = _source(ep)
        if canonical(source.distribution) in blocked_dists:
            if source.plugin not in host.disabled:
                host.disabled.append(source.plugin)
            continue
        host.sources.setdefault(source.plugin, source)
        try:
            lazy.split(ep.value)
            host.registries[kind].add(ep.name, ep.value, source)
        except (ValueError, HarnessError) as exc:
            host.broken.append(BrokenPlugin(source.plugin, source, f"entry point {ep.name!r} of group "
                                            f"{GROUP}.{kind}: {exc}"))


def _collect(host: Host, kind: str) -> None:
    """Call each plugin's hook on its own so every entry knows its source."""
    caller = getattr(host.manager.hook, f"harness_register_{kind}")
    registry = host.registries[kind]
    for impl in caller.get_hookimpls():
        source = host.sources.get(impl.plugin_name, Source(impl.plugin_name))

        def register(obj: Any, name: str | None = None, _source: Source = source) -> None:
            registry.add(name or registered_name(obj), obj, _source)

        try:
            impl.function(register=register)
        except Exception as exc:
            host.broken.append(BrokenPlugin(impl.plugin_name, source,
                                            f"{type(exc).__name__}: {exc}", traceback.format_exc()))


def registered_name(obj: Any) -> str:
    """The name ``register(obj)`` uses: ``obj.name``, else the class name; a lazy ``"module:Class"``
    is read from its source text (``name = "..."``), never imported."""
    if lazy.is_target(obj):
        return lazy.static_info(obj).name or lazy.split(obj)[1].split(".")[-1]
    return getattr(obj, "name", None) or obj.__name__


def prefer_owner(path: str | Path) -> str | None:
    """Make a plugin distribution's own suite file mean that distribution's entries.

    When a name clash exists and ``path`` lies inside an installed plugin distribution
    (its package, or the project folder of an editable install), that distribution
    becomes the one under test (``HARNESS_UNDER_TEST``, inherited by worker processes)
    unless one is set already. Returns the distribution chosen, if any.
    """
    host = get_host()
    if os.environ.get(UNDER_TEST_ENV) or not any(r.conflicts for r in host.registries.values()):
        return None
    claimants = {s.distribution for r in host.registries.values() for ss in r.conflicts.values() for s in ss}
    owner = owner_of(Path(path), claimants - {BUILTIN_DISTRIBUTION, "local", "unknown"})
    if owner is not None:
        os.environ[UNDER_TEST_ENV] = owner
    return owner


def owner_of(path: Path, distributions: set[str]) -> str | None:
    """The one of ``distributions`` whose files or editable project folder hold ``path``."""
    path = path.resolve()
    for name in sorted(distributions):
        if any(path.is_relative_to(root) for root in distribution_roots(name)):
            return name
    return None


def distribution_roots(name: str) -> list[Path]:
    """Where an installed distribution lives: its editable project folder, its top-level packages."""
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        return []
    roots = []
    info = json.loads(dist.read_text("direct_url.json") or "{}")
    if info.get("dir_info", {}).get("editable") and info.get("url", "").startswith("file:"):
        roots.append(Path(unquote(urlparse(info["url"]).path)).resolve())
    tops = {Path(str(f)).parts[0] for f in dist.files or [] if len(Path(str(f)).parts) > 1}
    roots += [Path(str(dist.locate_file(t))).resolve() for t in sorted(tops)
              if not t.endswith((".dist-info", ".egg-info")) and t not in ("..", "__pycache__")]
    return roots


@lru_cache(maxsize=1)
def get_host() -> Host:
    """The process-wide host (plugins are discovered once per process)."""
    return build_host()
