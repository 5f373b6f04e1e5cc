"""The plugin host: discovers ``harness`` entry points and fills one registry per kind.

A plugin that fails to import or to register is kept in :attr:`Host.broken` with
its error and the rest still load; ``HARNESS_DISABLE_PLUGINS`` (comma-separated
entry-point names) blocks plugins before they are imported.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from harness import hookspecs
from harness.registry import KINDS, Registry, Source

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

    def plugins(self) -> list[dict[str, Any]]:
        """Every plugin seen, loaded or broken, sorted by name (the ``harness plugins`` listing)."""
        rows = []
        for name, source in sorted(self.sources.items()):
            hooks = sorted(
                caller.name
                for caller in self.manager.get_hookcallers(self.manager.get_plugin(name)) or []
            ) if self.manager.get_plugin(name) is not None else []
            rows.append({"name": name, "distribution": source.distribution,
                         "version": source.version, "hooks": hooks, "status": "ok"})
        for b in self.broken:
            rows = [r for r in rows if r["name"] != b.name]
            rows.append({"name": b.name, "distribution": b.source.distribution,
                         "version": b.source.version, "hooks": [], "status": "broken",
                         "error": b.error})
        for name in self.disabled:
            rows.append({"name": name, "distribution": "", "version": "", "hooks": [],
                         "status": "disabled"})
        return sorted(rows, key=lambda r: r["name"])


def disabled_plugins() -> set[str]:
    return {p.strip() for p in os.environ.get(DISABLE_ENV, "").split(",") if p.strip()}


def new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(GROUP)
    manager.add_hookspecs(hookspecs)
    return manager


def build_host(extra_plugins: dict[str, ModuleType | object] | None = None) -> Host:
    """Load every installed plugin (plus ``extra_plugins``, for tests) and fill the registries."""
    manager = new_manager()
    host = Host(manager, {kind: Registry(kind) for kind in KINDS})
    blocked = disabled_plugins()

    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        source = Source(ep.name, dist.metadata["Name"] if dist else "unknown",
                        dist.version if dist else "unknown")
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
    return host


def _collect(host: Host, kind: str) -> None:
    """Call each plugin's hook on its own so every entry knows its source."""
    caller = getattr(host.manager.hook, f"harness_register_{kind}")
    registry = host.registries[kind]
    for impl in caller.get_hookimpls():
        source = host.sources.get(impl.plugin_name, Source(impl.plugin_name))

        def register(obj: Any, name: str | None = None, _source: Source = source) -> None:
            registry.add(name or getattr(obj, "name", None) or obj.__name__, obj, _source)

        try:
            impl.function(register=register)
        except Exception as exc:
            host.broken.append(BrokenPlugin(impl.plugin_name, source,
                                            f"{type(exc).__name__}: {exc}", traceback.format_exc()))


@lru_cache(maxsize=1)
def get_host() -> Host:
    """The process-wide host (plugins are discovered once per process)."""
    return build_host()
