"""The model's values, the job's options, a task and a job's result are
:class:`~blockproc._frozen.FrozenSlots` classes (issue 14: ``dataclasses`` and the
``inspect`` it loads cost a small job ~20 ms of start-up). They must answer as the frozen,
slotted dataclasses they replace, ``dataclasses.fields``, ``replace`` and ``asdict``
included, field for field."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import blockproc
from blockproc._frozen import FrozenSlots, field_names
from blockproc.errors import ConfigError
from blockproc.formats import Lines
from blockproc.master import JobOptions
from blockproc.model import AttemptRecord, Block, BlockResult, FileTail, InputFile, Plan
from blockproc.result import JobResult
from blockproc.task import BlockTask


@dataclasses.dataclass(frozen=True, slots=True)
class Block0:
    id: int
    path: str
    start: int
    end: int
    files: tuple[Any, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class InputFile0:
    path: str
    size: int
    token: str = ""
    compression: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class FileTail0:
    path: str
    size: int
    length: int
    crc32: str


@dataclasses.dataclass(frozen=True, slots=True)
class Plan0:
    protocol: str
    files: tuple[Any, ...]
    blocks: tuple[Any, ...]
    block_size: int
    format: Mapping[str, Any]
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    directories: tuple[str, ...] = dataclasses.field(default=(), compare=False)
    skipped: tuple[str, ...] = dataclasses.field(default=(), compare=False)


@dataclasses.dataclass(frozen=True, slots=True)
class BlockResult0:
    block: Any
    part: str
    attempt: int
    worker: str
    records_in: int
    records_out: int
    bytes_read: int
    bytes_written: int
    checksum: str
    started: float
    seconds: float
    bad_records: int = 0
    stderr_bytes: int = 0
    attempts: int = 0
    counters: Mapping[str, int] = dataclasses.field(default_factory=dict)
    value: bytes | None = dataclasses.field(default=None, repr=False, compare=False)
    tails: tuple[Any, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptRecord0:
    block_id: int
    attempt: int
    worker: str
    started: float
    finished: float
    status: str
    error: str = ""
    speculative: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class JobOptions0:
    max_attempts: int = 4
    lease_timeout: float = 600.0
    speculation: bool = True
    max_bad_records: int | None = None
    max_record_size: int = JobOptions().max_record_size
    hook: Any = None
    max_value_size: int = 64 * 2**20


@dataclasses.dataclass(frozen=True, slots=True)
class JobResult0:
    output: str
    job_id: str
    blocks: tuple[Any, ...]
    seconds: float
    attempts: tuple[Any, ...] = ()
    values: tuple[Any, ...] | None = dataclasses.field(default=None, repr=False)
    value: Any = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class Lines0:
    encoding: str = "utf-8"
    errors: str = "strict"
    name: str = "lines"


def _protocol(fields: tuple[dataclasses.Field[Any], ...]) -> list[tuple[Any, ...]]:
    """What ``dataclasses.fields`` says of each field, a default made by a factory
    (``{}``) given as the ``None`` the written-out ``__init__`` takes for it."""
    return [(f.name, f.init, f.compare, f.repr,
             None if f.default_factory is not dataclasses.MISSING else f.default)
            for f in fields]


def _answers_as(mine: Any, reference: Any, *, same_repr: bool = True,
                changes: Mapping[str, Any] | None = None) -> None:
    """``mine`` answers as the dataclass instance ``reference`` with the same values
    (``changes``: a value to replace each field with, where "changed" will not do)."""
    cls = type(mine)
    assert _protocol(dataclasses.fields(mine)) == _protocol(dataclasses.fields(reference))
    assert field_names(cls) == tuple(f.name for f in dataclasses.fields(reference))
    assert dataclasses.is_dataclass(mine) and dataclasses.is_dataclass(cls)
    assert dataclasses.asdict(mine) == dataclasses.asdict(reference)
    if same_repr:
        assert repr(mine) == repr(reference).replace(f"{cls.__name__}0(", f"{cls.__name__}(")
    assert pickle.loads(pickle.dumps(mine)) == mine == copy.deepcopy(mine) == copy.copy(mine)
    assert not hasattr(mine, "__dict__")
    first = dataclasses.fields(reference)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(mine, first, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(mine, first)
    for f in dataclasses.fields(reference):  # replace: equal exactly when the dataclass is
        other = getattr(reference, f.name)
        changed = "changed" if isinstance(other, str) else (other, "changed")
        changed = (changes or {}).get(f.name, changed)
        theirs = dataclasses.replace(reference, **{f.name: changed})
        ours = dataclasses.replace(mine, **{f.name: changed})
        assert type(ours) is cls and getattr(ours, f.name) == changed
        assert (ours == mine) is (theirs == reference)
        if theirs == reference and _hashes(reference):
            assert hash(ours) == hash(mine)
    assert _hashes(mine) is _hashes(reference)


def _hashes(obj: Any) -> bool:
    try:
        hash(obj)
    except TypeError:  # a dict among the fields
        return False
    return True


texts = st.text(max_size=8)
counts = st.integers(0, 2**40)
files = st.builds(InputFile, texts, counts, texts, st.sampled_from([None, "gzip"]))


@given(counts, texts, counts, counts, st.lists(files, max_size=2).map(tuple))
def test_blocks_and_input_files_answer_as_the_dataclasses(
        number: int, path: str, start: int, end: int, packed: tuple[InputFile, ...]) -> None:
    block = Block(number, path, start, end, packed)
    _answers_as(block, Block0(number, path, start, end, packed), same_repr=False)
    assert hash(block) == hash(Block(number, path, start, end, packed))
    for f in packed:
        _answers_as(f, InputFile0(f.path, f.size, f.token, f.compression))
    tail = FileTail(path, end, 4, "crc32:00000000")
    _answers_as(tail, FileTail0(path, end, 4, "crc32:00000000"))


@given(st.lists(files, max_size=2).map(tuple), counts, st.booleans())
def test_a_plan_answers_as_the_dataclass(given_files: tuple[InputFile, ...], size: int,
                                         options: bool) -> None:
    blocks = tuple(Block(i, f.path, 0, f.size) for i, f in enumerate(given_files))
    storage = {"anon": True} if options else {}
    plan = Plan("file", given_files, blocks, size, {"name": "lines"}, storage, ("/in",),
                ("/in/out",))
    _answers_as(plan, Plan0("file", given_files, blocks, size, {"name": "lines"}, storage,
                            ("/in",), ("/in/out",)), same_repr=False)
    assert Plan("file", given_files, blocks, size, {"name": "lines"}).storage_options == {}
    assert dataclasses.replace(plan, block_size=size + 1).fingerprint != plan.fingerprint
    assert dataclasses.replace(plan, skipped=()) == plan  # not compared, as before


@given(counts, texts, counts, st.dictionaries(texts, counts, max_size=2),
       st.none() | st.binary(max_size=4), st.floats(allow_nan=False))
def test_block_results_and_attempts_answer_as_the_dataclasses(
        number: int, worker: str, records: int, counters: dict[str, int],
        value: bytes | None, seconds: float) -> None:
    block = Block(number, "a.log", 0, records)
    tails = (FileTail("a.log", records, 1, "crc32:00000001"),)
    args = (block, "part-00000.txt", 1, worker, records, records, records, records,
            "crc32:00000000", seconds, seconds)
    result = BlockResult(*args, 1, 2, 3, counters, value, tails)
    _answers_as(result, BlockResult0(*args, 1, 2, 3, counters, value, tails))
    assert BlockResult(*args).counters == {} and BlockResult(*args).value is None
    record = AttemptRecord(number, 1, worker, seconds, seconds, "failed", "boom", True)
    _answers_as(record, AttemptRecord0(number, 1, worker, seconds, seconds, "failed",
                                       "boom", True))


def test_options_results_tasks_and_lines_answer_as_the_dataclasses() -> None:
    _answers_as(JobOptions(), JobOptions0())
    _answers_as(JobOptions(2, 5.0, False, 3), JobOptions0(2, 5.0, False, 3))
    block = Block(0, "a.log", 0, 5)
    blocks = (BlockResult(block, "part-00000.txt", 1, "w", 1, 1, 5, 5, "crc32:0", 0.0, 0.1),)
    attempts = (AttemptRecord(0, 1, "w", 0.0, 0.1, "committed"),)
    _answers_as(JobResult("out", "job-1", blocks, 0.5, attempts, (7,), 7),
                JobResult0("out", "job-1", blocks, 0.5, attempts, (7,), 7), same_repr=False)
    _answers_as(Lines("latin-1"), Lines0("latin-1"),
                changes={"encoding": "utf-8", "errors": "replace"})
    task = BlockTask(block, 1, 1, InputFile("a.log", 5), Lines(), None, None,
                     "part-00000.txt", "s/part-00000.txt.1")
    assert dataclasses.replace(task, attempt=2).key == (0, 2)
    assert [f.name for f in dataclasses.fields(task)] == list(field_names(BlockTask))
    with pytest.raises(ConfigError, match="unknown encoding: no-such-codec"):
        Lines("no-such-codec")


def _frozen_classes() -> list[type[FrozenSlots]]:
    """Every FrozenSlots class of blockproc (its modules that name the base imported)."""
    root = Path(blockproc.__file__).parent
    for path in root.rglob("*.py"):
        if "FrozenSlots)" in path.read_text(encoding="utf-8"):
            parts = path.relative_to(root.parent).with_suffix("").parts
            importlib.import_module(".".join(parts))
    found, todo = [], list(FrozenSlots.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in found if c.__module__.split(".")[0] == "blockproc"
            and c.__init__ is not object.__init__]  # not frozen_builder's own classes


def test_every_frozen_class_names_its_init_parameters_as_its_fields() -> None:
    classes = _frozen_classes()
    assert {JobOptions, Block, BlockTask, JobResult, Lines} <= set(classes)
    for cls in classes:
        assert [f.name for f in dataclasses.fields(cls)] == list(cls._fields), cls
        assert set(cls._compared) <= set(cls._fields) and set(cls._shown) <= set(cls._fields)


def test_a_class_whose_init_differs_from_its_fields_is_refused_on_first_use() -> None:
    class Odd(FrozenSlots):
        _fields = ("a",)
        __slots__ = _fields

        def __init__(self, b: int) -> None:
            self._init(b)

    assert Odd(1).a == 1
    with pytest.raises(TypeError, match=r"Odd: __init__ takes \('b',\), _fields names"):
        dataclasses.fields(Odd)
