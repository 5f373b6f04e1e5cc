"""docs/methods.md keeps a card for every first-party quantizer, and each card its fields."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUANTIZERS = ROOT / "harness" / "plugins" / "quantizers"
FIELDS = ("**Paper:**", "**Public code:**", "**Plugin:**", "**What it does:**", "**Defaults", "**Deviations")


def first_party_quantizers() -> dict[str, Path]:
    """Registry name -> module, read from the source (a class body assigning ``name = "..."``)."""
    found: dict[str, Path] = {}
    for module in sorted(QUANTIZERS.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if (isinstance(stmt, ast.Assign) and any(getattr(t, "id", "") == "name" for t in stmt.targets)
                            and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)):
                        found[stmt.value.value] = module
    return found


def cards() -> dict[str, str]:
    """Card body by each backticked name in its ``## `` heading (the template block excluded)."""
    text = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    parts = re.split(r"^## (.*)$", text, flags=re.M)
    out: dict[str, str] = {}
    for title, body in zip(parts[1::2], parts[2::2], strict=True):
        for name in re.findall(r"`([^`]+)`", title):
            out[name] = body
    return out


def test_the_source_scan_finds_the_quantizers() -> None:
    names = first_party_quantizers()
    assert {"vq", "ema", "drifting", "nsvq", "transvq-mlp"} <= set(names), sorted(names)


def test_every_first_party_quantizer_has_a_card() -> None:
    missing = sorted(set(first_party_quantizers()) - set(cards()))
    assert not missing, f"docs/methods.md has no card for {missing} (copy the template at its top)"


def test_every_card_names_a_quantizer_and_has_every_field() -> None:
    names = first_party_quantizers()
    for name, body in cards().items():
        assert name in names, f"docs/methods.md: card `{name}` names no first-party quantizer"
        missing = [field for field in FIELDS if field not in body]
        assert not missing, f"docs/methods.md, `{name}`: fields {missing} missing"
        module = names[name].relative_to(ROOT).as_posix()
        assert module in body, f"docs/methods.md, `{name}`: the card does not name {module}"
