"""The house is one-way: flora_nb's modules import down the layers, never in a circle.

Read from the source with ``ast``, counting imports inside functions (``if TYPE_CHECKING:``
blocks aside: they are for the type checker only). The layers, top down, are in the README's
"How the code is laid out"; a module may import its own layer's modules (without a cycle) and any
layer below. ``sim/`` stands apart: it imports nothing of flora_nb but the base layer (the one status vocabulary),
and only the entry layer and the facade (which start a simulator) import it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flora_nb"

LAYERS: list[tuple[str, set[str]]] = [
    ("entry", {"__init__", "__main__", "_magic", "_demo"}),
    ("facade", {"_session"}),
    ("form", {"_form"}),
    ("starts", {"_starts", "_sweep_store"}),
    ("handles", {"_sweep", "_sweep_plan", "_uploads"}),
    ("engine", {"_engine", "_poller", "_transitions", "_catalog", "_window"}),
    ("run", {"_run"}),
    ("views", {"_display", "_frames", "_plots", "_tables"}),
    ("store", {"_ledger", "_ledger_copy", "_lease", "_sql", "_budget", "_owner", "_plan", "_validation", "_files",
               "_paths"}),
    ("wire", {"_client", "_throttle", "_transport", "_clock", "_models"}),
    ("base", {"_ranges", "_look", "_matching", "_magic_parse", "_states", "_errors", "_hints", "_version"}),
]
ENTRY = LAYERS[0][1]
BASE = LAYERS[-1][1]
FACADE = "_session"
SIM_USERS = ENTRY | {FACADE}
# Third-party objects with no public way to do what is needed (documented where it is done).
ALLOWED_REACH_INS = {
    ("_client", "_content"),  # requests.Response: the body read under a size cap and a deadline, then scrubbed
    ("_client", "_content_consumed"),
}


def _layer_of() -> dict[str, int]:
    return {module: n for n, (_, modules) in enumerate(LAYERS) for module in modules}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(n) for n in ast.walk(node))
    return hidden


def _targets(node: ast.AST, modules: set[str]) -> list[str]:
    """The flora_nb modules (or 'sim') an import statement names."""
    found: list[str] = []
    if isinstance(node, ast.ImportFrom):
        absolute = node.level == 0 and (node.module or "").startswith("flora_nb")
        if node.level == 1 or absolute:
            parts = (node.module or "").split(".")
            parts = parts[1:] if absolute else parts
            if parts and parts[0]:
                found.append(parts[0])
            else:
                found.extend(a.name for a in node.names)
    elif isinstance(node, ast.Import):
        found.extend(a.name.split(".")[1] for a in node.names if a.name.startswith("flora_nb."))
    return [t for t in found if t in modules or t == "sim"]


def _imports(type_checking: bool = False) -> dict[str, dict[str, int]]:
    """module -> {imported module: first line}, runtime imports only unless ``type_checking``."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph: dict[str, dict[str, int]] = {}
    for module in sorted(modules):
        tree = ast.parse((PACKAGE / f"{module}.py").read_text())
        hidden = set() if type_checking else _type_checking_nodes(tree)
        edges: dict[str, int] = {}
        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            for target in _targets(node, modules):
                if target != module:
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def _cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    placed = set(_layer_of())
    assert modules - placed == set(), f"modules without a layer (add them to LAYERS and the README): {modules - placed}"
    assert placed - modules == set(), f"LAYERS names modules that do not exist: {placed - modules}"


def test_no_import_cycle():
    graph = {m: {t: line for t, line in e.items() if t != "sim"} for m, e in _imports().items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_point_down_the_layers():
    layer = _layer_of()
    wrong = [f"flora_nb/{m}.py:{line} imports {t} ({LAYERS[layer[t]][0]}) from below ({LAYERS[layer[m]][0]})"
             for m, edges in _imports().items() for t, line in edges.items()
             if t != "sim" and layer[t] < layer[m]]
    assert wrong == [], "\n".join(wrong)


def test_only_the_entry_layer_uses_the_facade():
    users = [f"flora_nb/{m}.py:{line}" for m, edges in _imports(type_checking=True).items()
             for t, line in edges.items() if t == FACADE and m not in ENTRY]
    assert users == [], "the facade _session is imported outside the entry layer: " + ", ".join(users)


def test_sim_stands_apart():
    users = [f"flora_nb/{m}.py:{line}" for m, edges in _imports().items() for t, line in edges.items()
             if t == "sim" and m not in SIM_USERS]
    assert users == [], "flora_nb.sim is imported below the facade: " + ", ".join(users)
    for path in (PACKAGE / "sim").glob("*.py"):
        tree = ast.parse(path.read_text())
        outside = [f"{n.lineno}: {ast.unparse(n)}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                   and n.level >= 2 and (n.module or "").split(".")[0] not in BASE]
        assert outside == [], f"sim/{path.name} imports flora_nb above the base layer: {outside}"


def test_no_module_reads_another_objects_private_attributes():
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if (path.stem, node.attr) not in ALLOWED_REACH_INS:
                found.append(f"flora_nb/{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert found == [], "reach-ins into private attributes:\n" + "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("from ._a import x", ["_a"]), ("from . import _a, _b", ["_a", "_b"]), ("import flora_nb._a", ["_a"]),
    ("from flora_nb._a import x", ["_a"]), ("from .sim import S", ["sim"]), ("import os", []),
])
def test_the_import_reader_sees_every_spelling(source, expected):
    node = ast.parse(source).body[0]
    assert _targets(node, {"_a", "_b"}) == expected


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": 1}, "b": {}}) is None
