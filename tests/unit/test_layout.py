"""The package's shape: no module imports a module that imports it back, at any depth.

Every import counts, including the ones inside functions and under TYPE_CHECKING: a lazy import
hides a circle from the interpreter, not from the reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("syncd", "bench")


def module_name(path: Path) -> str:
    """`syncd/lowdb/source.py` → `syncd.lowdb.source`; a package's `__init__.py` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the first-party packages."""
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> Iterator[str]:
    """First-party modules `path` imports (`from pkg import mod` names the module when it is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parents, base] if base else parents)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        yield from (t for t in targets if t in known and t != name)


def import_graph() -> dict[str, set[str]]:
    """Module → the first-party modules it imports."""
    found = modules()
    return {name: set(imported(path, name, set(found))) for name, path in found.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_circles() -> None:
    assert circles(import_graph()) == []


def test_the_checker_sees_a_circle() -> None:
    graph = import_graph()
    graph["syncd.model"] = graph["syncd.model"] | {"syncd.sink.postgres"}
    # Other modules on a path from the sink back to the model join the circle too.
    assert any({"syncd.model", "syncd.sink.postgres"} <= set(circle) for circle in circles(graph))


def test_no_modules_sharing_a_prefix() -> None:
    """Files that share a prefix (`lowdb_reader`, `lowdb_diff`) are a package (DESIGN: Layout)."""
    families: dict[tuple[Path, str], list[str]] = {}
    for path in (ROOT / "syncd").rglob("*_*.py"):
        if not path.name.startswith("__"):
            families.setdefault((path.parent, path.name.split("_")[0]), []).append(path.name)
    assert [sorted(names) for names in families.values() if len(names) > 1] == []
