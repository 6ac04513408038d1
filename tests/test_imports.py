"""The package's import structure: no cycles among ``nmt``'s modules, no reaching into another module's privates.

Every ``import`` statement of every module under ``nmt/`` counts, wherever it stands: at module level, inside a
function, or under ``if TYPE_CHECKING:``. An import inside a function hides a cycle from Python (it runs late
enough to work) but not from a reader, who still cannot understand either module without the other.
The source is read with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "nmt"

KNOWN_CYCLES: set[frozenset[str]] = set()
"""Cycles that exist today and are being removed elsewhere (each as the set of its modules). Only shrinks."""

KNOWN_PRIVATE_IMPORTS: set[tuple[str, str]] = set()
"""(importing module, private name it uses) that exist today and are being removed elsewhere. Only shrinks."""


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name an ``ImportFrom`` names (resolving ``from . import x`` and the like)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


class Imports:
    """What one module imports from the package: the modules, and the private names it uses from them."""

    def __init__(self, module: str, path: Path, known: dict[str, Path]):
        self.module, self.known = module, known
        self.targets: set[str] = set()  # package modules it imports, wherever the import statement stands
        self.private: set[str] = set()  # "module._name" of another module's private names it uses
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        bound: dict[str, str] = {}  # local name → package module it stands for (import nmt.x as y, from nmt import x)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self._target(alias.name)
                    if alias.name in known:
                        bound[alias.asname or alias.name] = alias.name if alias.asname else alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(module, is_package, node)
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in known:  # from nmt.data import synthetic
                        self._target(submodule)
                        bound[alias.asname or alias.name] = submodule
                    else:
                        self._target(source)
                        if alias.name.startswith("_") and not alias.name.startswith("__") and source in known:
                            self._private(source, alias.name)
        for node in ast.walk(tree):  # evaluate._read_yaml, nmt.train._quiet_lightning
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = _dotted(node.value)
                if owner is None:
                    continue
                head, _, rest = owner.partition(".")
                if head in bound:
                    target = ".".join(filter(None, [bound[head], rest]))
                    if target in known:
                        self._private(target, node.attr)

    def _target(self, name: str) -> None:
        """``name`` and the packages above it (importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``)."""
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in self.known and prefix != self.module:
                self.targets.add(prefix)

    def _private(self, module: str, name: str) -> None:
        if module != self.module:
            self.private.add(f"{module}.{name}")


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of names and attributes, None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def import_graph(root: Path = ROOT) -> dict[str, Imports]:
    known = modules(root)
    return {name: Imports(name, path, known) for name, path in known.items()}


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
