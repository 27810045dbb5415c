"""A block's one GET, streamed, on both S3-compatible stores (moto and SeaweedFS): its
first records are handed over while the rest of it is still arriving, a GET broken mid-way
goes on with a GET of the rest only, and an object changed meanwhile is an input change.

The store is real; what is injected is the moment things happen: the event loop that
reads the GET's body is held (or made to fail) once a first MiB of it has come in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import blockproc as bp
from blockproc.errors import InputChangedError
from blockproc.model import Block, InputFile
from blockproc.storage import RangeSource, reading, resolve
from blockproc.task import BlockTask
from blockproc.worker import aligned_chunks
from tests.integration.test_object_store import S3Calls
from tests.stores import StoreDir

MiB = 1 << 20
LINES = [f"{i:07d} {'x' * (i % 61)}" for i in range(200_000)]
DATA = ("\n".join(LINES) + "\n").encode()
"""About 7.5 MiB of lines."""


class Gate:
    """Hold the GET's event loop once ``after`` bytes have come in, until :meth:`open`
    (or 30 s), or raise ``error`` there once instead."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, after: int = MiB,
                 error: BaseException | None = None) -> None:
        self.opened = threading.Event()
        if error is not None:
            self.opened.set()  # fail, do not hold
        self.error = error
        self.seen = 0
        self.failed_at: int | None = None  # bytes handed over when the error was raised
        original = reading.ObjectStream.arrived

        def arrived(stream: reading.ObjectStream, piece: bytes) -> None:
            if self.seen >= after and self.error is not None:
                error, self.error, self.failed_at = self.error, None, self.seen
                raise error
            original(stream, piece)
            self.seen += len(piece)
            if self.seen >= after:
                self.opened.wait(30)

        monkeypatch.setattr(reading.ObjectStream, "arrived", arrived)

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def block_source(store: StoreDir) -> Iterator[tuple[BlockTask, RangeSource, str]]:
    """The first 6 MiB block of DATA on the store, and its source, opened as a worker
    opens it (checked against the plan, reading ahead to the window past its end)."""
    (url,) = store.put({"in/lines.log": DATA})
    fs, path = resolve(url, store.storage_options)
    planned: InputFile = bp.plan(url, storage_options=store.storage_options).files[0]
    block = Block(0, path, 0, 6 * MiB)
    task = BlockTask(block, 1, 2, planned, bp.formats.Lines(), fs, None, "part-00000.txt", "")
    with RangeSource(fs, path, expected=planned, limit=block.end + 4096,
                     begin=block.start) as source:
        yield task, source, path


def test_a_block_is_handed_over_while_its_get_is_still_arriving(
        block_source: tuple[BlockTask, RangeSource, str], monkeypatch: pytest.MonkeyPatch,
        store: StoreDir) -> None:
    task, source, path = block_source
    gate = Gate(monkeypatch)
    calls = S3Calls(monkeypatch)
    try:
        chunks = aligned_chunks(task, source)
        first = next(chunks)
        assert 0 < source.bytes_read < 3 * MiB  # the block is 6 MiB: most is still to come
    finally:
        gate.open()
    rest = b"".join(chunks)
    expected = DATA[:DATA.index(b"\n", 6 * MiB) + 1]
    assert first + rest == expected
    assert [op for op, key, _ in calls.calls if key in path] == ["GetObject"]
    assert source.bytes_read == 6 * MiB + 4096  # the block and the window past its end


def test_a_get_broken_mid_way_goes_on_with_a_get_of_the_rest(
        block_source: tuple[BlockTask, RangeSource, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    task, source, path = block_source
    monkeypatch.setenv("BLOCKPROC_IO_BACKOFF", "0.001")
    gate = Gate(monkeypatch, error=ConnectionResetError("connection reset by peer"))
    calls = S3Calls(monkeypatch)
    got = b"".join(aligned_chunks(task, source))
    assert got == DATA[:DATA.index(b"\n", 6 * MiB) + 1]
    ranges = calls.ranges(path.split("/", 1)[1])
    assert len(ranges) == 2, ranges
    (start, end), (resumed, resumed_end) = ranges
    assert (start, end) == (0, 6 * MiB + 4096) and resumed_end == end
    assert MiB <= resumed == gate.failed_at < end  # from the first byte not handed over
    assert source.bytes_read == end  # each byte fetched once


def test_an_object_changed_under_a_broken_get_is_an_input_change(
        block_source: tuple[BlockTask, RangeSource, str], monkeypatch: pytest.MonkeyPatch,
        store: StoreDir) -> None:
    task, source, path = block_source
    monkeypatch.setenv("BLOCKPROC_IO_BACKOFF", "0.001")
    gate = Gate(monkeypatch, error=ConnectionResetError("connection reset by peer"))
    chunks = aligned_chunks(task, source)
    next(chunks)
    store.put({"in/lines.log": DATA.upper()})  # same size, another ETag
    with pytest.raises(InputChangedError, match=r"planned \(ETag \"\w+\" -> \"\w+\"\)") as caught:
        b"".join(chunks)
    assert path in str(caught.value)
    assert gate.failed_at is not None  # the GET broke, and the one for the rest was refused


def test_a_job_streams_each_block_in_one_get_and_reads_each_byte_once(
        store: StoreDir, monkeypatch: pytest.MonkeyPatch) -> None:
    (url,) = store.put({"in/lines.log": DATA})
    streams: list[Any] = []
    original = reading.ObjectStream.__init__

    def counted(self: reading.ObjectStream, *args: Any) -> None:
        streams.append(args[1:])
        original(self, *args)

    monkeypatch.setattr(reading.ObjectStream, "__init__", counted)
    calls = S3Calls(monkeypatch)
    res = bp.map_lines(str.upper, url, output=store.url("out"), block_size=5 * MiB // 2,
                       executor="threads", workers=2, storage_options=store.storage_options)
    assert store.get("out/part-00000.txt") + store.get("out/part-00001.txt") + store.get(
        "out/part-00002.txt") == DATA.upper()
    assert len(res.blocks) == 3 and len(streams) == 3  # every block (2.4-2.5 MiB) streamed
    ranges = calls.ranges(f"{store.root.split('/', 1)[1]}/in/lines.log")
    assert len(ranges) == 3, ranges
    assert res.num_bytes_read == sum(min(e, len(DATA)) - s for s, e in ranges)
    assert res.num_bytes_read <= len(DATA) + 3 * 4096
