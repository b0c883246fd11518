"""The package's import graph: layers point one way, no module imports itself back, none is too long.

The layers (:data:`LAYERS`): ``core`` <- ``protocol`` <- the methods ``metasd``, ``distile``,
``compression`` (which never import each other) <- ``study``. A module imports only from layers
below its own and from its own subpackage; ``kgdistill/__init__`` (the public entry point) is
above them all.

Every module is parsed (not imported) and every ``import`` statement in it counts, also those
inside functions: a function-level import hides a cycle from Python's import machinery but not
from a reader. An edge goes to the submodule an import names (``from . import sparse`` ->
``kgdistill.compression.sparse``, ``from .distile.config import X`` -> ``kgdistill.distile.config``); a
package's ``__init__`` is an ordinary node (importing a submodule does not add an edge to its
parent package, which Python loads first in any case).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parent.parent / "lib"
PACKAGE = "kgdistill"
MAX_LINES = 420  # "no module over ~400 lines"
README = Path(__file__).resolve().parent.parent / "README.md"

#: the rank of each subpackage; a module may import from a lower rank or from its own subpackage
LAYERS = {"core": 0, "protocol": 1, "metasd": 2, "distile": 2, "compression": 2, "study": 3}


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


def layer_of(module: str) -> str | None:
    """The subpackage (layer) of ``kgdistill.<layer>...``; None for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def layer_violations(graph: dict[str, set[str]], layers: dict[str, int] = LAYERS) -> list[str]:
    """``a -> b`` for every import of ``a`` against the layer order (a higher or sideways layer)."""
    out = []
    for module, targets in sorted(graph.items()):
        own = layer_of(module)
        if own is None:
            continue  # kgdistill/__init__: the public entry point sits above every layer
        if own not in layers:
            out.append(f"{module}: in no layer (add its subpackage to LAYERS)")
            continue
        for target in sorted(targets):
            other = layer_of(target)
            if other == own:
                continue
            if other is None or other not in layers or layers[other] >= layers[own]:
                out.append(f"{module} -> {target}")
    return out


def test_the_graph_sees_relative_absolute_and_function_level_imports():
    graph = import_graph()
    assert "kgdistill.study.profile" in graph["kgdistill.study.facade"]            # from .profile import ...
    assert "kgdistill.core.records" in graph["kgdistill.study.tables"]             # inside model_dim
    assert "kgdistill.study.distile.in_table1" in graph["kgdistill.study.facade"]  # inside Study.results
    assert "kgdistill.study.profile" in graph["kgdistill.study.distile.grid"]      # from ..profile import ...
    assert "kgdistill.compression.sparse" in graph["kgdistill.study.footprint"]    # from ..compression import sparse
    assert "kgdistill.core.metrics" in graph["kgdistill.study.official.selection"]  # from ...core.metrics import ...
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(toy) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_layer_rule_catches_an_upward_and_a_sideways_import():
    toy = {
        "kgdistill.core.a": {"kgdistill.core.b"},                # same layer: fine
        "kgdistill.protocol.c": {"kgdistill.core.a"},            # downward: fine
        "kgdistill.core.b": {"kgdistill.protocol.c"},            # upward
        "kgdistill.metasd.d": {"kgdistill.distile.e"},           # sideways between methods
        "kgdistill.study.f": {"kgdistill.metasd.d", "kgdistill"},  # the package entry point is above all
        "kgdistill": {"kgdistill.study.f"},
    }
    assert layer_violations(toy) == [
        "kgdistill.core.b -> kgdistill.protocol.c", "kgdistill.metasd.d -> kgdistill.distile.e",
        "kgdistill.study.f -> kgdistill",
    ]


def test_imports_follow_the_layer_order():
    bad = layer_violations(import_graph())
    assert not bad, ("imports against the layer order core <- protocol <- metasd | distile | compression <- study "
                     "(move the code to the lower layer, or register it there):\n  " + "\n  ".join(bad))


def test_every_module_is_in_one_layer():
    assert {layer_of(m) for m in module_names()} - {None} <= set(LAYERS)


def test_no_import_cycle_inside_the_package():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles in lib/kgdistill (function-level imports included):\n" + "\n".join(
        f"  {', '.join(c)}: e.g. {path_through(graph, c)}" for c in found
    )


def test_the_facade_is_never_imported_inside_the_package():
    """kgdistill.study.facade is the notebooks' facade (``from kgdistill import study``): library
    modules import what it re-exports from the modules that own it."""
    users = sorted(name for name, targets in import_graph().items()
                   if targets & {"kgdistill.study", "kgdistill.study.facade"} and name != "kgdistill.study")
    assert users == [], f"{users} import the notebook facade kgdistill.study"


@pytest.mark.parametrize("name", sorted(module_names()), ids=str)
def test_no_module_is_over_about_400_lines(name):
    lines = len(module_names()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by job"


def test_tables_and_profile_keep_to_their_jobs():
    """kgdistill.study.tables turns records into DataFrames without torch (it reads dims through
    kgdistill.core.records only when asked); kgdistill.study.profile never imports the runner, the
    training code, the facade or a notebook section's module (sections register themselves)."""
    known = module_names()
    tree = ast.parse(known["kgdistill.study.tables"].read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = ({a.name for n in top_level for a in n.names}
             | {n.module for n in top_level if isinstance(n, ast.ImportFrom)})
    assert not any(name and name.split(".")[0] == "torch" for name in names)
    assert all(not (isinstance(n, ast.Import) and any(a.name.startswith("torch") for a in n.names))
               for n in ast.walk(tree))
    graph = import_graph()
    # core.metrics: METRICS; core.records: in model_dim; profile: types
    assert graph["kgdistill.study.tables"] == {"kgdistill.core.metrics", "kgdistill.core.records",
                                               "kgdistill.study.profile"}
    profile_imports = graph["kgdistill.study.profile"]
    assert not profile_imports & {"kgdistill.protocol.runner", "kgdistill.metasd.training", "kgdistill.protocol.loop",
                                  "kgdistill.study", "kgdistill.study.facade"}
    sections = {m for m in known if m.startswith(("kgdistill.study.official", "kgdistill.study.equal_size",
                                                  "kgdistill.study.distile", "kgdistill.distile"))}
    assert not profile_imports & sections, f"profile imports section modules {sorted(profile_imports & sections)}"


def test_no_isinstance_dispatch_on_config_families_outside_the_registry():
    """The runner and the study ask kgdistill.protocol.registry for a family; no module tests
    ``isinstance(x, RunConfig | DistilEConfig)`` to choose what to do (tests may)."""
    offenders = []
    for name, path in module_names().items():
        if name == "kgdistill.protocol.registry":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                classes = ast.unparse(node.args[1])
                if "RunConfig" in classes or "DistilEConfig" in classes:
                    offenders.append(f"{name}:{node.lineno} isinstance(..., {classes})")
    assert not offenders, "dispatch through kgdistill.protocol.registry instead:\n  " + "\n  ".join(offenders)


def readme_layout() -> set[str]:
    """``<subpackage path>/<module>`` of every module the README's Layout section lists: a line
    ``core/`` (no indent) opens a subpackage, an indented line names its modules (first words,
    comma-separated)."""
    text = README.read_text()
    block = text[text.index("## Layout"):]
    block = block[block.index("```", block.index("Modules of")) + 3:]
    block = block[: block.index("```")]
    listed, package = set(), None
    for line in block.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            package = line.split()[0].rstrip("/")
            listed.add(f"{package}/__init__")
            continue
        names = re.match(r"\s+((?:\w+, )*\w+)", line).group(1)
        listed |= {f"{package}/{n.strip()}" for n in names.split(",")}
    return listed


def test_the_readme_layout_lists_every_module_and_no_other():
    on_disk = {str(p.relative_to(LIB / PACKAGE).with_suffix("")).replace("__init__", "__init__")
               for p in (LIB / PACKAGE).rglob("*.py") if p.parent != LIB / PACKAGE}
    listed = readme_layout()
    assert not on_disk - listed, f"README Layout misses {sorted(on_disk - listed)}"
    assert not listed - on_disk, f"README Layout lists modules that do not exist: {sorted(listed - on_disk)}"
