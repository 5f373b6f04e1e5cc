"""Lazy plugin targets: ``"module:Class"`` strings imported on first use, described without importing.

A registry entry may hold its class or a ``"package.module:Class"`` string (the way
lm-evaluation-harness registers tasks). Listing commands need only the entry's name,
kind and one-line summary, so those come from the plugin's *source text*: the module
file is located without running it, parsed with :mod:`ast`, and the class's docstring
(first line) and literal ``name`` and ``paper`` attributes are read. Importing the
module (and torch with it) waits until a cell, a check or a kit needs the class.

Only the standard library is imported here: ``harness list`` must stay cheap.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

#: separates the module from the attribute path in a lazy target
SEPARATOR = ":"


def is_target(obj: Any) -> bool:
    """Whether ``obj`` is a lazy ``"module:attr"`` string rather than the object itself."""
    return isinstance(obj, str) and SEPARATOR in obj


def split(target: str) -> tuple[str, str]:
    module, _, attr = target.partition(SEPARATOR)
    if not module or not attr:
        raise ValueError(f"a lazy plugin target is 'package.module:Class', got {target!r}")
    return module.strip(), attr.strip()


def load(target: str) -> Any:
    """Import ``target``'s module and return the attribute (``a.b:C.D`` walks ``C`` then ``D``)."""
    module, attr = split(target)
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def module_file(module: str) -> Path | None:
    """The source file of ``module``, found without executing it or its parent packages."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        file = getattr(loaded, "__file__", None)
        return Path(file) if file else None
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name: nothing runs
        for depth in range(1, len(parts)):
            locations = spec.submodule_search_locations if spec else None
            if not locations:
                return None
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: depth + 1]), list(locations))
    except (ImportError, ValueError):
        return None
    origin = spec.origin if spec else None
    return Path(origin) if origin and origin.endswith(".py") else None


@dataclass(frozen=True)
class StaticInfo:
    """What the source text says about a class: its ``name`` and ``paper`` literals, its summary."""

    found: bool = False
    name: str = ""
    summary: str = ""
    paper: str = ""


def static_info(target: str) -> StaticInfo:
    """The class's literal attributes and docstring, read from source (see the module docstring)."""
    try:
        module, attr = split(target)
    except ValueError:
        return StaticInfo()
    return _class_info(module, attr.split(".")[-1], 0)


@lru_cache(maxsize=512)
def _class_info(module: str, cls: str, depth: int) -> StaticInfo:
    if depth > 4:
        return StaticInfo()
    quick = _quick_info(module, cls, depth)
    if quick is not None:
        return quick
    tree = _parse(module)
    if tree is None:
        return StaticInfo()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return _read_class(node, module, _constants(tree), depth)
    for node in tree.body:  # a class re-exported from another module: follow the import
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == cls for a in node.names):
            original = next(a.name for a in node.names if (a.asname or a.name) == cls)
            return _class_info(_absolute(module, node), original, depth + 1)
    return StaticInfo()


def _quick_info(module: str, cls: str, depth: int) -> StaticInfo | None:
    """The class read from its head alone (header, docstring, attributes before the first method):
    a long module then costs a few lines' parse. ``None`` when the head does not settle it."""
    text = _source(module)
    found = re.search(rf"^class {re.escape(cls)}\b.*$", text or "", re.MULTILINE)
    if text is None or found is None:
        return None
    head = text[found.start():]
    body = re.search(r"^[ \t]+(?:@|def |async def )|^\S", head[found.end() - found.start():], re.MULTILINE)
    if body is not None:
        head = head[: found.end() - found.start() + body.start()]
    try:
        node = ast.parse(head).body[0]
    except (SyntaxError, IndexError, ValueError):
        return None
    if not isinstance(node, ast.ClassDef) or node.bases and not all(isinstance(b, ast.Name) for b in node.bases):
        return None
    constants = dict(re.findall(r"^([A-Za-z_]\w*)\s*=\s*\"([^\"\\\n]*)\"\s*$", text, re.MULTILINE))
    info = _read_class(node, module, constants, depth)
    assigned = {t.id for st in node.body if isinstance(st, ast.Assign) for t in st.targets
                if isinstance(t, ast.Name)}
    unresolved = any(isinstance(st, ast.Assign) and _literal(st.value, constants) is None
                     for st in node.body if any(getattr(t, "id", "") in ("name", "paper")
                                                for t in getattr(st, "targets", [])))
    if unresolved or not {"name", "paper"} <= assigned:  # it may be set further down, or inherited
        return None
    return info


@lru_cache(maxsize=256)
def _source(module: str) -> str | None:
    path = module_file(module)
    try:
        return path.read_text(encoding="utf-8") if path is not None else None
    except (OSError, ValueError):
        return None


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments (a class may say ``paper = PAPER``)."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            value = _literal(node.value, {})
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and value is not None:
                    found[target.id] = value
    return found


def _literal(node: ast.AST | None, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    path = module_file(module)
    keep = len(parts) - node.level + (1 if path is not None and path.name == "__init__.py" else 0)
    base = parts[:keep]
    return ".".join([*base, *([node.module] if node.module else [])])


@lru_cache(maxsize=256)
def _parse(module: str) -> ast.Module | None:
    text = _source(module)
    try:
        return ast.parse(text, str(module_file(module))) if text is not None else None
    except (SyntaxError, ValueError):
        return None


def _read_class(node: ast.ClassDef, module: str, constants: dict[str, str], depth: int) -> StaticInfo:
    """The class's own docstring and literals; what it lacks, from its bases (as Python inherits)."""
    doc = (ast.get_docstring(node) or "").strip()
    values = {"summary": doc.splitlines()[0] if doc else ""}
    for statement in node.body:
        targets = (statement.targets if isinstance(statement, ast.Assign)
                   else [statement.target] if isinstance(statement, ast.AnnAssign) else [])
        value = _literal(getattr(statement, "value", None), constants)
        for target in targets:
            if isinstance(target, ast.Name) and target.id in ("name", "paper") and value is not None:
                values[target.id] = value
    for base in node.bases:
        if all(values.get(k) for k in ("name", "paper", "summary")):
            break
        if isinstance(base, ast.Name):
            inherited = _class_info(module, base.id, depth + 1)
            for key in ("name", "paper", "summary"):
                values[key] = values.get(key) or getattr(inherited, key)
    return StaticInfo(True, values.get("name", ""), values["summary"], values.get("paper", ""))


# -- constructor parameters, from source -----------------------------------------------------------

@dataclass(frozen=True)
class Parameters:
    """The names a plugin's constructor takes; ``open``: it also takes any keyword (``**kwargs``)."""

    names: frozenset[str]
    open: bool = False


def parameters_of(obj: Any) -> Parameters:
    """The parameters of an imported class or function (:func:`inspect.signature`)."""
    import inspect

    found = inspect.signature(obj).parameters.values()
    return Parameters(frozenset(p.name for p in found), any(p.kind is p.VAR_KEYWORD for p in found))


def static_parameters(target: str) -> Parameters | None:
    """The constructor's parameters as the source text writes them, without importing it; ``None``
    when the text does not settle them, and the caller imports the class instead.

    Settled: a plain class whose own ``__init__`` (undecorated) names them, or which inherits one
    from a single base class found the same way (in its module, or where it was imported from).
    Not settled: a decorated class (``@dataclass`` writes its ``__init__``), a metaclass, several
    bases, a base from a module without source (``nn.Module``), a function.
    """
    located = _target_class(target)
    return _init_parameters(*located, 0) if located else None


def static_term(target: str) -> str | None:
    """A loss class's literal ``term`` (its own or its bases', ``""`` if none sets it), read from
    source as :func:`static_parameters` reads; ``None`` when the text does not settle it."""
    located = _target_class(target)
    return _term(*located, 0) if located else None


def _target_class(target: str) -> tuple[str, str] | None:
    try:
        module, attr = split(target)
    except ValueError:
        return None
    return (module, attr) if "." not in attr else None


@lru_cache(maxsize=512)
def _find_class(module: str, name: str, depth: int) -> tuple[ast.ClassDef, str] | None:
    """The class statement ``name`` refers to in ``module``, and the module that holds it: defined
    there, or imported (``from x import name``, also under ``if TYPE_CHECKING:``, where a lazy
    module such as ``harness.contracts`` says where its names live) and followed."""
    tree = _parse(module) if depth <= 6 else None
    if tree is None:
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node, module
    checking = [n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]
    for node in [*tree.body, *(statement for block in checking for statement in block.body)]:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return _find_class(_absolute(module, node), alias.name, depth + 1)
    return None


def _single_base(node: ast.ClassDef) -> str | None:
    """The class's one base named plainly (``class A(B)``), else ``None`` (several, or ``x.B``)."""
    return node.bases[0].id if len(node.bases) == 1 and isinstance(node.bases[0], ast.Name) else None


def _init_parameters(module: str, cls: str, depth: int) -> Parameters | None:
    found = _find_class(module, cls, depth)
    if found is None:
        return None
    node, module = found
    if node.decorator_list or node.keywords:
        return None
    for statement in node.body:
        if isinstance(statement, ast.FunctionDef) and statement.name == "__init__":
            return None if statement.decorator_list else _arguments(statement.args)
        if isinstance(statement, (ast.FunctionDef, ast.Assign)) and _defines(statement, ("__new__", "__signature__")):
            return None
    base = _single_base(node)
    return _init_parameters(module, base, depth + 1) if base else None


def _term(module: str, cls: str, depth: int) -> str | None:
    found = _find_class(module, cls, depth)
    if found is None:
        return None
    node, module = found
    for statement in node.body:
        if _defines(statement, ("term",)) or (isinstance(statement, ast.AnnAssign)
                                              and getattr(statement.target, "id", "") == "term"):
            return _literal(getattr(statement, "value", None), _constants(_parse(module)))
    if not node.bases:
        return ""
    base = _single_base(node)
    return _term(module, base, depth + 1) if base else None


def _defines(statement: ast.stmt, names: tuple[str, ...]) -> bool:
    if isinstance(statement, ast.FunctionDef):
        return statement.name in names
    return any(isinstance(t, ast.Name) and t.id in names for t in getattr(statement, "targets", []))


def _arguments(args: ast.arguments) -> Parameters:
    """What :func:`inspect.signature` of the class shows: every argument but ``self``."""
    positional = [a.arg for a in (*args.posonlyargs, *args.args)][1:]
    names = {*positional, *(a.arg for a in args.kwonlyargs)}
    if args.vararg is not None:
        names.add(args.vararg.arg)
    if args.kwarg is not None:
        names.add(args.kwarg.arg)
    return Parameters(frozenset(names), args.kwarg is not None)
