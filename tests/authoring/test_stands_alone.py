"""The repository stands alone: its pages point at nothing outside it, and the contributor's
architecture page and the tutorial keep up with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.registry import KINDS

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_points_outside_the_repository(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # templates aside
    # notes outside the repository: tests/authoring/test_references.py
    for target in re.findall(r"\]\(([^)#\s]+)", text):  # relative Markdown links resolve inside it
        if "://" not in target:
            resolved = (page.parent / target).resolve()
            assert resolved.exists() and ROOT in resolved.parents, f"{page.name}: broken link {target}"


def test_the_readme_sends_contributors_to_the_architecture_page() -> None:
    assert "docs/architecture.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_architecture_page_names_every_plugin_kind_and_folder() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for kind in KINDS:
        assert f"harness_register_{kind}" in text and f"harness/plugins/{kind}/" in text, kind
    for folder in ("harness/", "harness/plugins/", "harness/suites/", "harness/leaderboard/", "pages/", "tests/", "docs/"):
        assert folder in text, folder


def test_the_tutorial_installs_the_test_extra_before_running_pytest() -> None:
    text = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    step3 = text[text.index("## 3."):text.index("## 4.")]
    assert 'pip install -e ".[test]"' in step3 and step3.index(".[test]") < step3.index("pytest  ")
    assert "you implement `quantize(z)`" in text and "you do not override `forward`" in text
