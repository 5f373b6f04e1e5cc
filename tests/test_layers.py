"""The import picture of ``harness/`` keeps the rules docs/architecture.md states.

Every ``import`` of every module counts, at module level or inside a function (an import
deferred to a function is still a dependency); only ``if TYPE_CHECKING:`` blocks are left
out. Read from the source with :mod:`ast`, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "harness"
#: what any plugin may import: the public face and the test kits; every contract type and every
#: host entry point a plugin calls comes through ``harness.contracts`` (its door, not its submodules)
PUBLIC = {"harness", "harness.hookspecs", "harness.host", "harness.registry", "harness.lazy",
          "harness.contracts", "harness.errors", "harness.ops", "harness.tracking"}
#: reaches past the public face that exist today, each with why; this list may only shrink
KNOWN_PLUGIN_REACHES: dict[tuple[str, str], str] = {}
#: the host's imports of first-party plugins today, each with why; this list may only shrink
KNOWN_HOST_TO_PLUGIN = {
    ("harness.commands.bench", "harness.plugins.peers"): "the peer-library table of `bench --peer`",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(HARNESS.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (annotations only, never executed)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return skip


def _resolve(target: str) -> str | None:
    """The module of ``harness`` an imported name lives in (longest existing prefix)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def imports_of(name: str) -> set[str]:
    """Every module of ``harness`` that module ``name`` imports."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skip, found = _type_checking_nodes(tree), set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {module for t in targets if t.startswith("harness") and (module := _resolve(t))}
    return found - {name}


GRAPH = {name: imports_of(name) for name in MODULES}


def is_plugin(name: str) -> bool:
    return name.startswith("harness.plugins.") or name == "harness.plugins"


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_the_graph_sees_the_imports_it_should() -> None:
    assert "harness.contracts" in GRAPH["harness.plugins.quantizers.vq"]
    assert "harness.suite.schema" in GRAPH["harness.suite.claims"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert floor_of("harness.run.lifecycle") == "harness.run"
    assert floor_of("harness.tracking.store") == floor_of("harness.tracking") == "harness.tracking"
    assert floor_of("harness.errors") == "harness.errors" and floor_of("harness.plugins.quantizers.vq") is None
    assert "harness.tracking" in floor_graph()["harness.recovery"]


def test_no_import_circles() -> None:
    found = circles(GRAPH)
    assert not found, f"import circles (break each by moving what both sides need below them): {found}"


def floor_of(module: str) -> str | None:
    """The floor a host module stands on: its subpackage (``harness.run``), the contract's door
    (``harness.contracts``), or the face module itself; ``None`` for plugins."""
    if is_plugin(module):
        return None
    if module == "harness.contracts":
        return "harness.contracts (door)"
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (HARNESS / parts[-1]).is_dir() else module


def floor_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        if (floor := floor_of(module)) is not None:
            graph.setdefault(floor, set()).update(
                f for t in targets if (f := floor_of(t)) not in (None, floor))
    return graph


def test_the_floors_stack_with_no_arrow_back_up() -> None:
    """Subpackages and face modules form floors that import only downwards: no two floors import
    each other, directly or round a longer loop (a circle among floors is an arrow that runs
    back up whatever the order chosen)."""
    found = circles(floor_graph())
    assert not found, f"floors that import each other (move what both need to the lower one): {found}"


def test_the_contract_types_sit_below_the_host_and_its_door_above() -> None:
    """``harness.contracts``'s submodules import nothing of the host but errors and the package root
    (its version): a plugin's types need no host. The host imports those submodules, never the door,
    which names host entry points."""
    door, types = "harness.contracts", {m for m in MODULES if m.startswith("harness.contracts.")}
    below = sorted((m, b) for m in types for b in GRAPH[m] if b not in types and b not in ("harness", "harness.errors"))
    assert not below, f"a contract type module imports the host: {below}"
    host = sorted(a for a, targets in GRAPH.items() if door in targets and not is_plugin(a)
                  and not a.startswith("harness.testing") and a not in types)
    assert not host, f"host modules import the harness.contracts door (import its submodules): {host}"


def test_the_leaderboard_reads_what_runs_recorded_not_the_installed_plugins() -> None:
    """A page ranks by the directions its runs recorded (``harness.metric_directions``); what no
    run recorded comes from the caller (``direction_of``), so the leaderboard imports no registry."""
    registries = {"harness.host", "harness.registry", "harness.lazy"}
    found = sorted((m, t) for m, targets in GRAPH.items() if m.startswith("harness.leaderboard")
                   for t in targets if t in registries)
    assert not found, f"leaderboard modules import the plugin registries: {found}"


def test_the_host_never_imports_a_plugin() -> None:
    edges = {(a, b) for a, targets in GRAPH.items() if not is_plugin(a) for b in targets if is_plugin(b)}
    new = sorted(edges - set(KNOWN_HOST_TO_PLUGIN))
    assert not new, f"the host imports plugins (ask the registry or a hook instead): {new}"
    gone = sorted(set(KNOWN_HOST_TO_PLUGIN) - edges)
    assert not gone, f"fixed: remove {gone} from KNOWN_HOST_TO_PLUGIN"


def test_plugins_import_only_the_public_face() -> None:
    edges = {(a, b) for a, targets in GRAPH.items() if is_plugin(a) for b in targets
             if not is_plugin(b) and b not in PUBLIC and not b.startswith("harness.testing")}
    new = sorted(edges - set(KNOWN_PLUGIN_REACHES))
    assert not new, f"plugins reach past the public face (docs/architecture.md, import rules): {new}"
    gone = sorted(set(KNOWN_PLUGIN_REACHES) - edges)
    assert not gone, f"fixed: remove {gone} from KNOWN_PLUGIN_REACHES"


def mlflow_doors(source: str) -> list[str]:
    """Where ``source`` reaches MLflow past the Tracker: imports ``mlflow``, reads a ``.client``
    attribute (a Tracker's ``MlflowClient``) or names the private ``_retry``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] == "mlflow"]
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] == "mlflow":
                found.append(f"line {node.lineno}: from {node.module} import ...")
            found += [f"line {node.lineno}: imports _retry" for a in node.names if a.name == "_retry"]
        elif isinstance(node, ast.Attribute) and node.attr in ("client", "_retry"):
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Name) and node.id == "_retry":
            found.append(f"line {node.lineno}: _retry")
    return found


def test_the_door_check_sees_a_bypass() -> None:
    assert mlflow_doors("tracker.client.get_run(x)") == ["line 1: .client"]
    assert mlflow_doors("from harness.tracking import Tracker, _retry") == ["line 1: imports _retry"]
    assert mlflow_doors("from mlflow.entities import Metric\nimport mlflow") == [
        "line 1: from mlflow.entities import ...", "line 2: import mlflow"]
    assert mlflow_doors("tracker.get_run(x)\nrun = 'mlflow server'") == []


def _in_tracking(name: str) -> bool:
    return name == "harness.tracking" or name.startswith("harness.tracking.")


def test_the_tracker_is_the_only_door_to_mlflow() -> None:
    doors = {name: found for name, path in MODULES.items() if not _in_tracking(name)
             and (found := mlflow_doors(path.read_text(encoding="utf-8")))}
    assert not doors, ("only harness.tracking talks to MLflow; give Tracker the method you need "
                       f"(docs/architecture.md, \"One door to MLflow\"): {doors}")


def _has_code(path: Path) -> bool:
    """A module that defines something (an ``__init__.py`` with only a docstring is a folder marker)."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def test_the_architecture_module_map_matches_the_code() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text[text.index("## Module map"):text.index("## Where a change goes")]
    rows = "\n".join(line for line in table.splitlines() if line.startswith("|"))
    listed = set(re.findall(r"`([\w/]+\.py)`", rows))
    host = {p.relative_to(HARNESS).as_posix() for name, p in MODULES.items()
            if not is_plugin(name) and _has_code(p)}
    missing = sorted(m for m in listed if not (HARNESS / m).is_file())
    assert not missing, f"docs/architecture.md's module map lists modules that do not exist: {missing}"
    unlisted = sorted(host - listed)
    assert not unlisted, f"docs/architecture.md's module map does not list: {unlisted}"
