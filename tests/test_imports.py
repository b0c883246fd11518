"""The package's import graph: no module of lib/kgdistill imports itself back, and none is too long.

Every module is parsed (not imported) and every ``import`` statement in it counts, also those
inside functions: a function-level import hides a cycle from Python's import machinery but not
from a reader. An edge goes to the submodule an import names (``from . import sparse`` ->
``kgdistill.sparse``, ``from .distile.config import X`` -> ``kgdistill.distile.config``); a
package's ``__init__`` is an ordinary node (importing a submodule does not add an edge to its
parent package, which Python loads first in any case).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parent.parent / "lib"
PACKAGE = "kgdistill"
MAX_LINES = 420  # "no module over ~400 lines"


def module_names() -> dict[str, Path]:
    out = {}
    for path in sorted((LIB / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(LIB).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` inside ``module``."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of the package that ``module`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(name: str) -> None:
        # the longest known prefix: kgdistill.distile.config.DistilEConfig -> kgdistill.distile.config
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in known:
                if candidate != module:
                    found.add(candidate)
                return

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            if not (base == PACKAGE or base.startswith(PACKAGE + ".")):
                continue
            for alias in node.names:  # `from . import sparse` names a submodule
                full = f"{base}.{alias.name}"
                add(full if full in known else base)
    return found


def import_graph() -> dict[str, set[str]]:
    known = module_names()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def path_through(graph: dict[str, set[str]], component: list[str]) -> str:
    """One cycle inside a component, as ``a -> b -> a`` (for the failure message)."""
    members = set(component)
    start = component[0]
    trail, seen, node = [start], {start}, start
    while True:
        node = sorted(graph[node] & members)[0] if not (graph[node] & members & {start}) else start
        trail.append(node)
        if node == start or node in seen:
            return " -> ".join(trail)
        seen.add(node)


def test_the_graph_sees_relative_absolute_and_function_level_imports():
    graph = import_graph()
    assert "kgdistill.profile" in graph["kgdistill.study"]          # from .profile import ...
    assert "kgdistill.runner" in graph["kgdistill.tables"]          # inside model_dim
    assert "kgdistill.distile.in_table1" in graph["kgdistill.study"]  # inside Study.results
    assert "kgdistill.profile" in graph["kgdistill.distile.grid"]   # from ..profile import ...
    assert "kgdistill.sparse" in graph["kgdistill.footprint"]       # from . import sparse
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(toy) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_the_package():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles in lib/kgdistill (function-level imports included):\n" + "\n".join(
        f"  {', '.join(c)}: e.g. {path_through(graph, c)}" for c in found
    )


def test_the_facade_is_never_imported_inside_the_package():
    """kgdistill.study is the notebooks' facade: library modules import what it re-exports from
    the modules that own it."""
    users = sorted(name for name, targets in import_graph().items() if "kgdistill.study" in targets)
    assert users == [], f"{users} import the notebook facade kgdistill.study"


@pytest.mark.parametrize("name", sorted(module_names()), ids=str)
def test_no_module_is_over_about_400_lines(name):
    lines = len(module_names()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by job"


def test_tables_and_profile_keep_to_their_jobs():
    """kgdistill.tables turns records into DataFrames without torch (it reads dims through the
    runner only when asked); kgdistill.profile never imports the runner or the training code."""
    known = module_names()
    tree = ast.parse(known["kgdistill.tables"].read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top_level for a in n.names} | {n.module for n in top_level if isinstance(n, ast.ImportFrom)}
    assert not any(name and name.split(".")[0] == "torch" for name in names)
    assert all(not (isinstance(n, ast.Import) and any(a.name.startswith("torch") for a in n.names)) for n in ast.walk(tree))
    graph = import_graph()
    assert graph["kgdistill.tables"] == {"kgdistill.runner", "kgdistill.profile"}  # runner: in model_dim; profile: types
    assert not graph["kgdistill.profile"] & {"kgdistill.runner", "kgdistill.training", "kgdistill.loop", "kgdistill.study"}
