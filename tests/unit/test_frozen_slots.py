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


@dataclasses.dataclass(frozen=True, slots=True)
class Boundary0:
    offset: int
    data: bytes
    data_start: int


@dataclasses.dataclass(frozen=True)
class Entry0:
    target: str
    requires: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class InputListing0:
    fs: Any
    files: list[Any]
    directories: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


def _same(mine: Any, reference: Any, other: Any) -> None:
    """``mine`` answers as the dataclass ``reference`` with the same fields."""
    name = type(mine).__name__
    assert repr(mine) == repr(reference).replace(f"{name}0", name)
    assert [getattr(mine, f.name) for f in dataclasses.fields(reference)] == [
        getattr(reference, f.name) for f in dataclasses.fields(reference)]
    assert mine == type(mine)(*[getattr(mine, f.name) for f in dataclasses.fields(reference)])
    assert mine != other and (mine == reference) is False
    assert pickle.loads(pickle.dumps(mine)) == mine == copy.deepcopy(mine)
    with pytest.raises(dataclasses.FrozenInstanceError):
        mine.x = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(mine, dataclasses.fields(reference)[0].name)


@given(st.integers(0), st.binary(max_size=20), st.integers(0))
def test_boundary_behaves_as_the_dataclass(offset: int, data: bytes, start: int) -> None:
    from blockproc.formats.base import Boundary
    mine = Boundary(offset, data, start)
    _same(mine, Boundary0(offset, data, start), Boundary(offset + 1, data, start))
    assert hash(mine) == hash(Boundary(offset, data, start))


@given(st.text(), st.lists(st.text(), max_size=3).map(tuple))
def test_registry_entry_behaves_as_the_dataclass(target: str, requires: tuple[str, ...]) -> None:
    from blockproc._registry import Entry
    mine = Entry(target, requires)
    _same(mine, Entry0(target, requires), Entry(target + "x", requires))
    assert Entry(target) == Entry(target, ()) and hash(mine) == hash(Entry(target, requires))


def test_input_listing_behaves_as_the_dataclass() -> None:
    from blockproc.model import InputFile
    from blockproc.storage.listing import InputListing
    files = [InputFile("/in/a.log", 3)]
    mine = InputListing(None, files, ("/in",), ("/in/out",))
    _same(mine, InputListing0(None, files, ("/in",), ("/in/out",)), InputListing(None, []))
    assert InputListing(None, files) == InputListing(None, files, (), ())
    with pytest.raises(TypeError):
        hash(mine)  # a list among the fields, as in the dataclass


def test_no_output_lock_never_renews() -> None:
    from blockproc.output import NoOutput
    lock = NoOutput("job-1").lock
    assert lock.renew_every == float("inf") and repr(lock) == "_NoLock(renew_every=inf)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        lock.renew_every = 1.0  # type: ignore[misc]


@dataclasses.dataclass(frozen=True, slots=True)
class TextOutput0:
    name: str = "text"
    extension: str = ".txt"
    is_streaming_text: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy0:
    tries: int = 4
    base_delay: float = 0.1
    max_delay: float = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class BatchFunction0:
    fn: Any
    batch_size: int = 1 << 20


@given(st.text(), st.text(), st.booleans())
def test_text_output_behaves_as_the_dataclass(name: str, ext: str, streaming: bool) -> None:
    from blockproc.output_formats import TextOutput
    mine = TextOutput(name, ext, streaming)
    _same(mine, TextOutput0(name, ext, streaming), TextOutput(name + "x", ext, streaming))
    assert TextOutput() == TextOutput("text", ".txt", True) and repr(TextOutput()) == repr(
        TextOutput0()).replace("TextOutput0", "TextOutput")
    assert hash(mine) == hash(TextOutput(name=name, extension=ext, is_streaming_text=streaming))


@given(st.integers(1, 9), st.floats(0, 1), st.floats(0, 9))
def test_retry_policy_behaves_as_the_dataclass(tries: int, base: float, most: float) -> None:
    from blockproc.storage.retry import RetryPolicy
    mine = RetryPolicy(tries=tries, base_delay=base, max_delay=most)
    _same(mine, RetryPolicy0(tries, base, most), RetryPolicy(tries + 1, base, most))
    assert repr(RetryPolicy()) == "RetryPolicy(tries=4, base_delay=0.1, max_delay=5.0)"
    assert mine.delay(1, jitter=1.0) == min(most, base)


def test_batch_function_behaves_as_the_dataclass() -> None:
    from blockproc.worker import CHUNK_SIZE, BatchFunction
    mine = BatchFunction(len, 100)
    _same(mine, BatchFunction0(len, 100), BatchFunction(len, 101))
    assert BatchFunction(len) == BatchFunction(len, CHUNK_SIZE) and mine([1, 2]) == 2


@dataclasses.dataclass(frozen=True, slots=True)
class Delimited0:
    delimiter: bytes = b"\n"
    encoding: str | None = None
    errors: str = "strict"
    name: str = "delimited"


@dataclasses.dataclass(frozen=True, slots=True)
class Raw0:
    delimiter: bytes = b"\n"
    name: str = "raw"


@given(st.binary(min_size=1, max_size=4), st.sampled_from([None, "utf-8", "latin-1"]),
       st.sampled_from(["strict", "replace"]))
def test_delimited_and_raw_behave_as_the_dataclasses(delimiter: bytes, encoding: str | None,
                                                     errors: str) -> None:
    from blockproc.formats.lines import Delimited, Raw
    mine = Delimited(delimiter, encoding, errors)
    _same(mine, Delimited0(delimiter, encoding, errors), Delimited(delimiter + b"x", encoding))
    assert Delimited(delimiter) == Delimited(delimiter=delimiter, encoding=None,
                                             errors="strict", name="delimited")
    assert hash(mine) == hash(Delimited(delimiter, encoding, errors))
    raw = Raw(delimiter)
    _same(raw, Raw0(delimiter), Raw(delimiter + b"x"))
    assert Raw() == Raw(b"\n", "raw") and repr(Raw()) == "Raw(delimiter=b'\\n', name='raw')"


def test_delimited_and_raw_check_and_normalise_as_before() -> None:
    from blockproc.errors import ConfigError
    from blockproc.formats.lines import Delimited, Raw
    assert Delimited("|").delimiter == b"|" == Raw("|").delimiter
    assert pickle.loads(pickle.dumps(Delimited("|", "utf-8"))) == Delimited(b"|", "utf-8")
    with pytest.raises(ConfigError):
        Delimited(b"")
    with pytest.raises(TypeError, match="delimiter must be bytes or str"):
        Raw(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Delimited(b"|", encoding="no-such-codec")
