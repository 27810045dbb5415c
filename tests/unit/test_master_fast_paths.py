"""What the master's per-block fast paths must keep: the same tasks, results, ledger
lines, attempts file and retries as the slower code they replaced (issue 16: master CPU
per block). No timing here: each test fails if a fast path changes a behaviour.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import blockproc as bp
from blockproc._frozen import FrozenSlots
from blockproc.errors import ConfigError
from blockproc.executors import Event, Finished
from blockproc.model import AttemptRecord, Block, BlockResult, FileTail, InputFile, frozen_builder
from blockproc.output import status
from blockproc.output.layout import ATTEMPTS, LEDGER, STATE_DIR
from blockproc.output.ledger import Ledger, read_ledger
from blockproc.output.manifest import block_json, iter_list
from blockproc.scheduler import Attempt
from blockproc.storage import RetryPolicy, filesystem, retry_call, set_retry_policy
from blockproc.task import BlockTask
from tests.unit.test_master import DATA, FakeClock, FakeExecutor, master

# -- BlockResult.committed and frozen_builder ----------------------------------------------

KNOWN_RESULT_FIELDS = (
    "block", "part", "attempt", "worker", "records_in", "records_out", "bytes_read",
    "bytes_written", "checksum", "started", "seconds", "bad_records", "stderr_bytes",
    "attempts", "counters", "value", "tails")

texts = st.text(max_size=12)
counts = st.integers(min_value=0, max_value=2**40)
floats = st.floats(allow_nan=False)


@st.composite
def results(draw: st.DrawFn) -> BlockResult:
    files = draw(st.lists(st.builds(InputFile, texts, counts), max_size=2))
    block = Block(draw(counts), draw(texts), draw(counts), draw(counts), tuple(files))
    return BlockResult(
        block, draw(texts), draw(counts), draw(texts), draw(counts), draw(counts),
        draw(counts), draw(counts), draw(texts), draw(floats), draw(floats),
        bad_records=draw(counts), stderr_bytes=draw(counts), attempts=draw(counts),
        counters=draw(st.dictionaries(texts, counts, max_size=2)),
        value=draw(st.none() | st.binary(max_size=8)),
        tails=tuple(draw(st.lists(st.builds(FileTail, texts, counts, counts, texts),
                                  max_size=2))))


def every_field(obj: Any) -> dict[str, Any]:
    """All fields, ``compare=False`` ones (``value``) included."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def test_committed_knows_every_field_of_a_block_result() -> None:
    # a new field must be added to model._build_result, or committed() drops it
    assert tuple(f.name for f in dataclasses.fields(BlockResult)) == KNOWN_RESULT_FIELDS


@given(results(), counts, st.booleans())
def test_committed_is_replace_of_attempts_and_value(result: BlockResult, attempts: int,
                                                   keep_value: bool) -> None:
    made = result.committed(attempts, keep_value=keep_value)
    expected = dataclasses.replace(result, attempts=attempts,
                                   value=result.value if keep_value else None)
    assert type(made) is BlockResult and made == expected
    assert every_field(made) == every_field(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.attempts = 0  # type: ignore[misc]


@given(st.integers(0, 10**6), st.integers(1, 9), texts, floats, floats,
       st.sampled_from(["committed", "failed", "lost", "discarded"]), texts, st.booleans())
def test_an_attempts_record_is_the_record_of_its_fields(
        block: int, number: int, worker: str, started: float, ended: float, status: str,
        error: str, speculative: bool) -> None:
    attempt = Attempt(block, number, 0.0, 1.0, started, speculative=speculative,
                      worker=worker, status=status,  # type: ignore[arg-type]
                      error=error, ended_at=ended)
    expected = AttemptRecord(block, number, worker, started, ended, status, error,
                             speculative)
    record = attempt.to_record()
    assert type(record) is AttemptRecord and record == expected
    assert record.to_dict() == attempt.to_dict() == expected.to_dict()


class Sample(FrozenSlots):
    a: int
    b: str
    c: list[int]
    _fields = ("a", "b", "c")
    __slots__ = _fields

    def __init__(self, a: int, b: str = "b", c: list[int] | None = None) -> None:
        self._init(a, b, [] if c is None else c)


def test_frozen_builder_sets_the_fields_named_in_any_order() -> None:
    build = frozen_builder(Sample, ("c", "a", "b"))
    one = build([5], 7, "x")
    assert type(one) is Sample and one == Sample(7, "x", [5])
    assert (one.a, one.b, one.c) == (7, "x", [5])
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.a = 1  # type: ignore[misc]


def test_frozen_builder_refuses_what_it_cannot_build_like_the_class() -> None:
    @dataclass(frozen=True, slots=True)
    class Data:
        a: int

    class Wider(Sample):  # a field more than its slots say
        __slots__ = ("d",)

    for cls, names in ((Data, ("a",)), (Sample, ("a",)), (Sample, ("a", "b", "zzz")),
                       (Sample, ("a", "b", "c", "c")), (Wider, ("a", "b", "c"))):
        with pytest.raises(TypeError, match="name every field"):
            frozen_builder(cls, names)  # type: ignore[type-var]
    with pytest.raises(TypeError):
        frozen_builder(Sample, ("a", "b", "c"))(1, "b")  # a value short
    with pytest.raises(TypeError):
        frozen_builder(Sample, ("a", "b", "c"))(1, "b", [], 4)  # one too many


@given(results())
def test_a_built_result_is_an_ordinary_frozen_instance(result: BlockResult) -> None:
    built = frozen_builder(BlockResult, KNOWN_RESULT_FIELDS)(
        *(getattr(result, name) for name in KNOWN_RESULT_FIELDS))
    assert type(built) is BlockResult and every_field(built) == every_field(result)
    assert built == result and hash(built.block) == hash(result.block)
    assert pickle.loads(pickle.dumps(built)) == result
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.part = "x"  # type: ignore[misc]


# -- the master's tasks, ledger and attempts -----------------------------------------------

def test_each_task_is_the_block_task_the_fields_say(memfs: str) -> None:
    ex = FakeExecutor(FakeClock(), {(1, 1): ["fail"]})
    m = master(memfs, ex, max_bad_records=3, max_record_size=1000)
    m.run(threading.Event())
    tasks = [m._task(key) for key in ex.started]
    assert sorted(t.key for t in tasks) == sorted(ex.started) == [(0, 1), (1, 1), (1, 2),
                                                                  (2, 1)]
    for task in tasks:
        block = m.plan.blocks[task.block.id]
        part = f"part-{block.id:05d}.txt"
        expected = BlockTask(
            block=block, attempt=task.attempt, num_blocks=3, file=m.plan.file(block.path),
            format=task.format, input_fs=m._input_fs, output_fs=m.output.fs, part=part,
            staging_path=m.output.staging_path(block.id, task.attempt, part),
            max_record_size=1000, max_bad_records=3, hook=None,
            max_value_size=m.options.max_value_size, growing=False)
        assert task == expected and every_field(task) == every_field(expected)


def state_file(memfs: str, *parts: str) -> bytes:
    data: bytes = filesystem("memory").cat_file(
        f"{memfs.removeprefix('memory://')}/out/{STATE_DIR}/" + "/".join(parts))
    return data


def test_the_ledger_and_attempts_file_hold_what_they_held(memfs: str) -> None:
    ex = FakeExecutor(FakeClock(), {(1, 1): ["fail"], (2, 1): ["lost"]})
    m = master(memfs, ex)
    result = m.run(threading.Event())
    assert [b.attempts for b in result.blocks] == [1, 2, 2]
    # object stores (memory://) keep one ledger object per block: the result's dict
    for block in result.blocks:
        entry = json.loads(state_file(memfs, LEDGER, f"{block.part}.json"))
        assert entry == block.to_dict() and entry["attempts"] == block.attempts
    rows = json.loads(state_file(memfs, ATTEMPTS, "job-test.json"))
    assert rows == [a.to_dict() for a in result.attempts]
    assert sorted((r["block_id"], r["attempt"], r["status"]) for r in rows) == [
        (0, 1, "committed"), (1, 1, "failed"), (1, 2, "committed"), (2, 1, "lost"),
        (2, 2, "committed")]
    # byte for byte what the rows as dicts give (the attempts file used to take dicts)
    assert state_file(memfs, ATTEMPTS, "job-test.json") == b"".join(
        iter_list([a.to_dict() for a in result.attempts]))
    assert status(f"{memfs}/out").num_committed == 3


def test_a_local_ledger_line_is_block_json_of_the_committed_result(tmp_path: Any) -> None:
    from blockproc.master import Master
    from blockproc.output import OutputDir
    from blockproc.worker import Mapper

    src = tmp_path / "in.log"
    src.write_bytes(DATA)
    plan = bp.plan(str(src), block_size=120)
    ex = FakeExecutor(FakeClock(), {(0, 1): ["fail"]})
    fs = filesystem("file")
    out = OutputDir(fs, str(tmp_path / "out"), "job-local")
    result = Master(plan, Mapper("record", str.upper), out, ex,  # type: ignore[arg-type]
                    input_fs=fs, progress=False, clock=ex.clock).run(threading.Event())
    ledger = (tmp_path / "out" / STATE_DIR / LEDGER / "job-local.jsonl").read_bytes()
    by_id = {b.block.id: b for b in result.blocks}
    lines = ledger.decode().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == [0, 1, 2]
    for line in lines:
        assert line == block_json(by_id[json.loads(line)["id"]])
    assert by_id[0].attempts == 2 and by_id[0].value is None


class ValueExecutor(FakeExecutor):
    """Finishes every block with a value for the master (as ``pickle`` output does)."""

    def events(self, timeout: float) -> list[Event]:
        return [Finished(e.key, dataclasses.replace(e.result, value=b"v%d" % e.key[0]))
                if isinstance(e, Finished) else e for e in super().events(timeout)]


class Collected:
    combine = None

    def __init__(self) -> None:
        self.added: list[tuple[int, bytes | None]] = []

    def add(self, block_id: int, data: bytes | None) -> None:
        self.added.append((block_id, data))

    def collected(self) -> list[bytes | None]:
        return [data for _, data in sorted(self.added)]

    def folded(self) -> None:
        return None


def test_values_go_to_the_values_and_not_into_the_results(memfs: str) -> None:
    m = master(memfs, ValueExecutor(FakeClock(), {(1, 1): ["fail"]}))
    values = m.values = Collected()  # type: ignore[assignment]
    result = m.run(threading.Event())
    assert sorted(values.added) == [(0, b"v0"), (1, b"v1"), (2, b"v2")]
    assert result.values == (b"v0", b"v1", b"v2")
    assert [(r.value, r.attempts) for r in result.blocks] == [(None, 1), (None, 2), (None, 1)]


# -- retries: the policy of the moment, looked up when a try fails --------------------------

def failing(times: int, exc: type[Exception] = ConnectionResetError) -> tuple[Any, list[int]]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise exc(f"try {len(calls)}")
        return "ok"

    return fn, calls


def test_each_call_follows_the_environment_of_its_moment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKPROC_IO_BACKOFF", "0")
    for tries in (2, 5, 1, 3):
        monkeypatch.setenv("BLOCKPROC_IO_TRIES", str(tries))
        fn, calls = failing(100)
        with pytest.raises(ConnectionResetError) as info:
            retry_call(fn, "to read 'x'")
        assert len(calls) == tries
        assert f"tried to read 'x' {tries} times" in "".join(info.value.__notes__)


def test_a_policy_set_or_given_wins_over_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKPROC_IO_TRIES", "9")
    previous = set_retry_policy(RetryPolicy(tries=2, base_delay=0.0))
    try:
        fn, calls = failing(100)
        with pytest.raises(ConnectionResetError):
            retry_call(fn, "x")
        assert len(calls) == 2
        fn, calls = failing(100)
        with pytest.raises(ConnectionResetError):
            retry_call(fn, "x", RetryPolicy(tries=3, base_delay=0.0))
        assert len(calls) == 3
    finally:
        set_retry_policy(previous)


def test_a_bad_tuning_environment_is_named_when_a_retry_needs_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKPROC_IO_TRIES", "many")
    assert retry_call(lambda: "ok", "x") == "ok"  # no retry, no policy needed
    fn, _ = failing(1)
    with pytest.raises(ConfigError, match="BLOCKPROC_IO_TRIES"):
        retry_call(fn, "x")


def test_a_job_with_a_bad_tuning_environment_fails_before_it_starts(
        memfs: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKPROC_IO_BACKOFF", "soon")
    ex = FakeExecutor(FakeClock())
    m = master(memfs, ex)
    with pytest.raises(ConfigError, match="BLOCKPROC_IO_BACKOFF"):
        m.run(threading.Event())
    assert ex.started == []


@given(st.integers(0, 6), st.integers(1, 5), st.booleans())
def test_retries_count_like_the_policy_says(failures: int, tries: int, retryable: bool) -> None:
    fn, calls = failing(failures, ConnectionResetError if retryable else FileNotFoundError)
    policy = RetryPolicy(tries=tries, base_delay=0.0)
    for call in (lambda: retry_call(fn, "x", policy), lambda: policy.call(fn, "x")):
        calls.clear()
        gives_up = failures > 0 and (not retryable or failures >= tries)
        if not gives_up:
            assert call() == "ok" and len(calls) == failures + 1
            continue
        with pytest.raises(OSError) as info:
            call()
        assert len(calls) == (1 if not retryable else tries)
        assert str(info.value) == f"try {len(calls)}"
        assert info.value.__context__ is None  # not chained to the earlier tries' errors
        notes = getattr(info.value, "__notes__", [])
        assert (len(notes) == 1) == retryable


# -- the local ledger: one unbuffered write per line ---------------------------------------

def sample_result(block_id: int) -> BlockResult:
    return BlockResult(Block(block_id, "in.txt", 0, 10), f"part-{block_id:05d}.txt", 1, "w",
                       2, 2, 10, 10, "crc32:00000000", 1.5, 0.25, attempts=1)


def test_the_ledger_lines_recorded_are_in_the_file_once_flushed(tmp_path: Any) -> None:
    fs = filesystem("file")
    ledger = Ledger(fs, str(tmp_path), "job-1")
    path = tmp_path / STATE_DIR / LEDGER / "job-1.jsonl"
    for block_id in range(3):
        ledger.record(sample_result(block_id))
        if block_id == 1:
            assert path.read_bytes().splitlines()[-1] == block_json(
                sample_result(0)).encode()  # recorded, not written yet
        if block_id != 1:  # 0 alone, then 1 and 2 together
            ledger.flush()  # a crash now keeps the lines
            assert path.read_bytes().splitlines()[-1] == block_json(
                sample_result(block_id)).encode()
    ledger.record(sample_result(3))
    ledger.close()  # drops what was not flushed
    assert path.read_bytes() == "".join(
        block_json(sample_result(i)) + "\n" for i in range(3)).encode()
    assert sorted(read_ledger(fs, str(tmp_path))) == [0, 1, 2]


class ShortWrites(io.RawIOBase):
    """A file that takes at most 7 bytes per write call."""

    def __init__(self) -> None:
        self.data = b""

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += bytes(b[:7])
        return min(7, len(b))


def test_a_short_write_of_a_ledger_line_is_completed(tmp_path: Any) -> None:
    ledger = Ledger(filesystem("file"), str(tmp_path), "job-1")
    ledger._file = short = ShortWrites()  # type: ignore[assignment]
    ledger.record(sample_result(4))
    ledger.record(sample_result(5))
    ledger.flush()
    assert short.data == (block_json(sample_result(4)) + "\n" +
                          block_json(sample_result(5)) + "\n").encode()
