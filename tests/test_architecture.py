"""The code's shape beyond the linters (`make lint`: stage order, function length, style): no import cycle between
modules, every module importable on its own, method names only in the registry.

The import graph is read from the source with ``ast``: every ``import`` and ``from ... import`` between bids_jdam
modules, at module level and inside functions, each to the deepest module it names (``from bids_jdam.io import
atomic`` is an edge to ``bids_jdam.io.atomic``).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "bids_jdam"
NOT_IMPORTED = {"bids_jdam.__main__"}  # importing it runs the app

Edges = dict[str, dict[str, list[str]]]  # module -> imported module -> where ("path:line")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _deepest_module(name: str) -> str | None:
    """The module ``name`` or its deepest enclosing bids_jdam module (``pkg.mod.function`` -> ``pkg.mod``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imported_modules(node: ast.AST, module: str) -> set[str]:
    """The bids_jdam modules an import statement of ``module`` names (``from pkg import mod``: ``pkg.mod``)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the importing module's package upwards
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    else:
        return set()
    return {_deepest_module(name) for name in names if name.split(".")[0] == "bids_jdam"} - {None, module}


def import_edges() -> Edges:
    """Every import between bids_jdam modules, with where it is written."""
    edges: Edges = defaultdict(lambda: defaultdict(list))
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for target in _imported_modules(node, module):
                edges[module][target].append(f"{path.relative_to(PACKAGE_ROOT.parent)}:{node.lineno}")
    return edges


def package_of(module: str) -> str:
    """``bids_jdam.cli.run`` -> ``bids_jdam.cli``; a top-level module (``bids_jdam.errors``) is its own node."""
    return ".".join(module.split(".")[:2])


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def _cycle_report(components: list[list[str]], edges: Edges, node_of) -> str:
    """Each cycle with the imports that make it (``importer -> imported at path:line``)."""
    lines = []
    for component in components:
        members = set(component)
        lines.append(f"cycle {' <-> '.join(component)}:")
        for source, targets in sorted(edges.items()):
            for target, where in sorted(targets.items()):
                if node_of(source) in members and node_of(target) in members and node_of(source) != node_of(target):
                    lines.append(f"  {source} -> {target} at {', '.join(where)}")
    return "\n".join(lines)


def test_the_import_graph_sees_imports_inside_functions_and_from_packages():
    edges = import_edges()
    assert "bids_jdam.io.atomic" in edges["bids_jdam.bids.publishing"]  # from bids_jdam.io import atomic
    assert "bids_jdam.reports.group" in edges["bids_jdam.workflows.app"]  # inside _group
    assert "bids_jdam.evaluate" not in edges["bids_jdam.bids.sidecars"]
    assert "bids_jdam" in edges["bids_jdam.workflows.app"]  # from bids_jdam import __version__, atomic
    assert strongly_connected({"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c"}, "e": {"a"}}) == [
        ["a", "b"],
        ["c", "d"],
    ]


def test_no_import_cycle_between_modules():
    edges = import_edges()
    graph = {module: set(targets) for module, targets in edges.items()}
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles between modules:\n" + _cycle_report(cycles, edges, lambda module: module)


@pytest.mark.parametrize("order", ["sorted", pytest.param("reversed", marks=pytest.mark.slow)])
def test_every_module_imports_on_its_own_in_either_order(order: str):
    """A fresh interpreter imports all modules one after the other; a cycle that bites shows as an ImportError."""
    modules = sorted(set(MODULES) - NOT_IMPORTED, reverse=order == "reversed")
    script = (
        "import importlib, sys, traceback\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        print(f'{name}: {traceback.format_exc()}')\n"
        "        sys.exit(1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=PACKAGE_ROOT.parent
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_method_name_is_compared_outside_the_registry():
    """Methods are dispatched through bids_jdam.methods, never by comparing their names."""
    from bids_jdam.methods import METHODS

    names = "|".join(re.escape(name) for name in METHODS.names())
    comparison = re.compile(rf"""(==|!=|\bin\b)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=|\bin\b)""")
    found = [
        f"{path.relative_to(PACKAGE_ROOT.parent)}:{number}: {line.strip()}"
        for path in MODULES.values()
        if "methods" not in path.relative_to(PACKAGE_ROOT).parts[:2]
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if comparison.search(line)
    ]
    assert not found, "\n".join(found)
