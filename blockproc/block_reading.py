"""Read the bytes of one block: only its slice of the input, cut at the records it owns.

The master never sends data; each attempt reads its own byte range (plus the overhang
that finishes its last record), a compressed file whole, or the small files packed
into one block, one after another.
"""

from __future__ import annotations

import contextlib
import itertools
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from blockproc._deps import require
from blockproc.errors import InputError
from blockproc.formats.hooks import reads_own_blocks
from blockproc.model import FileTail
from blockproc.storage import (
    RangeSource,
    is_corrupt_stream,
    iter_whole_files,
    open_decompressed,
    verify_unchanged,
    zstd_frames,
)
from blockproc.task import BlockTask

CHUNK_SIZE = 1 << 20
"""Bytes per read and per batch handed to the user code (~1 MiB keeps batches in cache)."""

TAIL_SIZE = 4096
"""Bytes at the end of each input file whose CRC-32 a block records (``FileTail``), so
``if_exists="append"`` can tell a file that only grew from one that was rewritten."""


def file_tail(path: str, size: int, tail: bytes) -> FileTail:
    """Return the :class:`~blockproc.model.FileTail` of a file of ``size`` bytes ending
    with ``tail`` (its last ``min(TAIL_SIZE, size)`` bytes).

    Examples
    --------
    >>> file_tail("a.log", 4, b"a\\nb\\n")
    FileTail(path='a.log', size=4, length=4, crc32='crc32:18572a97')
    """
    return FileTail(path, size, len(tail), f"crc32:{zlib.crc32(tail):08x}")


class TailKeeper:
    """Pass a block's chunks through, keeping the last :data:`TAIL_SIZE` bytes: for the
    block that reads a file's end, the file's tail, at no extra read.

    Examples
    --------
    >>> keeper = TailKeeper([b"ab", b"cd"])
    >>> b"".join(keeper), keeper.tail, keeper.exhausted
    (b'abcd', b'abcd', True)
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.tail = b""
        self.exhausted = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            yield chunk
            if len(chunk) >= TAIL_SIZE:
                self.tail = bytes(chunk[-TAIL_SIZE:])
            else:
                self.tail = (self.tail + bytes(chunk))[-TAIL_SIZE:]
        self.exhausted = True

    def result(self, task: BlockTask, source: RangeSource) -> FileTail:
        """Return the tail of ``task.file``, reading only what the chunks did not hold
        (a block that owns under 4 KiB, or a consumer that stopped early)."""
        size = task.file.size
        want = min(TAIL_SIZE, size)
        tail = self.tail if self.exhausted else b""
        if len(tail) < want:
            tail = source.read(size - want, size - len(tail)) + tail
        return file_tail(task.file.path, size, tail)


def reads_file_end(task: BlockTask) -> bool:
    """True if ``task`` reads the end of a plain (uncompressed, unpacked) file through a
    delimiter-aligned range: that block records the file's tail.

    >>> from blockproc.formats import Lines
    >>> from blockproc.model import Block, InputFile
    >>> def task(start, end):
    ...     return BlockTask(Block(0, "a", start, end), 1, 2, InputFile("a", 10), Lines(),
    ...                      None, None, "part-00000.txt", "")
    >>> reads_file_end(task(0, 5)), reads_file_end(task(5, 10))
    (False, True)
    """
    return (not task.block.files and task.file.compression is None and task.file.size > 0
            and task.block.end >= task.file.size and reads_own_blocks(task.format) is None)


def aligned_chunks(task: BlockTask, source: RangeSource) -> Iterator[bytes]:
    """Yield the bytes of the records ``task.block`` owns, in ``CHUNK_SIZE`` pieces.

    Reads only the slice plus the overhang that finishes its last record; the bytes read
    to find either boundary are reused, not fetched again. The bytes before the block's
    nominal end are yielded before its last boundary is looked for (every record that
    starts before the end is the block's: a boundary is the first record start at or
    after its position), so a block streamed from a store is decoded as it arrives.
    """
    block, size, fmt = task.block, task.file.size, task.format
    first = fmt.boundary(source.read, block.start, size, max_record_size=task.max_record_size)
    known = [(first.data_start, first.data)]
    middle = min(block.end, size)
    yield from _read_span(task, source, first.offset, middle, known)
    if block.end >= size:
        return
    last = fmt.boundary(source.read, block.end, size, max_record_size=task.max_record_size)
    if last.offset < block.end:
        raise RuntimeError(
            f"{type(fmt).__name__}.boundary({block.end}) returned {last.offset}, before the "
            f"position it was given; a boundary must be the first record start at or after it")
    known.append((last.data_start, last.data))
    yield from _read_span(task, source, max(first.offset, middle), last.offset, known)


def _read_span(task: BlockTask, source: RangeSource, pos: int, end: int,
               known: list[tuple[int, bytes]]) -> Iterator[bytes]:
    """Yield the bytes ``[pos, end)`` in ``CHUNK_SIZE`` pieces, taking those in ``known``
    (``(start, data)`` pairs, bytes already read) from there."""
    while pos < end:
        for start, data in known:
            if start <= pos < start + len(data):
                stop = min(end, start + len(data))
                yield data[pos - start:stop - start]
                pos = stop
                break
        else:
            stop = min(end, pos + CHUNK_SIZE)
            for start, data in known:
                if pos < start < stop and data:
                    stop = start
            data = source.read(pos, stop)
            if len(data) < stop - pos:
                raise OSError(
                    f"{task.file.path!r} ended at byte {pos + len(data)}, before the "
                    f"{task.file.size} bytes it had when the job was planned; the input "
                    f"changed"
                )
            yield data
            pos = stop


def aligned_range(task: BlockTask, source: RangeSource) -> Iterator[bytes]:
    """Yield the bytes of the records ``task.block`` owns as one piece, read in one call.

    For per-block mappers, which need the whole range at once anyway: one ranged read of
    the aligned range avoids reading it in ``CHUNK_SIZE`` pieces and joining them (a
    second copy of the block). Only the small windows read to find the two boundaries
    are fetched twice.
    """
    block, size, fmt = task.block, task.file.size, task.format
    first = fmt.boundary(source.read, block.start, size, max_record_size=task.max_record_size)
    if block.end >= size:
        end = size
    else:
        end = fmt.boundary(source.read, block.end, size,
                           max_record_size=task.max_record_size).offset
    if end <= first.offset:
        return
    data = source.read(first.offset, end)
    if len(data) < end - first.offset:
        raise OSError(
            f"{task.file.path!r} ended at byte {first.offset + len(data)}, before the "
            f"{size} bytes it had when the job was planned; the input changed"
        )
    yield data


def source_chunks(task: BlockTask, source: RangeSource, *,
                   whole: bool = False) -> Iterator[bytes]:
    """Return the block's chunks: the aligned byte range (in one piece if ``whole``), or
    what a format that reads its own blocks yields (Parquet: the row groups the block
    owns)."""
    reader = reads_own_blocks(task.format)
    if reader is not None:
        b = task.block
        return reader.read_block(source.read, b.start, b.end, task.file.size)
    if whole:
        return aligned_range(task, source)
    return aligned_chunks(task, source)


def _zstd_chunks(task: BlockTask) -> Iterator[bytes]:
    """Decompress a ``.zst`` input frame after frame (:func:`~blockproc.storage.zstd_frames`),
    and fail on a truncated or corrupt one as an input error naming the file."""
    zstd = require("zstandard", "reading .zst inputs")
    size = task.file.size
    with RangeSource(task.input_fs, task.file.path, expected=task.file) as source:
        raw = (source.read(pos, min(size, pos + CHUNK_SIZE))
               for pos in range(0, size, CHUNK_SIZE))
        try:
            yield from zstd_frames(raw)
        except (EOFError, zstd.ZstdError) as exc:
            raise _corrupt(task, exc) from exc


def _corrupt(task: BlockTask, exc: BaseException) -> InputError:
    return InputError(
        f"{task.file.path!r} is not a complete {task.file.compression} stream: "
        f"{type(exc).__name__}: {exc}; the file is truncated or corrupt, so every attempt "
        f"would fail the same way: re-create or re-download it")


def decompressed_chunks(task: BlockTask) -> Iterator[bytes]:
    if task.file.compression == "zstd":
        yield from _zstd_chunks(task)
        return
    verify_unchanged(task.input_fs, task.file)
    compression = task.file.compression or ""
    with open_decompressed(task.input_fs, task.file.path, compression) as f:
        while True:
            try:
                chunk = f.read(CHUNK_SIZE)
            except Exception as exc:
                if is_corrupt_stream(exc):
                    raise _corrupt(task, exc) from exc
                raise
            if not chunk:
                break
            yield chunk


def combined_chunks(task: BlockTask, *, records: bool = True,
                    tails: list[FileTail] | None = None) -> Iterator[bytes]:
    """Yield the files of a combined block (``task.block.files``) whole, one after another.

    Each file is checked against the plan and fetched in one ranged read (or decompressed
    whole), several at a time. A file whose last record has no delimiter gets one, and a
    UTF-8 BOM that the format drops at the start of a file is dropped from each later
    file too, so the stream decodes into every file's own records, in order, each file
    exactly once. With ``records`` (the stream is decoded, not piped to a command) a
    file that ends with a CR keeps it as data, as the format reads that file alone.
    ``tails`` gets the tail of each uncompressed file (see :class:`TailKeeper`).
    """
    delimiter = task.format.delimiter
    probe = b"\xef\xbb\xbf" + delimiter  # does this format drop a BOM at a file start?
    drops_bom = (list(task.format.iter_batches([probe], at_file_start=True))
                 != list(task.format.iter_batches([probe], at_file_start=False)))
    # Does it drop a CR before the delimiter (CRLF)? Then a file that ends with a CR and
    # no delimiter gets CR + delimiter, so its CR stays data, as when it is read alone.
    cr_end = b"\r" + delimiter if records and list(task.format.iter_batches(
        [b"\r" + delimiter], at_file_start=False)) == [[""]] else delimiter
    with contextlib.closing(iter_whole_files(task.input_fs, task.block.files)) as files:
        for index, (file, whole) in enumerate(_checked(files, task)):
            if tails is not None and not file.compression:
                tails.append(file_tail(file.path, file.size, whole[-TAIL_SIZE:]))
            bom = index and drops_bom and whole.startswith(b"\xef\xbb\xbf")
            data = whole[3:] if bom else whole
            if data:
                yield data
                if not data.endswith(delimiter):
                    yield cr_end if data.endswith(b"\r") else delimiter


def _checked(files: Iterator[tuple[Any, bytes]], task: BlockTask
             ) -> Iterator[tuple[Any, bytes]]:
    """Yield from ``files`` (the whole files of a packed block, in order); a file that
    is not a complete compressed stream fails as an input error naming it."""
    for index in itertools.count():
        try:
            item = next(files)
        except StopIteration:
            return
        except Exception as exc:
            if not is_corrupt_stream(exc) or index >= len(task.block.files):
                raise
            file = task.block.files[index]
            raise InputError(
                f"{file.path!r} (packed into {task.describe()}) is not a complete "
                f"{file.compression} stream: {type(exc).__name__}: {exc}; the file is "
                f"truncated or corrupt, so every attempt would fail the same way: re-create "
                f"or re-download it") from exc
        yield item
