"""Every docstring example of blockproc's public objects runs (issue 7, part 5).

``pytest --doctest-modules`` collects examples module by module, and a method counts as
part of a module only if it was defined there. ``blockproc/__init__.py`` reports every
export as defined in ``blockproc`` (it sets ``__module__``), so the methods of ``Plan``,
``Job`` and ``JobResult`` are collected nowhere: their examples would never run. This file
runs them explicitly, with :class:`doctest.DocTestFinder` over every class and function
in ``blockproc.__all__`` (methods and properties included), and checks that every public
function and every public method of ``Job``, ``JobResult`` and ``Plan`` has an Examples
section, and that every property of those classes appears in one.

Examples use ``memory://`` only. Each runs in a clean ``memory://`` filesystem, and the
one before it is put back afterwards, so the same examples can also run under
``--doctest-modules`` in this process.
"""

from __future__ import annotations

import doctest
import inspect
import re
import types
from collections.abc import Callable, Iterator

import fsspec
import pytest

import blockproc
from tests.test_public_api import defining_module


def _find_doctests() -> tuple[list[doctest.DocTest], dict[str, types.ModuleType]]:
    """Return the doctests of the public classes and functions, and the module each test
    runs in: the one that defines the object (as under --doctest-modules)."""
    finder = doctest.DocTestFinder(recurse=True, exclude_empty=True)
    found: dict[str, doctest.DocTest] = {}
    home: dict[str, types.ModuleType] = {}
    for name in blockproc.__all__:
        obj = getattr(blockproc, name)
        if isinstance(obj, types.ModuleType):
            continue  # a real module: --doctest-modules collects it
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # a constant: its docstring is not attached to the value
        module = defining_module(name, obj)
        assert module is not None, f"cannot find the module that defines blockproc.{name}"
        # module=False: take every member, whatever its __module__ says
        for test in finder.find(obj, f"blockproc.{name}", module=False, globs={}):
            if test.examples:
                found[test.name] = test
                home[test.name] = module
    return [found[name] for name in sorted(found)], home


DOCTESTS, HOME = _find_doctests()
EXAMPLES_OF = {test.name: test for test in DOCTESTS}

CLASSES_WITH_EXAMPLES = ("Job", "JobResult", "Plan")
"""Classes whose public methods all need an example of their own (issue 7)."""


def _public_methods(cls: type) -> Iterator[tuple[str, Callable[..., object]]]:
    for name, attr in vars(cls).items():
        if name.startswith("_"):
            continue
        fn = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
        if inspect.isfunction(fn):
            yield name, fn


REQUIRED = sorted(
    [(f"blockproc.{name}", getattr(blockproc, name)) for name in blockproc.__all__
     if inspect.isfunction(getattr(blockproc, name))]
    + [(f"blockproc.{cls}.{name}", fn) for cls in CLASSES_WITH_EXAMPLES
       for name, fn in _public_methods(getattr(blockproc, cls))],
    key=lambda item: item[0],
)
PROPERTIES = sorted(
    (cls, name) for cls in CLASSES_WITH_EXAMPLES
    for name, attr in vars(getattr(blockproc, cls)).items()
    if isinstance(attr, property) and not name.startswith("_")
)
_EXAMPLES = re.compile(r"^\s*Examples\s*\n\s*-{3,}\s*$", re.MULTILINE)
_URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://")


@pytest.fixture
def clean_memory() -> Iterator[None]:
    """An empty ``memory://`` filesystem for the example; the old contents come back after."""
    fs = fsspec.filesystem("memory")
    store, pseudo_dirs = dict(fs.store), list(fs.pseudo_dirs)
    fs.store.clear()
    fs.pseudo_dirs[:] = [""]
    try:
        yield
    finally:
        fs.store.clear()
        fs.store.update(store)
        fs.pseudo_dirs[:] = pseudo_dirs


def test_the_examples_are_found() -> None:
    # Guard against the parametrised tests below running on nothing.
    assert {"blockproc.map_lines", "blockproc.Plan", "blockproc.JobResult.timeline",
            "blockproc.Job.result"} <= set(EXAMPLES_OF)
    assert ("blockproc.Plan.to_dict", blockproc.Plan.to_dict) in REQUIRED


@pytest.mark.parametrize(("name", "obj"), REQUIRED, ids=[name for name, _ in REQUIRED])
def test_public_callable_has_an_examples_section(name: str, obj: Callable[..., object]) -> None:
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{name} has no docstring"
    assert _EXAMPLES.search(doc), (
        f"the docstring of {name} has no numpydoc 'Examples' section ('Examples' "
        f"underlined with '--------')"
    )
    assert name in EXAMPLES_OF, f"the Examples section of {name} holds no >>> example"


@pytest.mark.parametrize(("cls", "name"), PROPERTIES, ids=[f"{c}.{n}" for c, n in PROPERTIES])
def test_public_property_is_documented_and_shown_in_an_example(cls: str, name: str) -> None:
    prop = vars(getattr(blockproc, cls))[name]
    assert prop.__doc__ and prop.__doc__.strip(), f"blockproc.{cls}.{name} has no docstring"
    sources = "".join(example.source for test in DOCTESTS
                      if test.name == f"blockproc.{cls}" or
                      test.name.startswith(f"blockproc.{cls}.")
                      for example in test.examples)
    assert re.search(rf"\.{name}\b", sources), (
        f"no example of blockproc.{cls} uses .{name}; show it in the class's Examples"
    )


@pytest.mark.parametrize("test", DOCTESTS, ids=[test.name for test in DOCTESTS])
def test_docstring_examples_use_memory_urls_only(test: doctest.DocTest) -> None:
    for example in test.examples:
        if example.options.get(doctest.SKIP):
            continue  # real-cloud examples are marked +SKIP (STYLE.md)
        protocols = set(_URL.findall(example.source)) - {"memory"}
        assert not protocols, (
            f"{test.name}: example {example.source.strip()!r} uses {sorted(protocols)}; "
            f"examples that run use memory:// (mark others # doctest: +SKIP)"
        )


@pytest.mark.parametrize("test", DOCTESTS, ids=[test.name for test in DOCTESTS])
def test_docstring_examples_run(test: doctest.DocTest, clean_memory: None,
                                pytestconfig: pytest.Config) -> None:
    flags = 0
    for flag in pytestconfig.getini("doctest_optionflags"):
        flags |= doctest.OPTIONFLAGS_BY_NAME[flag]
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=flags, verbose=False)
    test.globs = dict(vars(HOME[test.name]))  # a fresh copy of its module's namespace
    result = runner.run(test, out=report.append)
    assert result.attempted, f"{test.name} ran no example"
    assert not result.failed, "".join(report)
