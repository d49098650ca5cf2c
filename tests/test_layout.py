"""The shape of the code: `pipeline/` by stage, bottom floor first, and `assets/` as a thin layer on
top. Read from the project's own imports (every import statement, lazy ones in functions included),
so a new circle or an import that climbs back up fails here rather than in a reader's head."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LAYERS: tuple[tuple[str, ...], ...] = (
    ("pipeline.core",),
    ("pipeline.difficulty", "pipeline.engines", "pipeline.hygiene"),
    ("pipeline.rollouts",),
    ("pipeline.verify",),
    ("pipeline.ingest", "pipeline.labels", "pipeline.probes", "pipeline.rewards"),
    ("pipeline.backends", "pipeline.curriculum"),
    ("pipeline.training",),
    ("pipeline.export",),
    ("assets",),
)
"""The floors, lowest first: a module may import its own package and any package on a lower floor,
never one beside it or above it. The data flows upwards through them."""


def _modules() -> dict[str, Path]:
    modules = {}
    for package in ("pipeline", "assets"):
        for file in sorted((REPO / package).rglob("*.py")):
            parts = file.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return modules


def _imports(file: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{file}: relative import"
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
            names.add(node.module)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports (`from a import b` counts `a.b` when it is a module)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    return {module: {target for name in _imports(file) if (target := resolve(name)) not in (None, module)}
            for module, file in modules.items()}


def floor(module: str) -> tuple[int, str]:
    """The floor and the package of a module; the bare `pipeline` package (a docstring) is beneath all."""
    for level, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                return level, package
    if module == "pipeline":
        return -1, module
    raise AssertionError(f"{module} is in no floor of LAYERS: add its package there")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_project_imports_draw_no_circle() -> None:
    assert cycles(import_graph()) == []


def test_no_import_runs_back_up_or_sideways() -> None:
    wrong = []
    for module, targets in import_graph().items():
        here, package = floor(module)
        for target in targets:
            there, other = floor(target)
            if other != package and there >= here:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_the_library_imports_no_dagster() -> None:
    offenders = sorted(
        str(file.relative_to(REPO)) for file in (REPO / "pipeline").rglob("*.py")
        if any(name.split(".")[0] == "dagster" or name.split(".")[0] == "assets" for name in _imports(file))
    )
    assert offenders == []


@pytest.mark.parametrize(("graph", "expected"), [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_cycles_finds_a_circle_of_three(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(graph) == expected


def test_floor_refuses_a_package_outside_the_layers() -> None:
    assert floor("pipeline.verify.scoring") == (3, "pipeline.verify")
    with pytest.raises(AssertionError, match="no floor"):
        floor("pipeline.somewhere_new")
