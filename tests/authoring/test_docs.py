"""The docs stay honest: every hook, every suite key and every doc page a README link away."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from harness import hookspecs
from harness.suite import CLAIM_KEYS, METHOD_KEYS, REFERENCE_KEYS, SCHEDULE_KEYS, SCHEMA

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = ("tutorial.md", "hooks.md", "suites.md", "ci.md")


def sections(text: str) -> dict[str, str]:
    """Markdown sections by heading line (any level)."""
    parts = re.split(r"^(#+ .*)$", text, flags=re.M)
    return {parts[i].lstrip("#").strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def hooks() -> list[tuple[str, list[str]]]:
    return sorted((name, list(inspect.signature(fn).parameters))
                  for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
                  if hasattr(fn, "harness_spec"))


@pytest.mark.parametrize("hook, arguments", hooks())
def test_every_hook_is_documented_with_its_arguments(hook, arguments):
    found = {title: body for title, body in sections((DOCS / "hooks.md").read_text()).items()
             if f"`{hook}" in title}
    assert found, f"docs/hooks.md has no section titled with `{hook}`"
    title, body = next(iter(found.items()))
    for argument in arguments:
        assert f"`{argument}`" in title + body, f"docs/hooks.md, {hook}: argument {argument!r} undocumented"


TABLES = {**{f"[{table}]": keys for table, keys in SCHEMA.items()},
          "[methods.<label>]": METHOD_KEYS, "[[schedules]]": SCHEDULE_KEYS,
          "[[claims]]": CLAIM_KEYS, "[[reference]]": REFERENCE_KEYS}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_suite_key_is_documented(table):
    found = [body for title, body in sections((DOCS / "suites.md").read_text()).items()
             if f"`{table}`" in title]
    assert found, f"docs/suites.md has no section titled `{table}`"
    missing = [key for key in TABLES[table] if f"`{key}`" not in found[0]]
    assert not missing, f"docs/suites.md, {table}: keys {missing} undocumented"


def test_readme_links_every_page():
    readme = (ROOT / "README.md").read_text()
    for page in PAGES:
        assert (DOCS / page).is_file(), page
        assert f"docs/{page}" in readme, f"README.md does not link docs/{page}"


def test_tutorial_commands_match_the_cli():
    """Each `harness <command>` the tutorial shows is a real subcommand."""
    from harness.commands.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    shown = set(re.findall(r"^\s*(?:\$ )?harness ([a-z]+)", (DOCS / "tutorial.md").read_text(), flags=re.M))
    assert shown and shown <= set(sub.choices), shown - set(sub.choices)
