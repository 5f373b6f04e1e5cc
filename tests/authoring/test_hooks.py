"""Every hook is tested: for each hookspec, a plugin implementing it reaches the host's registry.

The hooks are read from :mod:`harness.hookspecs` itself, so a new hook is tested
here the day it is added, or this module fails until it maps to a registry.
"""

from __future__ import annotations

import inspect
import types

import pytest

from harness import hookimpl, hookspecs
from harness.host import build_host
from harness.registry import KINDS


def hookspec_names() -> list[str]:
    return sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
                  if hasattr(fn, "harness_spec"))


def test_every_hook_fills_one_registry():
    assert hookspec_names() == sorted(f"harness_register_{kind}" for kind in KINDS)


def _probe(hook: str, *register_args: tuple) -> types.ModuleType:
    """A plugin module implementing only ``hook``: it registers each ``(obj, kwargs)``."""

    def impl(register):
        for obj, kwargs in register_args:
            register(obj, **kwargs)

    module = types.ModuleType(f"probe_{hook}")
    setattr(module, hook, hookimpl(impl))
    return module


@pytest.mark.parametrize("hook", hookspec_names())
def test_hook_registers_entries_with_their_source(hook):
    kind = hook.removeprefix("harness_register_")

    class Probe:
        """A probe entry (its first docstring line is the summary)."""

        name = f"probe-{kind}"
        paper = "none"

    class Unnamed:
        """Registered under an explicit name."""

    host = build_host(extra_plugins={"probe": _probe(hook, (Probe, {}), (Unnamed, {"name": "probe-named"}))})
    registry = host.registries[kind]
    entry = registry.get(f"probe-{kind}")
    assert entry.obj is Probe and entry.source.plugin == "probe"
    assert entry.summary == "A probe entry (its first docstring line is the summary)."
    assert registry.get("probe-named").obj is Unnamed
    # the hook fills its own kind only
    for other in KINDS:
        if other != kind:
            assert f"probe-{kind}" not in host.registries[other]
    assert "probe" in {p["name"] for p in host.plugins() if hook in p["hooks"]}


@pytest.mark.parametrize("hook", hookspec_names())
def test_a_hook_that_raises_marks_its_plugin_broken(hook):
    def impl(register):
        raise RuntimeError(f"boom in {hook}")

    module = types.ModuleType("probe_broken")
    setattr(module, hook, hookimpl(impl))
    host = build_host(extra_plugins={"probe-broken": module})
    assert [(b.name, b.error) for b in host.broken] == [("probe-broken", f"RuntimeError: boom in {hook}")]
    assert len(host.quantizers) > 0  # the others still registered
