"""The shape docs/architecture.md describes: no import cycle, and the core imports no shell."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "logstream"
PURE = {
    "lines",
    "ring",
    "sse",
    "logformat",
    "mask",
    "config",
    "jobsfile",
    "jobspec",
    "job",
    "routes",
    "errors",
    "backends.protocol",
    "metrics",
    "asgi",
    "fdio",
    "cors",
    "ingest",
    "upload",
    "cimeta",
    "redisformat",
    "reconnect",
    "eventstream",
    "problems",
    "matchers",
    "workflow",
    "problemlog",
    "hosts",
}


def module_imports() -> dict[str, set[str]]:
    """Each module of the package (``backends.datadir``) and the package modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        if name.endswith("__init__") or name == "__main__":
            continue
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "logstream":
                    imported |= {alias.name for alias in node.names}
                elif node.module.startswith("logstream."):
                    imported.add(node.module.removeprefix("logstream."))
            elif isinstance(node, ast.Import):
                imported |= {
                    alias.name.removeprefix("logstream.")
                    for alias in node.names
                    if alias.name.startswith("logstream.")
                }
        graph[name] = imported - {"backends"}
    return graph


def test_the_package_has_no_import_cycle() -> None:
    graph = module_imports()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for imported in sorted(graph.get(name, ())):
            visit(imported, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_pure_modules_import_only_pure_modules() -> None:
    graph = module_imports()
    assert set(graph) >= PURE
    impure = {name: sorted(graph[name] - PURE) for name in PURE if graph[name] - PURE}
    assert impure == {}
