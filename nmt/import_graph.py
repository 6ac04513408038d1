"""The package's import graph, read from the source with ``ast`` (nothing is imported).

Every ``import`` statement of every module under ``nmt/`` counts, wherever it stands: at module level, inside a
function, or under ``if TYPE_CHECKING:``. Used by the import-structure tests (no cycles, no reaching into another
module's private names) and by ``nmt.training_code`` (which files the training runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "nmt"


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


def imported_by(graph: dict[str, Imports], start: str) -> set[str]:
    """``start`` and every package module it imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += sorted(graph[name].targets) if name in graph else []
    return seen
