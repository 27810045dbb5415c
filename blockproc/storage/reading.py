"""Reading inputs: ranged reads of one block (:class:`RangeSource`), decompressed
streams, zstd frames and whole small files.
"""

from __future__ import annotations

import errno
import io
import itertools
import sys
import threading
import zlib
from bisect import bisect_right
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from blockproc.errors import (
    InputChangedError,
)
from blockproc.model import InputFile
from blockproc.storage.aws_models import is_s3fs
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

PIECE_SIZE = 1 << 20
"""Bytes per piece of a streamed GET (:class:`ObjectStream`): one hand-off from the
filesystem's event loop per piece, and a block's first records are decoded as soon as
its first piece is in."""

STREAM_MIN_SIZE = 2 * PIECE_SIZE
"""A read-ahead at least this large is streamed (where the filesystem can), not fetched
whole before the read that asked for it returns."""

STREAM_POLL = 1.0
"""Seconds a reader waits for a piece before it checks that the GET is still running."""


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
    On S3 (s3fs) such a request of :data:`STREAM_MIN_SIZE` or more is streamed
    (:class:`ObjectStream`): a read waits only for its own bytes, not for the whole GET.

    With ``expected`` (the :class:`~blockproc.model.InputFile` the plan saw), the reads
    are of the planned file or raise :class:`InputChangedError`: on S3 each GET sends the
    planned ETag as If-Match (:func:`planned_etag`; no HEAD first), elsewhere opening
    checks once that the file still has the planned size and ETag/mtime. Transient errors
    are retried (``retry``).
    """

    def __init__(self, fs: AbstractFileSystem, path: str, *,
                 expected: InputFile | None = None, retry: RetryPolicy | None = None,
                 limit: int | None = None, read_size: int | None = None,
                 begin: int | None = None) -> None:
        self.path = path
        self.bytes_read = 0
        self.num_requests = 0
        self._fs = fs
        self.retry = retry  # None: the process's policy, looked up only when a try fails
        self._limit = limit
        self._begin = begin
        if read_size is None:
            read_size = 0 if protocol_of(fs) in LOCAL_PROTOCOLS else REMOTE_READ_SIZE
        self._read_size = read_size
        self._held: Held | None = None  # the bytes fetched ahead of the reads
        self._expected = expected
        # on S3 the planned ETag goes with each GET (If-Match): no HEAD before the first
        if_match = planned_etag(fs, expected) if read_size else None
        if expected is not None:  # the open, and later ones, must see the object as it is
            fs.invalidate_cache(path)
        sized = {"size": expected.size} if if_match is not None and expected else {}
        try:
            self._file = retry_call(
                lambda: fs.open(path, "rb", block_size=0, cache_type="none", **sized),
                f"to open {path!r}", self.retry)
        except FileNotFoundError:
            if expected is None:
                raise
            raise InputChangedError(changed_message(path, "it was deleted")) from None
        if if_match is not None and expected is not None:  # what the HEAD would have said
            self._file.details = {"name": path, "size": expected.size, "ETag": if_match}
            self._file.read_kw = {**self._file.read_kw, "IfMatch": if_match}
        elif expected is not None:
            details = getattr(self._file, "details", None)  # s3fs, gcsfs: the open's HEAD
            fresh = details if isinstance(details, Mapping) and "size" in details else None
            try:
                verify_unchanged(fs, expected, fresh)
            except BaseException:
                self._file.close()
                raise
        self._opener = S3Opener.of(self._file) if read_size else None

    def read(self, start: int, end: int) -> bytes:
        """Return the bytes ``[start, end)``."""
        if end <= start:
            return b""
        held = self._held
        if held is None or not held.start <= start < held.end:
            data = self._fetch_for(start, end)
            if data is not None:
                return data
            held = self._held  # streaming from start on
            assert held is not None
        head = held.get(start, end)
        opener = self._opener
        if not head or start + len(head) >= (end if opener is None else min(end, opener.size)):
            return head  # all of it, or all there is before the end of the file
        return head + self.read(start + len(head), end)

    def _fetch_for(self, start: int, end: int) -> bytes | None:
        """Fetch what a read of ``[start, end)`` needs and return its bytes, or start a
        stream that holds them and return None."""
        fetch_start, fetch_end, limit = start, end, self._limit
        if limit is not None and end <= limit and end - start < self._read_size:
            begin = self._begin
            if (begin is not None and not self.num_requests and begin <= start
                    and limit - begin <= self._read_size):
                fetch_start = begin
            fetch_end = min(limit, fetch_start + self._read_size)
        ahead = fetch_start < start or fetch_end > end
        if ahead and self._opener is not None and fetch_end - fetch_start >= STREAM_MIN_SIZE:
            fetch_end = min(fetch_end, self._opener.size)
            if fetch_end <= start:
                return b""
            self._hold(Held(fetch_start, stream=ObjectStream(
                self, self._opener, fetch_start, fetch_end)))
            return None
        data = self._fetch(fetch_start, fetch_end)
        if ahead:
            self._hold(Held(fetch_start, data))
            return data[start - fetch_start:end - fetch_start]
        return data

    def _hold(self, held: Held) -> None:
        if self._held is not None:
            self._held.close()
        self._held = held

    def _fetch(self, start: int, end: int) -> bytes:
        self.num_requests += 1
        try:
            data = retry_call(lambda: self._read(start, end),
                              f"to read {self.path!r} [{start}, {end})", self.retry)
        except OSError as exc:
            raise self.changed(exc) from exc
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

    def changed(self, exc: OSError) -> Exception:
        """Return the error to raise for ``exc``, a read's: :class:`InputChangedError`
        where it says the object is not the planned one any more (its ETag refused, or
        deleted after it was planned: a HEAD then says what changed), else ``exc``."""
        names = {cls.__name__ for cls in type(exc).__mro__}
        refused = "FileExpired" in names or (exc.errno == errno.EINVAL
                                             and "pre-conditions" in str(exc))  # If-Match
        deleted = isinstance(exc, FileNotFoundError) and self._expected is not None
        if not refused and not deleted:
            return exc
        if self._expected is not None:  # say what changed: one HEAD, on failure only
            try:
                verify_unchanged(self._fs, self._expected)
            except InputChangedError as found:
                return found
        return InputChangedError(changed_message(
            self.path, "its ETag no longer matches the one it was opened with"))

    def close(self) -> None:
        """Close the file (and a GET still streaming)."""
        if self._held is not None:
            self._held.close()
        self._file.close()

    def __enter__(self) -> RangeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Held:
    """The bytes ``[start, end)`` of a file that a :class:`RangeSource` fetched ahead of
    its reads, kept as the pieces they came in (never joined into one buffer: a fresh
    64 MiB buffer costs ~50 ms of page faults and copying per block). With a ``stream``
    the pieces arrive as reads ask for them, so a read returns once its own bytes are in.

    Examples
    --------
    >>> held = Held(100, b"abcdef")
    >>> held.get(101, 104), held.get(104, 200), held.end
    (b'bcd', b'ef', 106)
    """

    def __init__(self, start: int, data: bytes = b"",
                 stream: ObjectStream | None = None) -> None:
        self.start = start
        self.end = start + len(data) if stream is None else stream.end
        self.filled = start + len(data)  # the pieces hold [start, filled)
        self._starts = [start] if data else []
        self._pieces = [data] if data else []
        self._stream = stream

    def get(self, start: int, end: int) -> bytes:
        """Return the bytes ``[start, min(end, self.end))``; ``start`` must be held."""
        self._fill(min(end, self.end))
        end = min(end, self.end)  # the object may have ended early
        if end <= start:
            return b""
        index = bisect_right(self._starts, start) - 1
        piece = self._pieces[index]
        offset = start - self._starts[index]
        if offset + end - start <= len(piece):
            if offset == 0 and len(piece) == end - start:
                return piece
            return piece[offset:offset + end - start]
        parts = [memoryview(piece)[offset:]]
        got = len(piece) - offset
        while got < end - start:
            index += 1
            parts.append(memoryview(self._pieces[index])[:end - start - got])
            got += len(parts[-1])
        return b"".join(parts)

    def _fill(self, end: int) -> None:
        stream = self._stream
        while stream is not None and self.filled < end:
            pieces = stream.next_pieces(end)
            if not pieces:  # the object ends before the range did
                self.end = self.filled
                break
            for piece in pieces:
                self._starts.append(self.filled)
                self._pieces.append(piece)
                self.filled += len(piece)
        if stream is not None and self.filled >= self.end:
            self.close()

    def close(self) -> None:
        """Stop the stream (a GET not read to its end gives up its connection)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()


class ObjectStream:
    """One ranged GET of ``[start, end)`` whose body the filesystem's event loop reads in
    the background as it arrives; the reader takes the pieces in as they come
    (:meth:`next_pieces`), so a block's first records are decoded while the rest of it is
    still on the way, and the GET still ends at the network's pace (its connection is
    not held while a slow function works). Counted in ``source``. A transient error
    mid-way is retried under the source's policy by a GET of the rest only: each byte is
    still fetched once.
    """

    def __init__(self, source: RangeSource, opener: S3Opener, start: int, end: int) -> None:
        self._source = source
        self._opener = opener
        self.pos = start  # the pieces before it were taken
        self.end = end
        self._changed = threading.Condition()
        self._arrived: list[bytes] = []  # pieces in, not taken yet
        self._arrived_end = start
        self._want = start  # the reader waits for the pieces up to here
        self._outcome: BaseException | bool | None = None  # the GET's end: True or its error
        self._failed = False
        self._future: Any = None
        self._start()

    def _start(self) -> None:
        self._source.num_requests += 1
        self._outcome = None
        self._future = self._opener.pump(self.pos, self.end, self)

    def length(self, length: int) -> None:
        """The GET's answer says ``length`` bytes follow (fewer at the object's end)."""
        with self._changed:
            self.end = min(self.end, self._arrived_end + length)

    def arrived(self, piece: bytes) -> None:
        """Take in a piece of the body (called on the event loop)."""
        with self._changed:
            self._arrived.append(piece)
            self._arrived_end += len(piece)
            if self._arrived_end >= self._want:
                self._changed.notify()

    def ended(self, outcome: BaseException | bool) -> None:
        """The GET ended: read to its end (True) or failed (the error)."""
        with self._changed:
            self._outcome = outcome
            self._changed.notify()

    def next_pieces(self, want: int) -> list[bytes]:
        """Return the pieces in so far, waiting until the range is in up to ``want`` (or
        to its end); none at the end of the range."""
        try:
            return retry_call(lambda: self._take(want), f"to read {self._source.path!r} "
                              f"[{self.pos}, {self.end})", self._source.retry)
        except OSError as exc:
            raise self._source.changed(exc) from exc

    def _take(self, want: int) -> list[bytes]:
        if self._failed:  # retried: a GET of what is left
            self._failed = False
            self._start()
        with self._changed:
            self._want = min(want, self.end)
            while self._arrived_end < self._want and self._outcome is None:
                future = self._future
                if not self._changed.wait(STREAM_POLL) and self._outcome is None and (
                        future is None or future.done()):  # stopped before it could say so
                    self._outcome = ConnectionAbortedError(
                        f"the GET of {self._source.path!r} from byte {self.pos} stopped "
                        f"before it was answered (its event loop is not running)")
            pieces, self._arrived = self._arrived, []
            outcome = self._outcome
        got = sum(map(len, pieces))
        self.pos += got
        self._source.bytes_read += got
        if pieces or self.pos >= self.end or outcome is True:
            return pieces
        assert isinstance(outcome, BaseException)
        self._failed = True
        raise outcome

    def close(self) -> None:
        """Stop the GET if it is still running (its connection is closed, not reused)."""
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.cancel()


class S3Opener:
    """Ranged GETs through an s3fs file's own client, with its If-Match ETag and
    version, whose body is read in pieces on s3fs's event loop (s3fs reads a range whole
    and joins it). :meth:`of` returns None for other filesystems."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self.size: int = file.size
        kwargs = dict(getattr(file, "read_kw", None) or {})
        if file.version_id:
            kwargs["VersionId"] = file.version_id
        self._kwargs = kwargs

    @classmethod
    def of(cls, file: Any) -> S3Opener | None:
        """An opener for ``file`` if it is an s3fs file, else None."""
        fs = getattr(file, "fs", None)
        if (not hasattr(fs, "_call_s3") or getattr(fs, "loop", None) is None
                or not isinstance(getattr(file, "size", None), int)
                or not all(hasattr(file, a) for a in ("bucket", "key", "version_id"))):
            return None
        return cls(file)

    def pump(self, start: int, end: int, stream: ObjectStream) -> Any:
        """Start the GET of ``[start, end)`` on the event loop, handing its body to
        ``stream`` piece by piece; return its (concurrent) future."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(self._pump(start, end, stream),
                                                self._file.fs.loop)

    async def _pump(self, start: int, end: int, stream: ObjectStream) -> None:
        file = self._file
        try:
            response = await file.fs._call_s3(
                "get_object", Bucket=file.bucket, Key=file.key,
                Range=f"bytes={start}-{end - 1}", **self._kwargs)
            body = response["Body"]
            try:
                etag, if_match = response.get("ETag"), self._kwargs.get("IfMatch")
                # the answer's ETag too: a store that ignores If-Match says it there
                if (if_match and etag and etag != if_match) or (
                        getattr(file.fs, "local_expiry_check", False)
                        and file.details.get("ETag") != etag):
                    raise InputChangedError(changed_message(
                        file.path, "its ETag no longer matches the one it was opened with"))
                length = int(response.get("ContentLength", end - start))
                stream.length(length)
                got = 0
                while got < length:
                    piece = await body.read(PIECE_SIZE)
                    if not piece:
                        raise ConnectionResetError(
                            f"the GET of {file.path!r} ended {got} bytes after byte {start}, "
                            f"before the {length} its Content-Length announced")
                    got += len(piece)
                    stream.arrived(piece)
            finally:
                body.close()
        except BaseException as exc:
            stream.ended(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            stream.ended(True)


def planned_etag(fs: AbstractFileSystem, expected: InputFile | None) -> str | None:
    """The ETag a read of ``expected`` on ``fs`` can send as If-Match instead of a HEAD
    before its first GET, or None: only on S3 (s3fs, not version-aware, the store checks
    If-Match itself) and only for an input planned with its ETag.

    Examples
    --------
    >>> from fsspec.implementations.memory import MemoryFileSystem
    >>> planned_etag(MemoryFileSystem(), InputFile("/a", 3, 'ETag="1f"')) is None
    True
    """
    if (expected is None or not expected.token.startswith("ETag=")
            or not is_s3fs(fs)
            or getattr(fs, "version_aware", True) or getattr(fs, "local_expiry_check", True)):
        return None
    return expected.token[len("ETag="):]


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
