"""What every plugin test kit shares: check registries, failures that say what broke, lookup.

A kit is a dataclass *case* (the plugin under test and the sizes the checks use),
a dict of *checks* (plain functions taking the case, so a project can parametrize
them over a registry) and a *conformance base class* whose ``test_<check>``
methods pytest collects in a plugin author's test module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], None]


def expect(condition: bool, message: str) -> None:
    """``assert`` that survives ``python -O`` and reads as the contract it checks."""
    if not condition:
        raise AssertionError(message)


class Checks(dict):
    """Name -> check, in the order they were declared; ``@CHECKS("name")`` adds one."""

    def __call__(self, name: str) -> Callable[[Check], Check]:
        def add(fn: Check) -> Check:
            self[name] = fn
            return fn

        return add


def lookup(kind: str, obj: str | type) -> type:
    """A registered plugin class (``kind`` as in ``harness list``), or the class itself."""
    if isinstance(obj, str):
        from harness.host import get_host

        return get_host().registries[kind].get(obj).obj
    return obj


def label(obj: str | type) -> str:
    return obj if isinstance(obj, str) else obj.__name__


def summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def check_declares(kind: str, cls: type, attributes: dict[str, type]) -> None:
    """The class attributes ``harness list`` and the host read: a name, a summary line, ..."""
    name = getattr(cls, "name", "")
    expect(isinstance(name, str) and bool(name), f"{cls.__name__}: set the class attribute `name` (a string)")
    expect(bool(summary(cls)), f"{name}: the class docstring's first line is what `harness list {kind}` shows")
    for attribute, kinds in attributes.items():
        value = getattr(cls, attribute, None)
        expect(isinstance(value, kinds), f"{name}: `{attribute}` must be {kinds}, got {value!r}")


def case_of(test: Any, case_type: type, subject: str) -> Any:
    """The case a conformance test class describes: its class attributes override the case's defaults."""
    if getattr(test, subject, None) is None:
        raise TypeError(f"{type(test).__name__}: set the class attribute `{subject}` "
                        "(a registered name or the plugin class)")
    values = {}
    for f in dataclasses.fields(case_type):
        if hasattr(test, f.name):
            value = getattr(test, f.name)
            values[f.name] = dict(value) if isinstance(value, dict) else value
    return case_type(**values)


def add_tests(cls: type, checks: Checks) -> type:
    """One ``test_<check>`` method per check on a conformance base class."""
    for name, fn in checks.items():
        def test(self: Any, _fn: Check = fn) -> None:
            _fn(self.conformance_case())

        test.__name__ = f"test_{name}"
        test.__doc__ = fn.__doc__
        setattr(cls, test.__name__, test)
    return cls
