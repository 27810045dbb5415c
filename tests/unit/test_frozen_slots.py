"""The executors' events and the Mapper are ``FrozenSlots`` classes (written-out frozen
dataclasses, cheaper to import): they must behave as the frozen, slotted dataclasses they
replace, field for field."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockproc.executors.base import Failed, Finished, Progress
from blockproc.task import Mapper


@dataclasses.dataclass(frozen=True, slots=True)
class Failed0:
    key: Any
    error: str
    traceback: str = ""
    worker: str = ""
    lost: bool = False
    retryable: bool = True
    exception: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True)
class Progress0:
    key: Any
    bytes_done: int
    records_done: int
    worker: str = ""


keys = st.tuples(st.integers(0, 10**6), st.integers(1, 9))


@given(keys, st.text(), st.text(), st.text(), st.booleans(), st.booleans(), st.binary())
def test_failed_behaves_as_the_dataclass(key: Any, error: str, tb: str, worker: str,
                                         lost: bool, retryable: bool, blob: bytes) -> None:
    args = (key, error, tb, worker, lost, retryable, blob)
    mine, reference = Failed(*args), Failed0(*args)
    assert repr(mine) == repr(reference).replace("Failed0", "Failed")
    assert mine == Failed(*args) and hash(mine) == hash(Failed(*args))
    assert (mine == Failed(key, error + "x", tb)) is False
    assert pickle.loads(pickle.dumps(mine)) == mine == copy.deepcopy(mine)
    assert Failed(key, error, lost=lost) == Failed(key, error, "", "", lost, True, b"")
    assert [getattr(mine, f.name) for f in dataclasses.fields(reference)] == list(args)


@given(keys, st.integers(0), st.integers(0), st.text())
def test_progress_behaves_as_the_dataclass(key: Any, done: int, records: int,
                                           worker: str) -> None:
    mine, reference = Progress(key, done, records, worker), Progress0(key, done, records, worker)
    assert repr(mine) == repr(reference).replace("Progress0", "Progress")
    assert mine == Progress(key, done, records, worker) != Progress(key, done + 1, records)
    assert pickle.loads(pickle.dumps(mine)) == mine


@pytest.mark.parametrize("event", [Progress((0, 1), 1, 2), Finished((0, 1), None),  # type: ignore[arg-type]
                                   Failed((0, 1), "boom"), Mapper("record", str.upper)])
def test_fields_cannot_be_assigned_or_deleted(event: Any) -> None:
    name = event._fields[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(event, name, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(event, name)
    with pytest.raises(AttributeError):
        event.other = 1
    assert not hasattr(event, "__dict__")
    assert event != (event._values()) and event == copy.copy(event)


def test_a_mapper_writes_text_by_default_and_round_trips() -> None:
    mapper = Mapper("record", str.upper)
    assert mapper.output.name == "text" and mapper.kind == "record"
    assert pickle.loads(pickle.dumps(mapper)) == mapper
    assert Mapper("block", len, mapper.output) != mapper
