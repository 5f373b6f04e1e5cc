"""Every file the repository's prose names exists in the repository.

Scanned: README.md, docs/*.md, pages/README.md, the suites' TOML, and the docstrings and
comments of harness/ and benchmarks/. A mention is a Markdown link (in .md files), a path under one of
the repository's top-level folders (``docs/methods.md``, ``harness/plugins/``), or a bare
``NAME.md``; each must name a file or folder that is here, so no page, docstring or
suite comment can cite notes that live outside the repository.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP = ("docs", "harness", "tests", "benchmarks", "pages", "scripts")
PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(TOP) + r")/[\w./-]*[\w/])")
BARE_MD = re.compile(r"(?<![\w./-])([\w-]+\.md)\b")
LINK = re.compile(r"\]\(([^)#\s]+)")
CLIMB = re.compile(r"(?<![\w.])((?:\.\./)+[\w.-]+)")
#: mentions that name a file of ANOTHER tree on purpose, and why
ELSEWHERE = {
    "tests/test_conformance.py": "the test file `harness new` writes into a new plugin package",
    "tests/data/my-images": "an example dataset root in a user's own project",
}


def python_prose(source: str) -> str:
    """Docstrings and comments of a module: the prose a reader follows, not string data."""
    parts = [doc for node in ast.walk(ast.parse(source))
             if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
             and (doc := ast.get_docstring(node, clean=False))]
    parts += [tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
              if tok.type == tokenize.COMMENT]
    return "\n".join(parts)


def scanned() -> list[tuple[Path, str]]:
    pages = [ROOT / "README.md", ROOT / "pages" / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "harness" / "suites").glob("*.toml"))]
    out = [(page, page.read_text(encoding="utf-8")) for page in pages]
    for folder in ("harness", "benchmarks"):
        out += [(module, python_prose(module.read_text(encoding="utf-8")))
                for module in sorted((ROOT / folder).rglob("*.py"))]
    return out


def repository_names() -> set[str]:
    return {p.name for p in ROOT.rglob("*") if ".git" not in p.parts}


def missing_references(where: Path, text: str, names: set[str]) -> list[str]:
    """The mentions in ``text`` (found in file ``where``) that name nothing in the repository."""
    markdown = where.suffix == ".md"
    text = re.sub(r"```.*?```", "", text, flags=re.S) if markdown else text
    bad = []
    for target in LINK.findall(text) if markdown else ():  # in Python, ``x[k](y)`` is a call
        if "://" not in target and not target.startswith("mailto:"):
            resolved = (where.parent / target).resolve()
            if not (resolved.exists() and ROOT in resolved.parents):
                bad.append(f"link {target}")
    bad += [f"path {path}" for path in PATH.findall(text)
            if path not in ELSEWHERE and not (ROOT / path).exists()]
    bad += [f"file {name}" for name in BARE_MD.findall(text) if name not in names]
    prose = re.sub(r"`[^`]*`", "", text)  # ``../../x`` in code spans is an example input, not a reference
    bad += [f"outside {up}" for up in CLIMB.findall(prose) if ROOT not in (where.parent / up).resolve().parents]
    return bad


def test_the_scan_catches_outside_notes_and_broken_paths() -> None:
    text = "See METHODS.md and docs/nowhere.md, [x](missing.md), ../../notes; docs/methods.md is fine."
    assert missing_references(ROOT / "docs" / "x.md", text, repository_names()) == [
        "link missing.md", "path docs/nowhere.md", "file METHODS.md", "file missing.md", "outside ../../notes"]


@pytest.mark.parametrize("where, text", scanned(), ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else "")
def test_every_file_the_prose_names_exists(where: Path, text: str) -> None:
    bad = missing_references(where, text, NAMES)
    assert not bad, f"{where.relative_to(ROOT)} names what the repository does not hold: {bad}"


NAMES = repository_names()
