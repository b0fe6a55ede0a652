"""Imports in `server/` run one way: tools import the registry, the app imports the tools, nothing imports back.

The graph is read from the source with `ast`, counting every import (module level, inside functions and under
`if TYPE_CHECKING:`), because a circle hidden behind a local or type-only import is still a circle.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of `package` under `root`."""
    names: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of `known` that `name` imports, with the packages whose `__init__` each import runs."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the submodule when there is one, else a name from pkg itself.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in known and prefix != name:
                    found.add(prefix)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    modules = module_names(root, package)
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path that ends where it starts, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


SERVER_GRAPH = import_graph(ROOT, "server")


def test_no_server_module_imports_a_module_that_imports_it_back() -> None:
    assert len(SERVER_GRAPH) >= 15, sorted(SERVER_GRAPH)
    assert find_cycle(SERVER_GRAPH) is None, " -> ".join(find_cycle(SERVER_GRAPH) or [])


def test_tools_register_through_the_registry_and_never_import_the_app() -> None:
    tool_modules = [name for name in SERVER_GRAPH if name.startswith("server.tools.") and name != "server.tools.common"]
    assert len(tool_modules) >= 7
    for name in tool_modules:
        assert "server.registry" in SERVER_GRAPH[name], name
    for name, imports in SERVER_GRAPH.items():
        if name not in ("server.app", "server.__main__"):
            assert "server.app" not in imports, f"{name} imports server.app"
    for lower in ("server.names", "server.config", "server.kube", "server.registry", "server.tools.common"):
        assert "server.app" not in SERVER_GRAPH[lower]
        assert not any(m.startswith("server.tools.") and m != "server.tools.common" for m in SERVER_GRAPH[lower]), lower


def test_config_imports_no_tools() -> None:
    assert not any(m.startswith("server.tools") for m in SERVER_GRAPH["server.config"])


def test_the_cycle_finder_sees_a_circle_behind_a_type_only_import(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "tools").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tools" / "__init__.py").write_text("")
    (package / "app.py").write_text("from pkg.tools import one\n")
    (package / "tools" / "one.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..app import Thing\n"
    )
    (package / "leaf.py").write_text("import os\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.tools.one"] == {"pkg", "pkg.app"}
    assert find_cycle(graph) in (["pkg.app", "pkg.tools.one", "pkg.app"], ["pkg.tools.one", "pkg.app", "pkg.tools.one"])
    (package / "tools" / "one.py").write_text("from pkg import leaf\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) is None


@pytest.mark.parametrize("module", sorted(SERVER_GRAPH))
def test_each_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
