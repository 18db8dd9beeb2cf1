"""The house in layers (README, Development): imports point down, no cycle, the CLI stays light.

import-linter's contracts (pyproject.toml) are checked here as well as by ``make lint``, and
the graph is searched for cycles, function-level imports included.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "otel_memory"
REPO = PACKAGE.parent


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    modules = sorted(m for m in graph.modules if m.startswith("otel_memory"))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if not child.startswith("otel_memory"):
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_package_has_no_import_cycle():
    graph = grimp.build_graph("otel_memory", include_external_packages=False)
    assert len(graph.modules) > 40  # the graph was really built
    assert _cycles(graph) == []


def test_the_cycle_search_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("otel_memory.a", "otel_memory.b", "otel_memory.c"):
        graph.add_module(name)
    graph.add_import(importer="otel_memory.a", imported="otel_memory.b")
    graph.add_import(importer="otel_memory.b", imported="otel_memory.c")
    graph.add_import(importer="otel_memory.c", imported="otel_memory.a")
    assert _cycles(graph) == [["otel_memory.a", "otel_memory.b", "otel_memory.c"]]


def test_import_linter_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports)], cwd=REPO, check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def _calls(name: str) -> list[str]:
    """Modules (relative to the package) that call ``name(...)``."""
    where = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
                where.append(str(path.relative_to(PACKAGE)))
                break
    return where


def test_only_the_public_api_looks_the_runtime_up():
    assert _calls("get_runtime") == ["api.py"]


def test_no_function_level_import_dodges_a_cycle():
    hidden = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "noqa: PLC0415" in path.read_text()
    ]
    assert hidden == []


@pytest.mark.parametrize(
    "code",
    [
        "import otel_memory.cli",
        "import otel_memory",
        "from otel_memory.cli import main; main(['--version'])",
    ],
)
def test_the_cli_and_the_front_door_load_neither_opentelemetry_nor_psutil(code):
    probe = (
        f"{code}\nimport sys\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('opentelemetry', 'psutil')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_front_door_loads_a_name_on_first_use():
    probe = (
        "import sys, otel_memory\n"
        "assert 'otel_memory.api' not in sys.modules\n"
        "otel_memory.traced_task\n"
        "assert 'otel_memory.api' in sys.modules\n"
        "assert set(otel_memory.__all__) <= set(dir(otel_memory))\n"
        "try:\n    otel_memory.nope\nexcept AttributeError as e:\n    print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "has no attribute 'nope'" in result.stdout
