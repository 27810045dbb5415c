"""Streamed read-ahead (``storage.reading.ObjectStream``, ``Held``): a block's one GET
handed over in the pieces it arrives in, whatever their sizes, with the same bytes as a
whole read, each byte fetched once, a broken GET resumed by a GET of the rest only.

The network is replaced here by :class:`PiecesOpener`, which hands a file's bytes to the
stream in pieces of sizes Hypothesis draws (and fails where asked); the real GETs run in
``tests/integration/test_streamed_reads.py`` against moto and SeaweedFS.
"""

from __future__ import annotations

import errno
import itertools
from concurrent.futures import Future
from typing import Any
from unittest import mock

import pytest
from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import given, settings
from hypothesis import strategies as st

from blockproc.errors import InputChangedError
from blockproc.formats import Lines
from blockproc.model import Block, InputFile
from blockproc.storage import RangeSource, reading
from blockproc.task import BlockTask
from blockproc.worker import aligned_chunks

PATH = "/streamed/a.log"


class PiecesOpener:
    """Stands in for :class:`~blockproc.storage.reading.S3Opener`: each GET hands its
    range to the stream at once, in pieces of the sizes given (cycled), and fails with
    ``failures[n]`` (if any) after that many pieces of the ``n``-th GET."""

    def __init__(self, data: bytes, sizes: list[int],
                 failures: list[tuple[int, BaseException]] | None = None) -> None:
        self.data = data
        self.size = len(data)
        self.sizes = sizes
        self.failures = list(failures or [])
        self.gets: list[tuple[int, int]] = []

    def pump(self, start: int, end: int, stream: Any) -> Future[None]:
        self.gets.append((start, end))
        body = self.data[start:end]
        stream.length(len(body))
        fail = self.failures.pop(0) if self.failures else None
        pos = 0
        for count, size in enumerate(itertools.cycle(self.sizes)):
            if fail is not None and count == fail[0]:
                stream.ended(fail[1])
                break
            if pos >= len(body):
                stream.ended(True)
                break
            stream.arrived(body[pos:pos + size])
            pos += size
        done: Future[None] = Future()
        done.set_result(None)
        return done


def streamed_source(data: bytes, opener: PiecesOpener, *, limit: int, begin: int | None,
                    read_size: int = 1 << 30) -> RangeSource:
    """A RangeSource over ``data`` whose read-ahead (any size) streams through ``opener``."""
    fs = MemoryFileSystem()
    fs.pipe_file(PATH, data)
    with mock.patch.object(reading.S3Opener, "of", lambda file: opener):
        return RangeSource(fs, PATH, limit=limit, read_size=read_size, begin=begin)


piece_sizes = st.lists(st.integers(1, 700), min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(min_size=0, max_size=3000), sizes=piece_sizes,
       begin=st.integers(0, 3000), length=st.integers(0, 3000),
       reads=st.lists(st.tuples(st.integers(0, 3500), st.integers(0, 2000)), max_size=6))
def test_a_streamed_read_ahead_returns_exactly_the_asked_bytes(
        data: bytes, sizes: list[int], begin: int, length: int,
        reads: list[tuple[int, int]]) -> None:
    opener = PiecesOpener(data, sizes)
    with mock.patch.object(reading, "STREAM_MIN_SIZE", 1), \
            streamed_source(data, opener, limit=begin + length, begin=begin) as source:
        for start, size in reads:
            assert source.read(start, start + size) == data[start:start + size]


@settings(max_examples=150, deadline=None)
@given(data=st.binary(min_size=2, max_size=3000), sizes=piece_sizes,
       failures=st.lists(st.integers(0, 6), max_size=3), size=st.integers(1, 900))
def test_a_broken_stream_goes_on_with_a_get_of_the_rest_only(
        data: bytes, sizes: list[int], failures: list[int], size: int) -> None:
    reads = min(size, len(data) - 1)  # the first read asks for less: the rest is read ahead
    opener = PiecesOpener(data, sizes, [(n, ConnectionResetError("reset by peer"))
                                        for n in failures])
    no_wait = reading.RetryPolicy(tries=len(failures) + 1, base_delay=0)
    with mock.patch.object(reading, "STREAM_MIN_SIZE", 1), \
            streamed_source(data, opener, limit=len(data), begin=0) as source:
        source.retry = no_wait
        got = b"".join(source.read(s, s + reads) for s in range(0, len(data), reads))
    assert got == data
    assert source.bytes_read == len(data)  # each byte fetched once
    assert source.num_requests == len(opener.gets) <= 1 + len(failures)
    # each GET after the first asks for the rest only: from where the one before stopped
    assert [end for _, end in opener.gets] == [len(data)] * len(opener.gets)
    starts = [start for start, _ in opener.gets]
    assert starts[0] == 0 and starts == sorted(starts)


def test_a_stream_that_keeps_failing_raises_the_last_error_after_the_tries() -> None:
    data = bytes(range(256)) * 8
    # the first GET breaks after a piece, the next ones before any: a GET that hands
    # over bytes starts the count of tries again, one that fails at once does not
    opener = PiecesOpener(data, [100], [(1, ConnectionResetError("reset"))]
                          + [(0, ConnectionResetError("reset"))] * 3)
    with mock.patch.object(reading, "STREAM_MIN_SIZE", 1), \
            streamed_source(data, opener, limit=len(data), begin=0) as source:
        source.retry = reading.RetryPolicy(tries=3, base_delay=0)
        assert source.read(0, 100) == data[:100]
        with pytest.raises(ConnectionResetError, match="reset") as caught:
            source.read(100, 2048)
    assert "tried to read" in "".join(caught.value.__notes__)
    assert len(opener.gets) == 3


@pytest.mark.parametrize("error, expected", [
    (PermissionError(errno.EACCES, "Access Denied"), PermissionError),
    (OSError(errno.EINVAL, "At least one of the pre-conditions you specified did not hold"),
     InputChangedError),
])
def test_a_stream_error_that_would_repeat_is_raised_at_once(
        error: OSError, expected: type[Exception]) -> None:
    data = bytes(2048)
    opener = PiecesOpener(data, [100], [(2, error)])
    with mock.patch.object(reading, "STREAM_MIN_SIZE", 1), \
            streamed_source(data, opener, limit=len(data), begin=0) as source:
        assert source.read(0, 150) == data[:150]
        with pytest.raises(expected) as caught:
            source.read(150, 2048)
    assert len(opener.gets) == 1
    if expected is InputChangedError:
        assert "ETag no longer matches" in str(caught.value) and PATH in str(caught.value)


def test_a_stream_stops_at_the_end_the_store_announces() -> None:
    # a range past the object's end: the answer's length says where it stops
    data = bytes(range(256)) * 4
    opener = PiecesOpener(data, [300])
    opener.size = 10_000  # as if the object had shrunk since it was opened
    with mock.patch.object(reading, "STREAM_MIN_SIZE", 1), \
            streamed_source(data, opener, limit=5000, begin=0) as source:
        assert source.read(0, 100) == data[:100]  # the rest of [0, 5000) read ahead
        assert source.read(100, 5000) == data[100:]
        assert source.read(900, 1100) == data[900:]
        assert source.read(1024, 1100) == b""
    assert source.bytes_read == len(data)


def test_closing_a_source_stops_its_stream() -> None:
    data = bytes(4096)
    cancelled: list[bool] = []

    class Pending(PiecesOpener):
        def pump(self, start: int, end: int, stream: Any) -> Future[None]:
            stream.length(end - start)
            stream.arrived(self.data[start:start + 100])
            running: Future[None] = Future()
            running.cancel = lambda: cancelled.append(True) or True  # type: ignore[method-assign]
            return running

    with mock.patch.object(reading, "STREAM_MIN_SIZE", 1), \
            streamed_source(data, Pending(data, [100]), limit=4096, begin=0) as source:
        assert source.read(0, 50) == data[:50]
    assert cancelled == [True]


def test_a_get_that_stops_without_an_answer_fails_instead_of_waiting_forever() -> None:
    # a GET whose event loop is gone never calls back: the reader sees it stopped
    data = bytes(4096)

    class Silent(PiecesOpener):
        def pump(self, start: int, end: int, stream: Any) -> Future[None]:
            self.gets.append((start, end))
            stopped: Future[None] = Future()
            stopped.cancel()
            return stopped

    opener = Silent(data, [100])
    with mock.patch.object(reading, "STREAM_MIN_SIZE", 1), \
            mock.patch.object(reading, "STREAM_POLL", 0.01), \
            streamed_source(data, opener, limit=4096, begin=0) as source:
        source.retry = reading.RetryPolicy(tries=2, base_delay=0)
        with pytest.raises(ConnectionAbortedError, match="stopped before it was answered"):
            source.read(0, 10)
    assert len(opener.gets) == 2  # retried once, as a transient error


def test_files_other_than_s3_are_read_whole_as_before() -> None:
    fs = MemoryFileSystem()
    fs.pipe_file(PATH, bytes(100_000))
    with RangeSource(fs, PATH, limit=100_000, read_size=1 << 20, begin=0) as source:
        assert source.read(0, 10) == bytes(10)
        assert source.bytes_read == 100_000 and source.num_requests == 1


# -- a block's records, streamed ----------------------------------------------------------

def lines_task(block: Block, size: int) -> BlockTask:
    return BlockTask(block, 1, 1, InputFile(PATH, size), Lines(), None, None,
                     "part-00000.txt", "")


def text(draw_lines: list[int]) -> bytes:
    return b"".join(b"x" * n + b"\n" for n in draw_lines)


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(0, 120), max_size=60), sizes=piece_sizes,
       cuts=st.lists(st.integers(1, 400), min_size=1, max_size=8), tail=st.binary(max_size=5))
def test_streamed_pieces_of_any_size_give_the_blocks_the_same_bytes(
        lengths: list[int], sizes: list[int], cuts: list[int], tail: bytes) -> None:
    data = text(lengths) + tail.replace(b"\n", b"y")
    edges = sorted({0, len(data)} | {e for e in itertools.accumulate(cuts) if e < len(data)})
    chunks: list[bytes] = []
    for start, end in itertools.pairwise(edges):
        task = lines_task(Block(0, PATH, start, end), len(data))
        opener = PiecesOpener(data, sizes)
        with mock.patch.object(reading, "STREAM_MIN_SIZE", 1), \
                streamed_source(data, opener, limit=end + 4096, begin=start) as source:
            mine = list(aligned_chunks(task, source))
        fs = MemoryFileSystem()
        fs.pipe_file(PATH, data)
        with RangeSource(fs, PATH) as plain:
            assert b"".join(mine) == b"".join(aligned_chunks(task, plain))
        chunks.extend(mine)
    assert b"".join(chunks) == data  # each record in exactly one block, in order


def test_a_block_hands_over_its_bytes_before_it_looks_for_its_last_record() -> None:
    # the bytes before the block's nominal end are its own whatever the boundary: they
    # are yielded first, so a streamed block is decoded as it arrives
    data = text([99] * 200)  # 20,000 bytes
    task = lines_task(Block(0, PATH, 5_000, 15_000), len(data))
    reads: list[tuple[int, int]] = []
    fs = MemoryFileSystem()
    fs.pipe_file(PATH, data)
    with RangeSource(fs, PATH) as source:
        original = source.read
        source.read = lambda s, e: reads.append((s, e)) or original(s, e)  # type: ignore[method-assign]
        first = next(aligned_chunks(task, source))
    assert first == data[5_000:15_000][:len(first)] and len(first) > 0
    assert all(start < 15_000 for start, _ in reads), reads


def test_a_format_whose_boundary_goes_back_is_an_error_naming_it() -> None:
    class Backwards(Lines):
        def boundary(self, read: Any, pos: int, size: int, *,
                     max_record_size: int) -> Any:
            found = super().boundary(read, pos, size, max_record_size=max_record_size)
            return type(found)(pos - 1, b"", pos - 1) if pos > 1000 else found

    data = text([99] * 50)
    task = BlockTask(Block(0, PATH, 0, 2_000), 1, 1, InputFile(PATH, len(data)),
                     Backwards(), None, None, "part-00000.txt", "")
    fs = MemoryFileSystem()
    fs.pipe_file(PATH, data)
    with RangeSource(fs, PATH) as source, \
            pytest.raises(RuntimeError, match=r"Backwards\.boundary\(2000\) returned 1999"):
        list(aligned_chunks(task, source))
