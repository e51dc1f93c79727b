"""The import graph of the mm_unidpo package: its cycles and its function-local imports.

    python scripts/import_graph.py                # cycles, and the count of function-local package imports
    python scripts/import_graph.py --list         # also every function-local package import, with its line
    python scripts/import_graph.py --ignore mm_unidpo.models   # leave a subpackage out of the cycle check

Every `import` / `from ... import` of the package's own modules is read with `ast`, at module level
(class bodies and module-level `try` / `if` included) and inside functions alike, since a function-local
import still makes a cycle, it only hides it until the function runs. Imports under `if TYPE_CHECKING:`
never run and are left out. `from a.b import c` is an edge to the module `a.b.c` when there is one, else to
`a.b`. Exit status: 1 when there is a cycle (outside the ignored prefixes), else 0.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "mm_unidpo"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    local: bool  # inside a function


def modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Module name -> file, for every .py file of the package (a package is its __init__.py)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import node that can run, with whether it is inside a function."""

    def walk(node: ast.AST, local: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, local
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    yield from walk(ast.Module(body=[other], type_ignores=[]), local)
            else:
                inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                yield from walk(child, inner)

    yield from walk(tree, False)


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool, known: set[str]) -> list[str]:
    """The package modules an import node loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE]
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        module = ".".join([*base, *([node.module] if node.module else [])])
    else:
        module = node.module or ""
    if module.split(".")[0] != PACKAGE:
        return []
    # `from pkg import submodule` loads the submodule; `from module import name` loads the module.
    out = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module for alias in node.names]
    return list(dict.fromkeys(out))


def edges(found: dict[str, Path]) -> list[Edge]:
    known = set(found)
    out = []
    for name, path in found.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, local in _imports(tree):
            for target in _targets(node, name, path.name == "__init__.py", known):
                while target not in known and "." in target:  # `import a.b.C`-style names: the module part
                    target = target.rsplit(".", 1)[0]
                if target != name:
                    out.append(Edge(name, target, node.lineno, local))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as one cycle through
    all of its modules where one exists, else the component, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def connect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(_a_cycle(graph, c) for c in components)


def _a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first), as a path that ends where it starts."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph.get(v, set()) & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return component


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list every function-local package import")
    parser.add_argument("--ignore", action="append", default=[], metavar="PREFIX",
                        help="leave modules under PREFIX out of the cycle check (repeatable)")
    args = parser.parse_args(argv)

    found = modules()
    all_edges = edges(found)
    ignored = tuple(args.ignore)

    def kept(name: str) -> bool:
        return not any(name == prefix or name.startswith(prefix + ".") for prefix in ignored)

    graph: dict[str, set[str]] = {}
    for edge in all_edges:
        if kept(edge.source) and kept(edge.target):
            graph.setdefault(edge.source, set()).add(edge.target)
    found_cycles = cycles(graph)
    local = [e for e in all_edges if e.local]
    print(f"{len(found)} modules, {len(all_edges)} package imports ({len(local)} function-local)"
          + (f"; ignored: {', '.join(ignored)}" if ignored else ""))
    by_module: dict[str, int] = {}
    for edge in local:
        by_module[edge.source] = by_module.get(edge.source, 0) + 1
    for name, count in sorted(by_module.items()):
        print(f"  function-local: {count:3d}  {name}")
    if args.list:
        for edge in sorted(local, key=lambda e: (e.source, e.line)):
            print(f"    {found[edge.source].relative_to(ROOT)}:{edge.line}  -> {edge.target}")
    if not found_cycles:
        print("no import cycles")
        return 0
    print(f"{len(found_cycles)} import cycle(s):")
    for cycle in found_cycles:
        print("  " + " -> ".join(cycle))
    return 1


if __name__ == "__main__":
    sys.exit(main())
