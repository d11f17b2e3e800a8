"""Imports flow one way: the layer order written in the README holds for every import of every module under
src/jpegrestore (lazy imports inside functions included, ``if TYPE_CHECKING:`` blocks excepted), and no group of
modules imports itself in a circle."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import REPO

SRC = REPO / "src"
PACKAGE = SRC / "jpegrestore"


def readme_layers(text: str | None = None) -> list[set[str]]:
    """The layers of the README's block after "Dependencies flow one way", lowest first: one line per layer,
    names separated by commas."""
    text = (REPO / "README.md").read_text() if text is None else text
    match = re.search(r"Dependencies flow one way.*?```\n(.*?)```", text, flags=re.S)
    assert match, "the README has no 'Dependencies flow one way' block"
    return [{name.strip() for name in line.split(",")} for line in match.group(1).strip().splitlines()]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """module -> the jpegrestore modules it imports (a name imported from a package counts as its submodule
    when it is one)."""
    modules = _all_modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t.split(".")[0] == "jpegrestore" and t != name)
    return graph


def _part(module: str) -> str:
    """The README's name for the part a module belongs to: ``jpegrestore.nn.qgac.ynet`` -> ``nn``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "jpegrestore"


def layer_violations(graph: dict[str, set[str]], layers: list[set[str]]) -> list[str]:
    """Imports from a part on the same or a higher layer (other than the importer's own part)."""
    floor = {name: i for i, layer in enumerate(layers) for name in layer}
    out = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = _part(module), _part(target)
            if a == b or "jpegrestore" in (a, b):
                continue
            assert a in floor and b in floor, f"{module} -> {target}: {a!r} or {b!r} is missing from the README"
            if floor[b] >= floor[a]:
                out.append(f"{module} -> {target} ({a} is on layer {floor[a]}, {b} on layer {floor[b]})")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other in a circle (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_every_part_is_on_a_readme_layer():
    named = set().union(*readme_layers())
    parts = {_part(m) for m in _all_modules()} - {"jpegrestore"}
    assert parts <= named, f"parts missing from the README's layers: {sorted(parts - named)}"
    assert readme_layers()[0] >= {"jpeg"}


def test_no_import_runs_up_a_layer():
    assert layer_violations(import_graph(), readme_layers()) == []


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_the_checks_catch_what_they_guard():
    graph = import_graph()
    planted = {**graph, "jpegrestore.sampling.priors": graph["jpegrestore.sampling.priors"] | {"jpegrestore.tasks.base"}}
    assert layer_violations(planted, readme_layers())
    circle = {**graph, "jpegrestore.data.sources": graph["jpegrestore.data.sources"] | {"jpegrestore.data.shards"}}
    assert cycles(circle)
    with pytest.raises(AssertionError, match="no 'Dependencies flow one way'"):
        readme_layers("no such block")
