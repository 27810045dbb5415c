"""The public API is ``blockproc.__all__``: sorted, documented, and reported as ``blockproc``.

STYLE.md: "Don't add a public name without a docstring and a line in ``__all__``."
"""

from __future__ import annotations

import ast
import inspect
import itertools
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import blockproc
import blockproc.api

PACKAGE_DIR = Path(blockproc.__file__).resolve().parent


def isort_key(name: str) -> tuple[int, str]:
    """The order ``__all__`` is kept in (ruff RUF022's "isort-style" sort).

    SCREAMING_SNAKE_CASE constants first, then CamelCase classes, then everything else;
    case-sensitive within each group.
    """
    if name.isupper() and len(name) > 1:
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def test_isort_key_orders_constants_then_classes_then_the_rest() -> None:
    names = ["plan", "Plan", "DEFAULT_BLOCK_SIZE", "BlockprocError", "BlockResult", "Batch"]
    assert sorted(names, key=isort_key) == [
        "DEFAULT_BLOCK_SIZE", "Batch", "BlockResult", "BlockprocError", "Plan", "plan",
    ]


def test_all_is_sorted() -> None:
    expected = sorted(blockproc.__all__, key=isort_key)
    assert blockproc.__all__ == expected, (
        "keep blockproc.__all__ sorted: constants, then classes, then functions and modules, "
        f"case-sensitive within each group; expected order:\n{expected}"
    )


def test_all_has_no_duplicates() -> None:
    dupes = sorted({n for n in blockproc.__all__ if blockproc.__all__.count(n) > 1})
    assert not dupes, f"names listed twice in blockproc.__all__: {dupes}"


@pytest.mark.parametrize("name", blockproc.__all__)
def test_public_name_exists(name: str) -> None:
    assert hasattr(blockproc, name), f"blockproc.__all__ lists {name!r}, which does not exist"


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, Any] = {}
    exec("from blockproc import *", namespace)
    assert sorted(set(namespace) - {"__builtins__"}) == sorted(blockproc.__all__)


# --- docstrings -------------------------------------------------------------------------

def _package_modules() -> list[types.ModuleType]:
    return [m for n, m in sorted(sys.modules.items())
            if (n == "blockproc" or n.startswith("blockproc.")) and m is not None]


def _top_level_definitions(module: types.ModuleType) -> set[str]:
    """Names a module defines itself: ``def``, ``class`` and assignments at top level."""
    source = getattr(module, "__file__", None)
    if not source or not source.endswith(".py"):
        return set()
    tree = ast.parse(Path(source).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def defining_module(name: str, obj: object) -> types.ModuleType | None:
    """Return the blockproc submodule that defines ``obj`` under ``name``, if any.

    ``__module__`` cannot tell: ``blockproc/__init__.py`` rewrites it on its exports.
    """
    # Submodules first: blockproc/__init__.py re-exports what they define.
    for module in sorted(_package_modules(), key=lambda m: m is blockproc):
        if vars(module).get(name) is obj and name in _top_level_definitions(module):
            return module
    return None


def attribute_docstring(module: types.ModuleType, name: str) -> str | None:
    """Return the string literal right after ``name = ...`` in ``module``'s source."""
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    body = tree.body
    for node, after in itertools.pairwise(body):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            if (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                return after.value.value
            return None
    return None


def own_docstring(name: str, obj: object) -> str | None:
    """Return the docstring written for ``obj`` itself (not one inherited or generated)."""
    if isinstance(obj, types.ModuleType):
        return obj.__doc__
    if isinstance(obj, type):
        doc = obj.__dict__.get("__doc__")
        # dataclasses invent "Name(field: type, ...)" when the class has no docstring
        if doc and doc.startswith(f"{obj.__name__}("):
            return None
        return doc if isinstance(doc, str) else None
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return obj.__doc__
    module = defining_module(name, obj)
    return attribute_docstring(module, name) if module is not None else None


@pytest.mark.parametrize("name", blockproc.__all__)
def test_public_name_has_a_docstring(name: str) -> None:
    doc = own_docstring(name, getattr(blockproc, name))
    assert doc and doc.strip(), (
        f"blockproc.{name} has no docstring; document it (a constant gets a string literal "
        f"on the line after its assignment)"
    )


# --- __module__ ---------------------------------------------------------------------------

PUBLIC_DEFINITIONS = [
    name for name in blockproc.__all__
    if (inspect.isclass(getattr(blockproc, name)) or inspect.isfunction(getattr(blockproc, name)))
]


def test_public_definitions_are_found() -> None:
    # Guard against the parametrised test below running on nothing.
    assert {"plan", "map_lines", "Plan", "Job", "ConfigError"} <= set(PUBLIC_DEFINITIONS)


@pytest.mark.parametrize("name", PUBLIC_DEFINITIONS)
def test_public_definition_reports_module_blockproc(name: str) -> None:
    obj = getattr(blockproc, name)
    if defining_module(name, obj) is None:
        pytest.skip(f"{name} is not defined in the blockproc package")
    assert obj.__module__ == "blockproc", (
        f"blockproc.{name}.__module__ is {obj.__module__!r}; blockproc/__init__.py must set "
        f"it to 'blockproc' so reprs, pickles and docs show the public path"
    )


def test_defining_module_finds_the_private_home() -> None:
    assert defining_module("plan", blockproc.plan) is blockproc.api
    assert defining_module("Plan", blockproc.Plan) is sys.modules["blockproc.model"]


# --- blockproc.api ------------------------------------------------------------------------

API_FUNCTIONS = sorted(
    name for name, obj in vars(blockproc.api).items()
    if inspect.isfunction(obj) and not name.startswith("_")
    and name in _top_level_definitions(blockproc.api)
)

_EXAMPLES = re.compile(r"^\s*Examples\s*\n\s*-{3,}\s*$", re.MULTILINE)


def test_api_functions_are_found() -> None:
    assert {"plan", "submit", "map_lines", "map_blocks", "map_command"} <= set(API_FUNCTIONS)


@pytest.mark.parametrize("name", API_FUNCTIONS)
def test_api_function_has_examples(name: str) -> None:
    doc = inspect.getdoc(getattr(blockproc.api, name)) or ""
    assert doc.strip(), f"blockproc.api.{name} has no docstring"
    assert _EXAMPLES.search(doc), (
        f"the docstring of blockproc.api.{name} has no numpydoc 'Examples' section "
        f"('Examples' underlined with '--------')"
    )
