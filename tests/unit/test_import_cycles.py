"""No import circles: the graph of every ``import`` in a package (module level, inside functions and under
``TYPE_CHECKING`` alike, ``from . import x`` resolved) has no cycle. ``import_graph`` and ``cycles`` take any
package prefix, so another tier adds its package as one more case."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import paths


def module_name(path: Path, root: Path) -> str:
    """``tenpeft/formats/cp.py`` -> ``tenpeft.formats.cp``; a package's ``__init__.py`` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The absolute names an import statement in ``module`` names (``from p import n``: ``p`` and ``p.n``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph(package: str, exclude: str | None = None, root: Path = paths.ROOT) -> dict[str, set[str]]:
    """``module -> the modules of package it imports`` for every module under ``package`` (a dotted prefix),
    leaving out those under ``exclude``. ``from pkg import name`` imports ``pkg`` and, where it is a module,
    ``pkg.name``; every import anywhere in a file counts (in functions, under TYPE_CHECKING). The parents
    Python imports before a module (``a`` and ``a.b`` for ``a.b.c``) are not edges: every module would
    then import the package root."""
    files = {module_name(p, root): p for p in (root / package.replace(".", "/")).rglob("*.py")}
    if exclude is not None:
        files = {m: p for m, p in files.items() if m != exclude and not m.startswith(exclude + ".")}
    graph = {}
    for module, path in files.items():
        names = {n for node in ast.walk(ast.parse(path.read_text(), str(path)))
                 for n in _imported(node, module, path.name == "__init__.py")}
        graph[module] = {n for n in names if n in files and n != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def describe(graph: dict[str, set[str]], component: list[str]) -> str:
    """One cycle's modules and the imports among them."""
    inside = set(component)
    return "\n".join(f"  {m} -> {sorted(graph[m] & inside)}" for m in component)


def test_the_graph_builder_resolves_relative_and_function_level_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from .a import f\n")
    (package / "a.py").write_text("def f():\n    from .sub import b\n    return b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\n")
    (package / "sub" / "c.py").write_text("import pkg.sub.b\nfrom ..sub import b\n")
    graph = import_graph("pkg", root=tmp_path)
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.sub", "pkg.sub.b"}, "pkg.sub": set(),
                     "pkg.sub.b": {"pkg", "pkg.a"}, "pkg.sub.c": {"pkg.sub", "pkg.sub.b"}}
    assert cycles(graph) == [["pkg", "pkg.a", "pkg.sub.b"]]
    assert cycles(import_graph("pkg", exclude="pkg.sub", root=tmp_path)) == []


@pytest.mark.parametrize("package, exclude", [("tenpeft", "tenpeft.lab"), ("tenpeft.lab", None)])
def test_no_import_cycles(package, exclude):
    graph = import_graph(package, exclude)
    assert len(graph) > 10
    found = cycles(graph)
    assert not found, f"{len(found)} import cycle(s) in {package}:\n" + "\n".join(describe(graph, c) for c in found)
