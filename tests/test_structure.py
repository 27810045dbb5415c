"""The shape of the package beyond its layers: no import cycles, no reaching into another
unit's private names, and modules and functions of a readable size.

Uses the import scan of :mod:`tests.test_layers` (every import counts, wherever it is).
A *unit* is a top-level module or a subpackage: ``blockproc.api``, ``blockproc.formats``.

- **No cycles**: the graph of imports between blockproc's modules has no cycle, so every
  module can be read, imported and tested after the ones it uses.
- **No private imports**: a name starting with ``_`` (``api._check_output``) and a private
  module inside a subpackage (``formats._deps``) are used only inside their own unit.
  Top-level private modules (``blockproc._types``) are the package's internals, for every
  unit of blockproc.
- **Sizes**: no module over :data:`MAX_MODULE_LINES` lines, no function over
  :data:`MAX_FUNCTION_LINES` (a hot loop may be listed in :data:`LONG_FUNCTIONS`, with
  the reason).
"""

from __future__ import annotations

import ast

import pytest

from tests.test_layers import ALL_IMPORTS, MODULES, PACKAGE, Import, unit_of

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
LONG_FUNCTIONS: dict[str, str] = {}
"""``module:function`` allowed past the limit, with the reason."""


def internal(imp: Import) -> bool:
    return imp.target in MODULES and imp.target != imp.module


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components of more than one node (Tarjan).

    >>> find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    [['a', 'b', 'c']]
    >>> find_cycles({"a": {"b"}, "b": set()})
    []
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

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
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in ALL_IMPORTS:
        if internal(imp):
            graph[imp.module].add(imp.target)
    return graph


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    if cycles:
        lines = []
        for component in cycles:
            members = set(component)
            edges = sorted(str(i) for i in ALL_IMPORTS
                           if i.module in members and i.target in members and internal(i))
            lines.append("  " + " <-> ".join(component) + "\n    " + "\n    ".join(edges))
        pytest.fail("import cycles (break them by moving the shared part down a layer):\n"
                    + "\n".join(lines), pytrace=False)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports() -> list[str]:
    """Imports of another unit's private names or private modules, and attribute access
    to a private name of another unit's module (``api._check_output``)."""
    bad = []
    for path_name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules_bound: dict[str, str] = {}  # local name -> blockproc module it is bound to
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module != PACKAGE and not node.module.startswith(f"{PACKAGE}."):
                continue
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                target = full if full in MODULES else node.module
                if target == full:
                    modules_bound[alias.asname or alias.name] = full
                if unit_of(target) == unit_of(path_name):
                    continue
                below_unit = target.split(".")[2:]  # blockproc.formats._deps -> ["_deps"]
                if (target == node.module and _is_private(alias.name)) or \
                        any(map(_is_private, below_unit)):
                    bad.append(f"{path_name}:{node.lineno} imports {full}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id in modules_bound and _is_private(node.attr):
                module = modules_bound[node.value.id]
                if unit_of(module) != unit_of(path_name):
                    bad.append(f"{path_name}:{node.lineno} uses {module}.{node.attr}")
    return bad


def test_no_unit_imports_another_units_private_names() -> None:
    bad = private_imports()
    if bad:
        pytest.fail("private names used outside their unit (make them public, or move "
                    "them where both may use them):\n  " + "\n  ".join(bad), pytrace=False)


def test_modules_are_of_a_readable_size() -> None:
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_are_of_a_readable_size() -> None:
    long = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                doc = ast.get_docstring(node)
                body = lines - (len(doc.splitlines()) + 2 if doc else 0)
                key = f"{name}:{node.name}"
                if body > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS:
                    long[key] = body
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (docstring excluded): {long}"
