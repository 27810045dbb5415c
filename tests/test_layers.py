"""Import direction between blockproc's modules (STYLE.md, "Package layout").

A module may import only from its own layer or the layers below it::

    L7  blockproc (__init__), __main__    entry points: the re-exports and ``python -m``
    L6  cli
    L5  api, job_setup, _demo
    L4  job, master
    L3  planning, incremental, worker, task, block_reading, command, scheduler, limits,
        output/, executors/, progress, testing
    L2  storage, formats/, output_formats/, datasets
    L1  model, report, result   (report reads model; result: JobResult, shown by report),
        values, counters          (what workers send back to the master)
    L0  errors, _types, _units, _deps, _registry, _frozen

A module in a subpackage takes the subpackage's layer, and modules of one subpackage
may import each other. Every import counts, wherever it is: module level, inside a
function, under ``if TYPE_CHECKING:``. Only the modules of ``blockproc/storage/`` may
import fsspec.

The modules are read with :mod:`ast`, not imported, so a violation is reported even
when it would also be an import cycle.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "blockproc"


def _package_dir() -> Path:
    # find_spec locates the package without running it, so an import cycle cannot
    # stop this test from naming the import that causes it.
    spec = importlib.util.find_spec(PACKAGE)
    assert spec is not None and spec.origin is not None, f"{PACKAGE} is not installed"
    return Path(spec.origin).resolve().parent


PACKAGE_DIR = _package_dir()

LAYERS: dict[str, int] = {
    # L7: the package itself and ``python -m blockproc`` sit on top of everything.
    PACKAGE: 7,
    f"{PACKAGE}.__main__": 7,
    f"{PACKAGE}.cli": 6,
    f"{PACKAGE}.api": 5,
    f"{PACKAGE}.job_setup": 5,
    f"{PACKAGE}._demo": 5,
    f"{PACKAGE}.job": 4,
    f"{PACKAGE}.master": 4,
    f"{PACKAGE}.planning": 3,
    f"{PACKAGE}.incremental": 3,
    f"{PACKAGE}.worker": 3,
    f"{PACKAGE}.task": 3,
    f"{PACKAGE}.block_reading": 3,
    f"{PACKAGE}.scheduler": 3,
    f"{PACKAGE}.limits": 3,
    f"{PACKAGE}.command": 3,
    f"{PACKAGE}.output": 3,
    f"{PACKAGE}.executors": 3,
    f"{PACKAGE}.progress": 3,
    f"{PACKAGE}.testing": 3,
    f"{PACKAGE}.storage": 2,
    f"{PACKAGE}.formats": 2,
    f"{PACKAGE}.output_formats": 2,
    f"{PACKAGE}.datasets": 2,
    f"{PACKAGE}.model": 1,
    f"{PACKAGE}.report": 1,
    f"{PACKAGE}.result": 1,
    f"{PACKAGE}.values": 1,
    f"{PACKAGE}.counters": 1,
    f"{PACKAGE}.errors": 0,
    f"{PACKAGE}._types": 0,
    f"{PACKAGE}._units": 0,
    f"{PACKAGE}._deps": 0,
    f"{PACKAGE}._registry": 0,
    f"{PACKAGE}._frozen": 0,
}
"""Layer of each top-level module or subpackage of blockproc."""

FSSPEC_IMPORTERS = {f"{PACKAGE}.storage", *(f"{PACKAGE}.storage.{name}" for name in (
    "listing", "local", "reading", "retry", "urls", "writing"))}
"""The only modules allowed to import fsspec: the storage package's (STYLE.md: "Only
storage talks to fsspec")."""


@dataclass(frozen=True)
class Import:
    """One import statement found in a module."""

    module: str  # the importing module, e.g. "blockproc.executors.threads"
    target: str  # the imported module, e.g. "blockproc.worker"
    lineno: int

    def __str__(self) -> str:
        path = module_path(self.module).relative_to(PACKAGE_DIR.parent)
        return f"{path}:{self.lineno}: {self.module} imports {self.target}"


def module_name(path: Path) -> str:
    """Return the dotted name of a source file under the package directory."""
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(name: str) -> Path:
    """Return the source file of a dotted module name inside the package."""
    base = PACKAGE_DIR.parent.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


MODULES: dict[str, Path] = {
    module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py")) if "__pycache__" not in p.parts
}


def is_package(name: str) -> bool:
    """Return True if ``name`` is a package (a directory with ``__init__.py``)."""
    return MODULES.get(name, Path()).name == "__init__.py"


def unit_of(name: str) -> str:
    """Return the layered unit a module belongs to: its top-level module or subpackage."""
    parts = name.split(".")
    return ".".join(parts[:2])


def resolve_relative(module: str, level: int, target: str | None) -> str:
    """Turn ``from ..x import y`` inside ``module`` into an absolute module name."""
    base = module.split(".")
    if not is_package(module):
        base = base[:-1]  # a plain module's "." is its package
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imports_of(module: str) -> list[Import]:
    """Return every module ``module`` imports, at any depth of its syntax tree."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"), filename=str(MODULES[module]))
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(Import(module, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (resolve_relative(module, node.level, node.module) if node.level
                    else node.module or "")
            for alias in node.names:
                # ``from blockproc import api`` imports the module blockproc.api;
                # ``from blockproc.model import Plan`` imports blockproc.model.
                sub = f"{base}.{alias.name}"
                target = sub if sub in MODULES else base
                found.append(Import(module, target, node.lineno))
        elif isinstance(node, ast.Call) and _dynamic_import_target(node):
            found.append(Import(module, _dynamic_import_target(node) or "", node.lineno))
    return found


def _dynamic_import_target(node: ast.Call) -> str | None:
    """Return the module of ``importlib.import_module("x")`` or ``__import__("x")`` calls."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


ALL_IMPORTS = [imp for module in MODULES for imp in imports_of(module)]


def test_every_module_has_a_layer() -> None:
    unknown = sorted(m for m in MODULES if unit_of(m) not in LAYERS)
    if unknown:
        pytest.fail(f"modules without a layer: {unknown}; add them to LAYERS in "
                    f"tests/test_layers.py, in the layer the design gives them", pytrace=False)


def test_the_scan_sees_the_package() -> None:
    # Guard against a test that passes because it read nothing.
    assert {f"{PACKAGE}.api", f"{PACKAGE}.storage", f"{PACKAGE}.formats.lines"} <= set(MODULES)
    assert any(imp.target == "fsspec" for imp in ALL_IMPORTS)
    assert any(imp.target == f"{PACKAGE}.api" and imp.module == f"{PACKAGE}.cli"
               for imp in ALL_IMPORTS)


def _upward_imports() -> list[Import]:
    bad = []
    for imp in ALL_IMPORTS:
        if imp.target != PACKAGE and not imp.target.startswith(f"{PACKAGE}."):
            continue  # third-party or standard library
        source, target = unit_of(imp.module), unit_of(imp.target)
        if source == target or source not in LAYERS or target not in LAYERS:
            continue  # same module or subpackage; unknown ones fail the test above
        if LAYERS[target] > LAYERS[source]:
            bad.append(imp)
    return bad


def test_imports_point_down_the_layers() -> None:
    bad = _upward_imports()
    report = "\n".join(
        f"  {imp}  (L{LAYERS[unit_of(imp.module)]} -> L{LAYERS[unit_of(imp.target)]})"
        for imp in bad
    )
    if bad:
        pytest.fail(f"{len(bad)} import(s) go up the layers; a module may import only from "
                    f"its own layer or below (see tests/test_layers.py):\n{report}",
                    pytrace=False)


@pytest.mark.parametrize("third_party", ["fsspec"])
def test_only_storage_imports_fsspec(third_party: str) -> None:
    bad = [
        imp for imp in ALL_IMPORTS
        if (imp.target == third_party or imp.target.startswith(f"{third_party}."))
        and imp.module not in FSSPEC_IMPORTERS
    ]
    report = "\n".join(f"  {imp}" for imp in bad)
    if bad:
        pytest.fail(f"only {', '.join(sorted(FSSPEC_IMPORTERS))} may import {third_party}; "
                    f"go through blockproc.storage instead:\n{report}", pytrace=False)


def test_relative_imports_resolve() -> None:
    # A self-check of the resolver, so relative imports cannot slip past the layer rule.
    assert resolve_relative(f"{PACKAGE}.executors.threads", 1, "base") == \
        f"{PACKAGE}.executors.base"
    assert resolve_relative(f"{PACKAGE}.executors.threads", 2, "worker") == f"{PACKAGE}.worker"
    assert resolve_relative(f"{PACKAGE}.executors", 1, "base") == f"{PACKAGE}.executors.base"
    assert resolve_relative(f"{PACKAGE}.api", 1, None) == PACKAGE
