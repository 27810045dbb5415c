"""What crosses to a worker process is pickled by ``executors.base.dumps``: plain pickle
(by reference) for importable functions and classes, cloudpickle (by value) for the rest.
A function or class that another process could not import under the same name must go
by value, whatever plain pickle would accept."""

from __future__ import annotations

import functools
import operator
import pickle
import sys
import types

import cloudpickle
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockproc.executors.base import dumps, pickle_exception
from blockproc.task import Mapper


def shout(line: str) -> str:
    return line.upper()


class Shouter:
    def __call__(self, line: str) -> str:
        return line.upper()


def by_value(payload: bytes) -> bool:
    """True when ``payload`` was written by cloudpickle with a function by value."""
    return b"cloudpickle" in payload


@pytest.mark.parametrize("fn", [shout, Shouter(), operator.itemgetter(0), str.upper,
                                functools.partial(shout)],
                         ids=["function", "instance", "itemgetter", "method", "partial"])
def test_importable_functions_go_by_reference_with_plain_pickle(fn: object) -> None:
    payload = dumps(Mapper("record", fn))
    assert not by_value(payload)
    assert pickle.loads(payload).fn("ab") in ("AB", "a")


def _renamed(fn: types.FunctionType, module: str) -> types.FunctionType:
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__)
    copy.__module__ = module
    copy.__qualname__ = fn.__qualname__
    return copy


@pytest.mark.parametrize("module", ["__main__", "not_a_loaded_module"])
def test_functions_of_main_or_of_unloaded_modules_go_by_value(module: str) -> None:
    """A worker forked from the template process (or spawned) has another ``__main__``:
    plain pickle would name ``__main__.shout`` and the worker could not find it."""
    fn = _renamed(shout, module)
    if module in sys.modules:  # plain pickle would accept it by name: make sure it could
        sys.modules[module].shout = fn  # type: ignore[attr-defined]
    try:
        payload = dumps(Mapper("record", functools.partial(fn)))
    finally:
        if module in sys.modules:
            delattr(sys.modules[module], "shout")
    assert by_value(payload)
    assert pickle.loads(payload).fn("ab") == "AB"


def test_classes_of_main_go_by_value() -> None:
    cls = type("Local", (), {"__call__": lambda self, s: s * 2, "__module__": "__main__"})
    sys.modules["__main__"].Local = cls  # type: ignore[attr-defined]
    try:
        payload = dumps(cls())
    finally:
        del sys.modules["__main__"].Local  # type: ignore[attr-defined]
    assert by_value(payload)
    assert pickle.loads(payload)("x") == "xx"


def test_lambdas_and_closures_go_by_value() -> None:
    suffix = "!"
    for fn in (lambda s: s + "!", lambda s: s + suffix):
        payload = dumps(fn)
        assert by_value(payload)
        assert pickle.loads(payload)("a") == "a!"


def test_modules_registered_by_value_go_by_value() -> None:
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    try:
        payload = dumps(shout)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    assert by_value(payload)
    assert not by_value(dumps(shout))


def test_exceptions_go_by_reference_unless_main_defines_them() -> None:
    assert not by_value(pickle_exception(KeyError("k")))
    assert repr(pickle.loads(pickle_exception(KeyError("k")))) == "KeyError('k')"
    main_error = type("MainError", (Exception,), {"__module__": "__main__"})
    assert by_value(pickle_exception(main_error("x")))


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
                    lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids)))
def test_plain_data_round_trips_by_reference(value: object) -> None:
    payload = dumps(value)
    assert not by_value(payload)
    assert pickle.loads(payload) == value
