"""The layers, read from the source: imports point down only.

    shell       app/ (the CLI, ``xietong run``, the simulator, demo data), deploy/
    parts       connectors/  streams/  registry/  schemas/
    ground      xietong/

The ground imports no part and no shell; a part imports no shell; and no two modules of
one part import each other, directly or round a longer loop. Every ``import`` counts,
also one inside a function (it still ties the two modules together). Run it alone with
``pytest tests/unit/test_layers.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
GROUND = "xietong"
PARTS = ("connectors", "streams", "registry", "schemas")
SHELL = ("app", "deploy")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the ground, the parts and the shell, by dotted name."""
    found = {}
    for package in (GROUND, *PARTS, *SHELL):
        for path in sorted((REPO / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imported(name: str) -> Iterator[tuple[str, int]]:
    """The modules of the repository that module ``name`` imports, with the line."""
    path = modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from package import module`` imports the module; ``from module import
            # name`` the module alone.
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules():
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node.lineno


def top(name: str) -> str:
    return name.split(".")[0]


def arrows_into(sources: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{modules()[name].relative_to(REPO)}:{line} imports {target}"
        for name in modules()
        if top(name) in sources
        for target, line in imported(name)
        if top(target) in forbidden
    )


def cycles(part: str) -> list[tuple[str, ...]]:
    """The import loops among the modules of ``part``: each strongly connected group of
    more than one module (Tarjan), its members sorted."""
    graph = {
        name: sorted({t for t, _ in imported(name) if top(t) == part})
        for name in modules()
        if top(name) == part
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[tuple[str, ...]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for after in graph[node]:
            if after not in index:
                visit(after)
                low[node] = min(low[node], low[after])
            elif after in stack:
                low[node] = min(low[node], index[after])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(tuple(sorted(group)))

    for node in graph:
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_ground_imports_no_part_and_no_shell() -> None:
    assert arrows_into((GROUND,), (*PARTS, *SHELL)) == []


def test_no_part_imports_the_shell() -> None:
    assert arrows_into(PARTS, ("app",)) == []


@pytest.mark.parametrize("part", PARTS)
def test_no_two_modules_of_a_part_import_each_other(part: str) -> None:
    assert cycles(part) == []
