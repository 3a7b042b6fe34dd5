"""The three tiers and their one direction of knowledge (DESIGN.md): `grammar/` and `layers/` never
import `builder/` nor each other, and no import circle exists inside `builder/`, counting the
imports inside functions too (a function-local import hides a circle; it does not remove it).

Run alone to see the graph's verdict: `python3 -m pytest -q tests/test_import_graph.py`.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("grammar", "layers", "builder")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for package in PACKAGES
           for path in sorted((ROOT / package).rglob("*.py"))}


def _imports(name: str) -> dict[str, bool]:
    """The modules of this repository that `name` imports, each with whether the import is run
    when the module loads (True) or only when a function runs (False). `from a.b import c` counts
    as importing a.b.c when c is a module, else a.b. Imports under `if TYPE_CHECKING:` run no code
    and are left out; so is the implicit import of parent packages."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, bool] = {}

    def add(module: str, at_load: bool) -> None:
        if module in MODULES and module != name:
            found[module] = found.get(module, False) or at_load

    def visit(node: ast.AST, at_load: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            at_load = False
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, at_load)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                child = f"{base}.{alias.name}"
                add(child if child in MODULES else base, at_load)
        for inner in ast.iter_child_nodes(node):
            visit(inner, at_load)

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


def _graph(*, at_load_only: bool) -> dict[str, set[str]]:
    return {name: {target for target, at_load in _imports(name).items()
                   if at_load or not at_load_only} for name in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of `graph` as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for successor in sorted(graph[node]):
            if state.get(successor) == 1:
                return path[path.index(successor):] + [successor]
            if successor not in state:
                found = visit(successor)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.endswith("__main__")))
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)


@pytest.mark.parametrize("tier, forbidden", [("grammar", ("builder", "layers")),
                                             ("layers", ("builder", "grammar"))])
def test_lower_tiers_do_not_import_upward_or_sideways(tier: str,
                                                      forbidden: tuple[str, ...]) -> None:
    graph = _graph(at_load_only=False)
    wrong = sorted(f"{name} imports {target}" for name, targets in graph.items()
                   if name.split(".")[0] == tier
                   for target in targets if target.split(".")[0] in forbidden)
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("at_load_only", [True, False], ids=["module-level", "with-function-level"])
def test_builder_has_no_import_circle(at_load_only: bool) -> None:
    graph = {name: {target for target in targets if target.startswith("builder")}
             for name, targets in _graph(at_load_only=at_load_only).items()
             if name.startswith("builder")}
    cycle = _cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_reports_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
