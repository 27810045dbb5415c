"""Reading inputs: ranged reads of one block (:class:`RangeSource`), decompressed
streams, zstd frames and whole small files.
"""

from __future__ import annotations

import io
import itertools
import sys
import zlib
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from blockproc.errors import (
    InputChangedError,
)
from blockproc.model import InputFile
from blockproc.storage.listing import changed_message, verify_unchanged
from blockproc.storage.retry import RetryPolicy, retry_call
from blockproc.storage.urls import LOCAL_PROTOCOLS, protocol_of

if TYPE_CHECKING:
    from concurrent.futures import Future

    from fsspec import AbstractFileSystem
else:
    AbstractFileSystem = Any



REMOTE_READ_SIZE = 64 * 2**20 + 64 * 2**10
"""Bytes per request when a worker reads its block from a remote filesystem: a block of
the default size (64 MiB) and the window past its end that finds its last record (up to
64 KiB) in one ranged GET, as a hand-written reader fetches it. Each
GET has a cost of its own besides its bytes (SeaweedFS: ~20 ms of server CPU, even for
4 KiB, on top of ~45 ms per 8 MiB), so 8 MiB requests cost the store ~40 % more CPU per
block; the worker holds at most this much of its block at once."""


class RangeSource:
    """Ranged reads from one file that count the bytes they fetch.

    ``read(start, end)`` returns exactly ``end - start`` bytes, fewer only at end of file:
    short reads from the storage layer are retried until the range is complete. The file
    is opened without read-ahead (``block_size=0``, ``cache_type="none"``), so on an
    object store every ``read`` is one ranged GET of exactly that range.

    ``limit`` allows fewer, larger requests without fetching more bytes: a read that
    ends at or before ``limit`` may fetch up to ``read_size`` bytes (default 64 MiB on
    remote filesystems, none on local ones), never past ``limit``, and later reads are
    served from them. A worker passes its block's nominal end, which it reads anyway.
    With ``begin`` (where the block's bytes start), the first request, when its read lies
    in ``[begin, limit]`` and ``[begin, limit)`` fits in one request, fetches all of
    ``[begin, limit)``: the first block of a file reads the window past its end first (its
    start needs no search), and is one GET too, not that window and then the block.

    With ``expected`` (the :class:`~blockproc.model.InputFile` the plan saw), opening
    checks once that the file still has the planned size and ETag/mtime, and raises
    :class:`InputChangedError` if not. Transient errors are retried (``retry``).
    """

    def __init__(self, fs: AbstractFileSystem, path: str, *,
                 expected: InputFile | None = None, retry: RetryPolicy | None = None,
                 limit: int | None = None, read_size: int | None = None,
                 begin: int | None = None) -> None:
        self.path = path
        self.bytes_read = 0
        self.num_requests = 0
        self._fs = fs
        self._retry = retry  # None: the process's policy, looked up only when a try fails
        self._limit = limit
        self._begin = begin
        if read_size is None:
            read_size = 0 if protocol_of(fs) in LOCAL_PROTOCOLS else REMOTE_READ_SIZE
        self._read_size = read_size
        self._buffer = b""
        self._buffer_start = 0
        if expected is not None:
            fs.invalidate_cache(path)  # the open must see the object as it is now
        try:
            self._file = retry_call(
                lambda: fs.open(path, "rb", block_size=0, cache_type="none"),
                f"to open {path!r}", self._retry)
        except FileNotFoundError:
            if expected is None:
                raise
            raise InputChangedError(changed_message(path, "it was deleted")) from None
        if expected is not None:
            details = getattr(self._file, "details", None)  # s3fs, gcsfs: the open's HEAD
            fresh = details if isinstance(details, Mapping) and "size" in details else None
            try:
                verify_unchanged(fs, expected, fresh)
            except BaseException:
                self._file.close()
                raise

    def read(self, start: int, end: int) -> bytes:
        """Return the bytes ``[start, end)``."""
        if end <= start:
            return b""
        buffer_end = self._buffer_start + len(self._buffer)
        if self._buffer and self._buffer_start <= start < buffer_end:
            head = self._buffer[start - self._buffer_start:end - self._buffer_start]
            if end <= buffer_end:
                return head
            return head + self.read(buffer_end, end)
        fetch_start, fetch_end, limit = start, end, self._limit
        if limit is not None and end <= limit and end - start < self._read_size:
            begin = self._begin
            if (begin is not None and not self.num_requests and begin <= start
                    and limit - begin <= self._read_size):
                fetch_start = begin
            fetch_end = min(limit, fetch_start + self._read_size)
        data = self._fetch(fetch_start, fetch_end)
        if fetch_start < start or fetch_end > end:
            self._buffer, self._buffer_start = data, fetch_start
            return data[start - fetch_start:end - fetch_start]
        return data

    def _fetch(self, start: int, end: int) -> bytes:
        self.num_requests += 1
        try:
            data = retry_call(lambda: self._read(start, end),
                              f"to read {self.path!r} [{start}, {end})", self._retry)
        except OSError as exc:
            if "FileExpired" in {cls.__name__ for cls in type(exc).__mro__}:
                raise InputChangedError(changed_message(
                    self.path, "its ETag no longer matches the one it was opened with"
                )) from exc
            raise
        self.bytes_read += len(data)
        return data

    def _read(self, start: int, end: int) -> bytes:
        self._file.seek(start)
        data = self._file.read(end - start)
        if len(data) < end - start and data:
            pieces = [data]
            got = len(data)
            while got < end - start:
                more = self._file.read(end - start - got)
                if not more:
                    break
                pieces.append(more)
                got += len(more)
            data = b"".join(pieces)
        return bytes(data)

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> RangeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_decompressed(fs: AbstractFileSystem, path: str, compression: str) -> io.RawIOBase:
    """Open a compressed file for sequential reading of its decompressed bytes."""
    return retry_call(  # type: ignore[no-any-return]
        lambda: fs.open(path, "rb", compression=compression), f"to open {path!r}")


def zstd_frames(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress the zstd stream in ``chunks`` frame after frame.

    zstandard's stream reader (what fsspec opens) stops after the first frame, so a file
    of several frames (``zstd`` of concatenated files, ``pzstd``) would lose the others,
    and it returns nothing for a truncated frame. Here a last frame that is not complete
    raises ``EOFError``, and corrupt data ``zstandard.ZstdError``.

    Examples
    --------
    >>> import zstandard
    >>> two = zstandard.compress(b"first ") + zstandard.compress(b"second")
    >>> b"".join(zstd_frames([two[:5], two[5:]]))
    b'first second'
    >>> b"".join(zstd_frames([two[:-3]]))
    Traceback (most recent call last):
    ...
    EOFError: the last zstd frame ends before it is complete
    """
    import zstandard

    frame = zstandard.ZstdDecompressor().decompressobj()
    fed = False
    for chunk in chunks:
        pending = chunk
        while pending:
            data = frame.decompress(pending)
            fed = True
            if data:
                yield data
            pending = b""
            if frame.eof:  # the next frame starts in what is left
                pending = frame.unused_data
                frame = zstandard.ZstdDecompressor().decompressobj()
                fed = False
    if fed and not frame.eof:
        raise EOFError("the last zstd frame ends before it is complete")


def read_whole(fs: AbstractFileSystem, file: InputFile) -> bytes:
    """Return all of ``file`` (decompressed if it is compressed), after checking that it
    is still the file the plan saw; one ranged read for an uncompressed file."""
    if file.compression == "zstd":
        with RangeSource(fs, file.path, expected=file) as source:
            return b"".join(zstd_frames([source.read(0, file.size)]))
    if file.compression:
        verify_unchanged(fs, file)
        with open_decompressed(fs, file.path, file.compression) as f:
            return f.read()
    with RangeSource(fs, file.path, expected=file) as source:
        data = source.read(0, file.size)
    if len(data) != file.size:
        raise InputChangedError(changed_message(
            file.path, f"{len(data)} bytes were read, not the planned {file.size}"))
    return data


def iter_whole_files(fs: AbstractFileSystem, files: Sequence[InputFile], *,
                     concurrency: int = 8) -> Generator[tuple[InputFile, bytes]]:
    """Yield ``(file, read_whole(fs, file))`` for each of ``files``, in order.

    Up to ``concurrency`` files are fetched at once, so many small objects cost about
    one round trip per ``concurrency`` files instead of one each; at most that many
    files are held ahead of the consumer.
    """
    if concurrency <= 1 or len(files) <= 1:
        for file in files:
            yield file, read_whole(fs, file)
        return
    from concurrent.futures import ThreadPoolExecutor  # ~1.5 ms; a block's reads need none

    pool = ThreadPoolExecutor(max_workers=min(concurrency, len(files)),
                              thread_name_prefix="blockproc-read")
    pending: deque[tuple[InputFile, Future[bytes]]] = deque()
    upcoming = iter(files)
    try:
        for file in itertools.islice(upcoming, concurrency):
            pending.append((file, pool.submit(read_whole, fs, file)))
        while pending:
            file, future = pending.popleft()
            data = future.result()
            for more in itertools.islice(upcoming, 1):
                pending.append((more, pool.submit(read_whole, fs, more)))
            yield file, data
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True)
        for _, future in pending:  # consume what already ran (errors included)
            if not future.cancelled():
                future.exception()


def is_corrupt_stream(exc: BaseException) -> bool:
    """Return True for the errors a decompressor raises on a truncated or corrupt file
    (not for a storage error met while reading it, which may pass on the next try).

    Examples
    --------
    >>> import gzip
    >>> try:
    ...     gzip.decompress(gzip.compress(b"x" * 100)[:-10])
    ... except Exception as exc:
    ...     is_corrupt_stream(exc)
    True
    >>> is_corrupt_stream(ConnectionResetError()), is_corrupt_stream(OSError(5, "EIO"))
    (False, False)
    """
    if isinstance(exc, (EOFError, zlib.error)):
        return True
    for module, name in (("gzip", "BadGzipFile"), ("lzma", "LZMAError")):
        loaded = sys.modules.get(module)  # not loaded: no file was read through it
        if loaded is not None and isinstance(exc, getattr(loaded, name)):
            return True
    if type(exc).__name__ == "ZstdError":
        return True
    return type(exc) is OSError and exc.errno is None and exc.args == ("Invalid data stream",)
