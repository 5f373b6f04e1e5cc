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
import tomllib

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
    text = "See OUTSIDE.md and docs/nowhere.md, [x](missing.md), ../../notes; docs/methods.md is fine."
    assert missing_references(ROOT / "docs" / "x.md", text, repository_names()) == [
        "link missing.md", "path docs/nowhere.md", "file OUTSIDE.md", "file missing.md", "outside ../../notes"]


@pytest.mark.parametrize("where, text", scanned(), ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else "")
def test_every_file_the_prose_names_exists(where: Path, text: str) -> None:
    bad = missing_references(where, text, NAMES)
    assert not bad, f"{where.relative_to(ROOT)} names what the repository does not hold: {bad}"


NAMES = repository_names()


def reference_labels() -> list[str]:
    """The short labels of docs/references.md: the first column of its tables."""
    text = (ROOT / "docs" / "references.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| *`?([^|`]+?)`? *\|", text, flags=re.M)
    return [label for label in rows if label not in ("label", "---")]


def _class_papers(module: Path) -> list[str]:
    """The ``paper`` class attributes of a plugin module (a string, or a module constant's)."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 and isinstance(n.value, ast.Constant) for t in n.targets if isinstance(t, ast.Name)}
    found = []
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for stmt in cls.body:
            if isinstance(stmt, ast.Assign) and any(getattr(t, "id", "") == "paper" for t in stmt.targets):
                value = stmt.value
                found.append(value.value if isinstance(value, ast.Constant)
                             else constants.get(getattr(value, "id", ""), ast.unparse(value)))
    return found


def citations() -> list[tuple[str, str]]:
    """(where, citation) for every first-party plugin's ``paper`` and every suite's paper and sources."""
    out = [(str(m.relative_to(ROOT)), paper) for m in sorted((ROOT / "harness" / "plugins").rglob("*.py"))
           for paper in _class_papers(m)]
    for suite in sorted((ROOT / "harness" / "suites").glob("*.toml")):
        data = tomllib.loads(suite.read_text(encoding="utf-8"))
        out.append((suite.name, data["suite"].get("paper", "")))
        out += [(suite.name, ref.get("source", "")) for ref in data.get("reference", [])]
    return out


def test_every_citation_starts_with_a_label_of_the_references_page() -> None:
    labels = tuple(reference_labels()) + ("none (", "harness protocol (")
    assert "Liu 2026" in labels and "Beyond Stationarity" in labels
    bad = sorted({(where, cite) for where, cite in citations() if cite and not cite.startswith(labels)})
    assert not bad, f"cite these by a label of docs/references.md (add the paper there if new): {bad}"
