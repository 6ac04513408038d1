"""The package's import structure: no cycles among ``nmt``'s modules, no reaching into another module's privates.

Every ``import`` statement of every module under ``nmt/`` counts, wherever it stands: at module level, inside a
function, or under ``if TYPE_CHECKING:``. An import inside a function hides a cycle from Python (it runs late
enough to work) but not from a reader, who still cannot understand either module without the other.
The source is read with ``ast`` (``nmt.import_graph``); nothing is imported.
"""

from __future__ import annotations

from nmt.import_graph import PACKAGE, import_graph

KNOWN_CYCLES: set[frozenset[str]] = set()
"""Cycles that exist today and are being removed elsewhere (each as the set of its modules). Only shrinks."""

KNOWN_PRIVATE_IMPORTS: set[tuple[str, str]] = set()
"""(importing module, private name it uses) that exist today and are being removed elsewhere. Only shrinks."""


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm): each holds a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_check_sees_what_it_is_meant_to_see(tmp_path):
    """A cycle through a function-level import, and a private name used two ways, are found."""
    package = tmp_path / PACKAGE
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("")
    (package / "data" / "a.py").write_text("from nmt.data.b import thing\n")
    (package / "data" / "b.py").write_text("def thing():\n    from nmt.data import a\n    return a._helper()\n")
    (package / "c.py").write_text("from .data.b import _hidden\n")
    (package / "d.py").write_text("import nmt.c\n")
    graph = import_graph(tmp_path)
    found = cycles({name: imports.targets for name, imports in graph.items()})
    assert found == [frozenset({"nmt.data.a", "nmt.data.b"})]
    assert graph["nmt.data.b"].private == {"nmt.data.a._helper"}
    assert graph["nmt.c"].private == {"nmt.data.b._hidden"}
    assert graph["nmt.d"].targets == {"nmt", "nmt.c"}


def test_no_import_cycles_in_the_package():
    graph = import_graph()
    assert "nmt.data.catalog" in graph and "nmt.train" in graph  # the package was found
    found = set(cycles({name: imports.targets for name, imports in graph.items()}))
    assert found - KNOWN_CYCLES == set(), "import cycles (imports inside functions count): " + "; ".join(
        " ↔ ".join(sorted(c)) for c in found - KNOWN_CYCLES)
    assert KNOWN_CYCLES <= found, f"no longer cycles, remove them from KNOWN_CYCLES: {KNOWN_CYCLES - found}"


def test_no_module_uses_another_modules_private_names():
    used = {(name, private) for name, imports in import_graph().items() for private in imports.private}
    unknown = sorted(used - KNOWN_PRIVATE_IMPORTS)
    assert not unknown, f"other modules' private names used: {unknown}"
    assert KNOWN_PRIVATE_IMPORTS <= used, f"gone, remove from KNOWN_PRIVATE_IMPORTS: {KNOWN_PRIVATE_IMPORTS - used}"
