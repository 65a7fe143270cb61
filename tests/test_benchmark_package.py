"""benchmarks/ is a package: no sys.path edits, every module imports as ``benchmarks.<name>``, every runnable one has
``main`` and is started as ``python -m benchmarks.<name>`` wherever a command names it."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SOURCES = sorted(BENCHMARKS.rglob("*.py"))
MODULES = sorted(path.stem for path in BENCHMARKS.glob("*.py") if path.stem != "__init__")
# The benchmarks a person runs (benchmarks/README.md); each must stay runnable.
EXPECTED_RUNNABLE = {
    "denormals",
    "learning_curve",
    "noise_independence",
    "preprocess",
    "qc_distribution",
    "quality",
    "speed",
    "synthesis",
    "throughput",
    "train_demo",
}
# Files that start benchmarks: none may run one as a script path (its imports would then not resolve).
COMMAND_FILES = [
    REPO / "Makefile",
    BENCHMARKS / "gpu" / "check.sh",
    BENCHMARKS / "README.md",
    REPO / "README.md",
    *sorted((REPO / "docs").rglob("*.md")),
]
SCRIPT_RUN = re.compile(r"python3?\s+(?:\S*/)?benchmarks/\w+\.py")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _sys_path_uses(tree: ast.Module) -> list[int]:
    """Lines that touch ``sys.path`` (insert, append, assignment, ...) or import ``path`` from ``sys``."""
    lines = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    ]
    lines += [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module == "sys"
        and any(alias.name == "path" for alias in node.names)
    ]
    return sorted(lines)


def _runs_as_main(tree: ast.Module) -> bool:
    """Whether the module has an ``if __name__ == "__main__":`` block at its top level."""
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = [node.test.left, *node.test.comparators]
            if any(isinstance(n, ast.Name) and n.id == "__name__" for n in names) and any(
                isinstance(n, ast.Constant) and n.value == "__main__" for n in names
            ):
                return True
    return False


RUNNABLE = sorted(name for name in MODULES if _runs_as_main(_tree(BENCHMARKS / f"{name}.py")))


def test_the_package_and_its_benchmarks_exist():
    assert (BENCHMARKS / "__init__.py").is_file()
    assert EXPECTED_RUNNABLE <= set(RUNNABLE), f"not runnable: {sorted(EXPECTED_RUNNABLE - set(RUNNABLE))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_benchmark_edits_sys_path(path):
    assert not _sys_path_uses(_tree(path)), f"{path.relative_to(REPO)}: sys.path at lines {_sys_path_uses(_tree(path))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_benchmarks_import_each_other_through_the_package(path):
    siblings = {p.stem for p in path.parent.glob("*.py")} - {"__init__"}
    flat = [
        f"{node.lineno}: {node.module}"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in siblings
    ]
    flat += [
        f"{node.lineno}: {alias.name}"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name in siblings
    ]
    assert not flat, f"{path.relative_to(REPO)} imports siblings as top-level modules: {flat}"


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports_as_part_of_the_package(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.__name__ == f"benchmarks.{name}"
    if name in RUNNABLE:
        assert callable(getattr(module, "main", None)), f"benchmarks.{name} runs as __main__ but has no main()"


@pytest.mark.parametrize("path", [p for p in COMMAND_FILES if p.is_file()], ids=lambda p: str(p.relative_to(REPO)))
def test_commands_run_benchmarks_as_modules(path):
    assert not SCRIPT_RUN.findall(path.read_text()), f"{path.relative_to(REPO)}: use python -m benchmarks.<name>"


def test_a_benchmark_starts_as_a_module_from_the_repository_root():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.throughput", "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "python -m benchmarks.throughput" in done.stdout
