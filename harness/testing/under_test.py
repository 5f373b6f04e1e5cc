"""Which plugin distribution a pytest session tests, so its bare names mean its own entries.

A plugin package whose quantizer is called ``ibq`` clashes with the built-in ``ibq``;
its own conformance tests must still run its class. The pytest plugin therefore sets
``HARNESS_UNDER_TEST`` (:data:`harness.registry.UNDER_TEST_ENV`) at start-up, from, in
order: ``--harness-under-test``, the variable already set, or the ``[project] name`` of
the ``pyproject.toml`` in pytest's rootdir when that distribution is installed. The
registry then resolves a clashing bare name to that distribution's entry, and says so:
in a section of the session's summary, and as a ``NameClashWarning`` in pytest's warnings summary.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from harness.registry import BUILTIN_DISTRIBUTION, UNDER_TEST_ENV, canonical

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def project_distribution(rootpath: Path) -> str | None:
    """The installed distribution the rootdir's ``pyproject.toml`` describes, if any."""
    try:
        name = tomllib.loads((Path(rootpath) / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
        return distribution(name).metadata["Name"]
    except (OSError, KeyError, TypeError, ValueError, PackageNotFoundError):
        return None


def configure(rootpath: Path, option: str | None) -> str | None:
    """Set ``HARNESS_UNDER_TEST`` for this session (and its workers); the distribution, if any.

    The harness's own tests set nothing: the built-ins already win a clash by default.
    """
    name = option or os.environ.get(UNDER_TEST_ENV) or project_distribution(rootpath)
    if not name or canonical(name) == canonical(BUILTIN_DISTRIBUTION):
        return None
    os.environ[UNDER_TEST_ENV] = name
    return name


def header_lines() -> list[str]:
    """The summary's lines: the distribution under test and every name clash."""
    lines = []
    name = os.environ.get(UNDER_TEST_ENV)
    if name:
        lines.append(f"harness: distribution under test: {name} (${UNDER_TEST_ENV}); a bare name "
                     "another plugin registers too means its entry")
    from harness.errors import HarnessError
    from harness.host import get_host

    try:
        registries = get_host().registries.values()
        lines += [f"harness: {r.conflict_message(n)}" for r in registries for n in r.conflicts]
    except HarnessError as exc:  # never keep a test session from starting
        lines.append(f"harness: cannot list plugin name clashes: {exc}")
    return lines
