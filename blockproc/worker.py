"""Run one attempt of one block: read only its slice, map its records, write a part-file.

:func:`run_block` is what every executor calls, in whatever process the attempt runs.
The task it runs is in :mod:`blockproc.task`, the reading of the block's bytes in
:mod:`blockproc.block_reading`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

from blockproc._frozen import FrozenSlots
from blockproc.block_reading import (
    CHUNK_SIZE,
    TailKeeper,
    aligned_chunks,
    aligned_range,
    combined_chunks,
    decompressed_chunks,
    reads_file_end,
    source_chunks,
)
from blockproc.counters import collecting
from blockproc.errors import (
    ReturnTypeError,
    TooManyBadRecordsError,
)
from blockproc.formats import RecordFormat
from blockproc.formats.base import FIRST_WINDOW_SIZE, has_border
from blockproc.formats.hooks import decodes_blocks, reads_own_blocks
from blockproc.formats.records import Records
from blockproc.formats.text import code_unit
from blockproc.model import Block, BlockResult, FileTail
from blockproc.output_formats import OutputFormat, PartWriter
from blockproc.storage import (
    RangeSource,
    open_output,
    share_models,
)
from blockproc.task import AttemptHook, BlockTask, HookPoint, Mapper
from blockproc.values import check_value_size

__all__ = [
    "CHUNK_SIZE", "AttemptHook", "Batch", "BatchFunction", "BlockTask", "HookPoint", "Mapper",
    "ReportFn", "aligned_chunks", "count_records", "record_offsets", "run_block", "worker_name",
]

ReportFn = Callable[[int, int], None]
"""``report(bytes_done, records_done)``; may raise to stop the attempt."""


class Batch:
    """One block's records at once, for :func:`blockproc.map_blocks`.

    ``data`` is the block's record-aligned bytes, ``records`` its decoded records,
    ``block`` the :class:`~blockproc.Block`.

    Examples
    --------
    >>> from blockproc.formats import Lines
    >>> batch = Batch(Block(0, "a.log", 0, 4), b"a\\nb\\n", Lines(), at_file_start=True)
    >>> batch, list(batch.records)
    (Batch(block=Block(id=0, path='a.log', start=0, end=4)), ['a', 'b'])
    """

    def __init__(self, block: Block, data: bytes, format: RecordFormat,
                 at_file_start: bool) -> None:
        self.block = block
        self.data = data
        self.format = format
        self.at_file_start = at_file_start
        self._records: Records | None = None

    def __repr__(self) -> str:
        return f"Batch(block={self.block!r})"  # not the data: it may be read on use

    @property
    def records(self) -> Records:
        """The block's records, in order: a :class:`~blockproc.formats.records.Records`,
        which a ``for`` loop (``Counter``, ``map``, ``sum``, ...) streams ~1 MiB at a
        time, and ``len``, an index or a slice turns into a list first (kept)."""
        if self._records is None:
            self._records = Records(self.data, self.format, at_file_start=self.at_file_start,
                                    chunk_size=CHUNK_SIZE)
        return self._records

    def __len__(self) -> int:
        return len(self.records)


def worker_name() -> str:
    """Return ``host:pid`` (plus the thread name off the main thread)."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    thread = threading.current_thread()
    if thread is not threading.main_thread():
        name += f":{thread.name}"
    return name


def run_block(task: BlockTask, mapper: Mapper, report: ReportFn) -> BlockResult:
    """Run one attempt of ``task`` and return its result; the part-file is staged at
    ``task.staging_path``, for the master to commit."""
    started = time.time()
    clock = time.perf_counter()
    compressed = task.file.compression is not None
    hook = task.hook
    if hook is not None:
        hook.fire("start", task)
    combined = bool(task.block.files)
    share_models(task.input_fs)  # a forked worker's first filesystems: the master's models
    share_models(task.output_fs)
    # the limit takes in the first window past the block's end, which finding its last
    # record reads anyway: a remote block is one ranged GET, not one plus a 4 KiB one
    # (begin: also when that window is read first, as the first block of a file does)
    source = None if compressed or combined else RangeSource(
        task.input_fs, task.file.path, expected=None if task.growing else task.file,
        limit=task.block.end + FIRST_WINDOW_SIZE, begin=task.block.start)
    bad = BadRecords(task)
    tails: list[FileTail] = []  # the ends of the input files this block read
    try:
        with collecting() as counts:
            writer, records_in, stderr_bytes = _map_block(task, mapper, source, report, bad,
                                                          tails)
        bad.save()
    finally:
        if source is not None:
            source.close()
    if hook is not None:
        hook.fire("after_write", task)
    bytes_read = task.file.size if source is None else source.bytes_read
    if combined:
        bytes_read = task.block.end - task.block.start  # every file read whole, once
    value = writer.value_bytes
    if value is not None:
        check_value_size(value, task.max_value_size, task.describe())
    return BlockResult(
        block=task.block, part=task.part, attempt=task.attempt, worker=worker_name(),
        records_in=records_in, records_out=writer.records, bytes_read=bytes_read,
        bytes_written=writer.bytes_written, checksum=writer.checksum, started=started,
        seconds=time.perf_counter() - clock, bad_records=len(bad.entries),
        stderr_bytes=stderr_bytes, counters=counts, value=value, tails=tuple(tails),
    )


def _map_block(task: BlockTask, mapper: Mapper, source: RangeSource | None,
               report: ReportFn, bad: BadRecords,
               tails: list[FileTail]) -> tuple[PartWriter, int, int]:
    """Read the block, run the mapper over it and write the staged part-file (none when
    the job has no output); return the writer, records read and stderr bytes, and add
    to ``tails`` the end of each file the block read to its end."""
    stderr_bytes = 0
    keeper = None
    chunks: Iterable[bytes]
    if task.block.files:
        chunks = combined_chunks(task, records=mapper.kind != "command", tails=tails)
    else:
        chunks = decompressed_chunks(task) if source is None else source_chunks(
            task, source, whole=mapper.kind == "block")
        if source is not None and reads_file_end(task):
            chunks = keeper = TailKeeper(chunks)
    counted = _Counted(chunks, report)
    hook = task.hook
    with _open_part(task) as out, \
            mapper.output.open(out if hook is None else _HookedFile(out, task)) as writer:
        if mapper.kind == "command":
            from blockproc.command import run_command  # only --cmd jobs load it

            records_in, stderr_bytes = run_command(
                mapper.fn, counted, writer, delimiter=task.format.delimiter,
                open_stderr=lambda: open_output(task.output_fs, task.stderr_path))
        else:
            records_in = _run_function(mapper, task, counted, source, writer, bad)
    if keeper is not None and source is not None:
        tails.append(keeper.result(task, source))
    return writer, records_in, stderr_bytes


def _open_part(task: BlockTask) -> contextlib.AbstractContextManager[Any]:
    """Open the staged part-file; a job without output keeps no file."""
    if task.output_fs is None:
        return contextlib.nullcontext(_NullFile())
    opened: contextlib.AbstractContextManager[Any] = open_output(task.output_fs,
                                                                 task.staging_path)
    return opened


class _HookedFile:
    """Wrap a part-file so a task's hook fires after the first write."""

    def __init__(self, file: Any, task: BlockTask) -> None:
        self._file = file
        self._task = task
        self._fired = False

    def write(self, data: bytes) -> int:
        written: int = self._file.write(data)
        if not self._fired:
            self._fired = True
            assert self._task.hook is not None
            self._task.hook.fire("during_write", self._task)
        return written


class BadRecords:
    """The records an attempt skipped because the user function raised on them
    (Hadoop's skip mode, enabled by ``max_bad_records``)."""

    def __init__(self, task: BlockTask) -> None:
        self.task = task
        self.entries: list[dict[str, Any]] = []

    @property
    def enabled(self) -> bool:
        """True when records that raise are skipped rather than failing the attempt."""
        return self.task.max_bad_records is not None

    def add(self, number: int, record: Any, exc: BaseException) -> None:
        """Log record ``number`` of the block as skipped, or raise if there are too many."""
        limit = self.task.max_bad_records
        assert limit is not None
        self.entries.append({
            "block": self.task.block.id, "record": number, "offset": None,
            "preview": f"{record!r:.200}", "error": f"{type(exc).__name__}: {exc}",
        })
        if len(self.entries) > limit:
            raise TooManyBadRecordsError(
                f"{len(self.entries)} records of {self.task.describe()} raised, more than "
                f"max_bad_records={limit}; the last: {type(exc).__name__}: {exc}"
            ) from exc

    def save(self) -> None:
        """Write the log next to the staged part-file, with each record's byte offset."""
        if not self.entries or self.task.output_fs is None:  # no output: counted only
            return
        offsets = record_offsets(self.task, [e["record"] for e in self.entries])
        for entry in self.entries:
            entry["offset"] = offsets.get(entry["record"])
        text = "".join(json.dumps(e) + "\n" for e in self.entries)
        with open_output(self.task.output_fs, self.task.errors_path) as f:
            f.write(text.encode())


def record_offsets(task: BlockTask, numbers: list[int]) -> dict[int, int]:
    """Return the file byte offset of the given record numbers of a block (0 = its first).

    Reads the block again (only on the error path) and follows the format's sequential
    parse: one record per delimiter for ``lines`` and ``delimited``, non-blank lines for
    ``jsonl``, rows by the quote-aware grammar after the header for ``csv``. Empty where
    offsets within one file are unknown or not cheap: compressed inputs, packed small
    files, UTF-16/32 text and the other formats.
    """
    from blockproc.formats.csv_format import CSV  # error path only: not loaded by other jobs

    fmt = task.format
    name = getattr(fmt, "name", "")
    if not numbers or task.file.compression or task.block.files or \
            name not in ("lines", "delimited", "jsonl", "csv") or \
            code_unit(getattr(fmt, "encoding", None) or "utf-8") > 1:
        return {}
    wanted = set(numbers)
    offsets: dict[int, int] = {}
    with RangeSource(task.input_fs, task.file.path) as source:
        first = fmt.boundary(source.read, task.block.start, task.file.size,
                             max_record_size=task.max_record_size).offset
        if isinstance(fmt, CSV):
            data = b"".join(aligned_chunks(task, source))
            for number, start in enumerate(
                    fmt.row_starts(data, at_file_start=task.block.start == 0)):
                if number in wanted:
                    offsets[number] = first + start
                if len(offsets) == len(wanted):
                    break
            return offsets
        delimiter = fmt.delimiter
        skip_blank = name == "jsonl"  # a blank line is no record there
        record, base, carry = 0, first, b""
        for chunk in aligned_chunks(task, source):
            data = carry + chunk
            pos = 0
            while (found := data.find(delimiter, pos)) >= 0:
                if not skip_blank or data[pos:found].strip():
                    if record in wanted:
                        offsets[record] = base + pos
                    record += 1
                pos = found + len(delimiter)
            base += pos
            carry = data[pos:]
            if len(offsets) == len(wanted):
                return offsets
        if carry and (not skip_blank or carry.strip()) and record in wanted:
            offsets[record] = base  # the last record, without a final delimiter
    return offsets


class _Counted:
    """Iterate over chunks, counting their bytes and reporting progress."""

    def __init__(self, chunks: Iterable[bytes], report: ReportFn) -> None:
        self._chunks = chunks
        self._report = report
        self.bytes_done = 0
        self.records_done = 0

    def __iter__(self) -> Iterator[bytes]:
        return self.over(self._chunks)

    def over(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Iterate over ``chunks`` instead, counting and reporting them the same way
        (a block read again counts again: progress is the bytes read)."""
        for chunk in chunks:
            yield chunk
            self.bytes_done += len(chunk)
            self._report(self.bytes_done, self.records_done)


def _run_block_function(fn: Callable[[Any], Any], task: BlockTask, chunks: _Counted,
                        source: RangeSource | None, writer: PartWriter) -> int:
    """Call a per-block ``fn`` once, write what it returns; return the block's records."""
    at_file_start = task.block.start == 0
    decoder = decodes_blocks(task.format)
    if decoder is not None:  # csv, jsonl, parquet: Table; fixed: ndarray
        value = decoder.decode_block(b"".join(chunks), at_file_start=at_file_start)
        _write_block_result(fn(value), writer, task)
        return len(value)
    batch: Batch
    if source is None or reads_own_blocks(task.format) is not None:
        batch = Batch(task.block, b"".join(chunks), task.format, at_file_start)  # read once
    else:  # a plain file's range: read again as the function asks for it
        batch = _ReadOnUse(task, source, chunks)
    try:
        _write_block_result(fn(batch), writer, task)
        made = batch._records
        if made is not None and made.is_list:
            return len(made)
        if made is not None and made.streamed_count is not None:
            return made.streamed_count
        return count_records(batch.data, task.format.delimiter)
    finally:
        if isinstance(batch, _ReadOnUse):
            batch.ended = True


class _ReadOnUse(Batch):
    """The :class:`Batch` of a plain file's block: ``data`` is read on first use (one
    ranged read), and ``records`` streams from the file ~1 MiB at a time without it,
    so a function that only loops over the records never holds the block's bytes."""

    def __init__(self, task: BlockTask, source: RangeSource, counted: _Counted) -> None:
        self.block, self.format = task.block, task.format
        self._counted = counted  # reports the bytes read as progress, as a full read does
        self.at_file_start = task.block.start == 0
        self._records = None
        self._task, self._source = task, source
        self._bytes: bytes | None = None
        self.ended = False

    @property
    def data(self) -> bytes:
        """The block's record-aligned bytes (read on first use)."""
        if self._bytes is None:
            self._check_open()
            self._bytes = b"".join(self._counted.over(aligned_range(self._task, self._source)))
        return self._bytes

    @data.setter
    def data(self, value: bytes) -> None:
        self._bytes = value

    @property
    def records(self) -> Records:
        """The block's records (see :attr:`Batch.records`), streamed from the file."""
        if self._records is None:
            self._records = Records(None, self.format, at_file_start=self.at_file_start,
                                    chunk_size=CHUNK_SIZE, chunks=self._pieces)
        return self._records

    def _pieces(self) -> Iterable[bytes]:
        data = self._bytes
        if data is not None:  # read already: no need to read again
            return (data[i:i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE))
        self._check_open()
        return self._counted.over(aligned_chunks(self._task, self._source))

    def _check_open(self) -> None:
        if self.ended:
            raise RuntimeError(
                f"batch.records of {self._task.describe()} was read after the function "
                f"returned; its input is closed: keep list(batch.records) instead")


def _run_function(mapper: Mapper, task: BlockTask, chunks: _Counted,
                  source: RangeSource | None, writer: PartWriter, bad: BadRecords) -> int:
    fn = mapper.fn
    at_file_start = task.block.start == 0
    if mapper.kind == "block":
        return _run_block_function(fn, task, chunks, source, writer)
    if isinstance(fn, BatchFunction):
        return _run_batches(fn, task, chunks, writer)
    records_in = 0
    for records in task.format.iter_batches(chunks, at_file_start=at_file_start):
        results: list[Any] = []
        resume_at = 0
        while True:
            try:  # extend keeps the results made before a raise: len(results) is its record
                results.extend(map(fn, islice(records, resume_at, None) if resume_at else records))
                break
            except Exception as exc:
                number = len(results)
                if not bad.enabled:
                    offset = record_offsets(task, [records_in + number]).get(records_in + number)
                    at = "" if offset is None else f" at byte offset {offset}"
                    exc.add_note(f"in {task.describe()}, record {records_in + number} of the "
                                 f"block{at}: {records[number]!r:.200}")
                    raise
                bad.add(records_in + number, records[number], exc)
                results.append(None)
                resume_at = number + 1
        try:
            writer.write_results(results)
        except ReturnTypeError as exc:
            raise _refused_record(exc, mapper.output, task, records_in, records,
                                  results) from None
        records_in += len(records)
        chunks.records_done = records_in
    return records_in


class BatchFunction(FrozenSlots):
    """The function of :func:`blockproc.map_batches`: ``fn(records)`` gets a list of
    consecutive records of one block, about ``batch_size`` bytes of input, and returns
    an iterable of results, each like a per-record function's (a line, None, a list)."""

    _fields = ("fn", "batch_size")
    __slots__ = _fields
    fn: Callable[[list[Any]], Any]
    batch_size: int

    def __init__(self, fn: Callable[[list[Any]], Any], batch_size: int = CHUNK_SIZE) -> None:
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "batch_size", batch_size)

    def __call__(self, records: list[Any]) -> Any:
        return self.fn(records)


def _run_batches(fn: BatchFunction, task: BlockTask, chunks: _Counted,
                 writer: PartWriter) -> int:
    """Call ``fn`` once per batch of the block's records; write what it returns."""
    records_in = 0
    for records in _sized_batches(task, chunks, fn.batch_size):
        where = (f"the batch of records {records_in} to {records_in + len(records) - 1} "
                 f"of {task.describe()}")
        try:
            results = fn.fn(records)
            if isinstance(results, Iterator):
                results = list(results)
        except Exception as exc:
            exc.add_note(f"in {where}")
            raise
        if results is not None and (isinstance(results, (str, bytes, dict))
                                    or not isinstance(results, Iterable)):
            raise ReturnTypeError(
                f"for {where}: the function returned {type(results).__name__} "
                f"{results!r:.80}; map_batches' function must return a list (or another "
                f"iterable) with one result per output record, such as [line, ...]")
        try:
            writer.write_results([] if results is None else
                                 results if type(results) is list else list(results))
        except ReturnTypeError as exc:
            raise ReturnTypeError(f"for {where}: {exc}") from None
        records_in += len(records)
        chunks.records_done = records_in
    return records_in


def _sized_batches(task: BlockTask, chunks: Iterable[bytes], size: int
                   ) -> Iterator[list[Any]]:
    """Yield the block's records in lists of about ``size`` bytes of input each: the
    format's lists (one per ~1 MiB read) split or joined, never empty."""
    read = done = 0

    def counted() -> Iterator[bytes]:
        nonlocal read
        for chunk in chunks:
            read += len(chunk)
            yield chunk

    pending: list[Any] = []
    pending_bytes = 0.0
    for records in task.format.iter_batches(counted(), at_file_start=task.block.start == 0):
        nbytes, done = read - done, read
        if not records:
            continue
        parts = max(1, min(len(records), round(nbytes / size)))
        step = -(-len(records) // parts)
        for start in range(0, len(records), step):
            piece = records if parts == 1 else records[start:start + step]
            pending = piece if not pending else pending + piece
            pending_bytes += nbytes / parts
            if pending_bytes >= size * 0.75:
                yield pending
                pending, pending_bytes = [], 0.0
    if pending:
        yield pending


def count_records(data: bytes, delimiter: bytes) -> int:
    """Return how many records aligned ``data`` holds, without decoding them.

    Examples
    --------
    >>> count_records(b"a\\nb\\n", b"\\n"), count_records(b"a\\nb", b"\\n")
    (2, 2)
    >>> count_records(b"", b"\\n")
    0
    """
    if not data:
        return 0
    if has_border(delimiter):  # b"aaa" ends with b"aa" yet holds b"" and a final b"a"
        return len(data.split(delimiter)) - (0 if data.split(delimiter)[-1] else 1)
    return data.count(delimiter) + (0 if data.endswith(delimiter) else 1)


def _write_block_result(result: Any, writer: PartWriter, task: BlockTask) -> None:
    try:
        writer.write_block(result)
    except ReturnTypeError as exc:
        raise ReturnTypeError(f"for {task.describe()}: {exc}") from None


class _NullFile:
    """A part-file that keeps nothing (to find which result a writer refuses)."""

    def write(self, data: bytes) -> int:
        return len(data)


def _refused_record(exc: ReturnTypeError, output: OutputFormat, task: BlockTask,
                    records_in: int, records: list[Any], results: list[Any]) -> ReturnTypeError:
    """Return ``exc`` naming the record whose result the writer refused, with its number
    in the block and its byte offset (found again on this error path only)."""
    probe = output.open(_NullFile())
    for index, result in enumerate(results):
        try:
            probe.write_results([result])
        except ReturnTypeError:
            number = records_in + index
            offset = record_offsets(task, [number]).get(number)
            at = "" if offset is None else f" at byte offset {offset}"
            return ReturnTypeError(f"for record {number} of {task.describe()}{at} "
                                   f"({records[index]!r:.200}): {exc}")
        except Exception:  # another error of that result: not the one refused
            continue
    return ReturnTypeError(f"for a record of {task.describe()}: {exc}")
