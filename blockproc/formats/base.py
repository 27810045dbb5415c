"""The record boundary rule, shared by every delimiter-terminated format.

A block ``[s, e)`` with ``s > 0`` starts right after the first complete delimiter that
begins at or after ``s`` and ends right after the first complete delimiter that begins
at or after ``e`` (or at end of file). :func:`find_boundary` is the one function that
computes both ends, so neighbouring blocks always agree. It returns the boundaries of
the sequential parse (``data.split(delimiter)``), also for self-overlapping
delimiters such as ``b"\\n\\n"`` or ``b"aa"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from blockproc._frozen import FrozenSlots
from blockproc.errors import RecordTooLargeError

ReadFn = Callable[[int, int], bytes]
"""``read(start, end)`` returns the bytes ``[start, end)`` of one file (fewer at EOF)."""

WINDOW_SIZE = 64 * 1024
"""Most bytes fetched per step while looking for a boundary."""

FIRST_WINDOW_SIZE = 4 * 1024
"""Bytes fetched by the first step; each further step doubles, up to ``WINDOW_SIZE``, so
short records cost little overhang and long ones few requests."""

DEFAULT_MAX_RECORD_SIZE = 256 * 2**20


class Boundary(FrozenSlots):
    """Where a record boundary is, and the bytes read to find it.

    ``data`` holds the file bytes ``[data_start, data_start + len(data))``; callers reuse
    them instead of reading the same range twice.
    """

    _fields = ("offset", "data", "data_start")
    __slots__ = _fields
    offset: int
    data: bytes
    data_start: int

    def __init__(self, offset: int, data: bytes, data_start: int) -> None:
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "data_start", data_start)


def has_border(delimiter: bytes) -> bool:
    """Return True if a proper prefix of ``delimiter`` is also a suffix (it can overlap itself).

    Examples
    --------
    >>> has_border(b"\\n"), has_border(b"aa"), has_border(b"|+|"), has_border(b"ab")
    (False, True, True, False)
    """
    return any(delimiter[:k] == delimiter[-k:] for k in range(1, len(delimiter)))


def find_boundary(
    read: ReadFn,
    pos: int,
    size: int,
    delimiter: bytes,
    *,
    max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
    window: int = WINDOW_SIZE,
) -> Boundary:
    """Return the offset right after the first delimiter of the sequential parse that
    begins at or after ``pos`` (``0`` for ``pos == 0``, ``size`` if there is none).

    Examples
    --------
    >>> data = b"ab\\ncd\\nef"
    >>> read = lambda s, e: data[s:e]
    >>> [find_boundary(read, p, len(data), b"\\n").offset for p in range(len(data) + 1)]
    [0, 3, 3, 6, 6, 6, 8, 8, 8]
    """
    if pos <= 0:
        return Boundary(0, b"", 0)
    if pos >= size:
        return Boundary(size, b"", size)
    width = len(delimiter)
    start = _fresh_point(read, pos, size, delimiter) if has_border(delimiter) else pos
    buf = bytearray()
    step = min(FIRST_WINDOW_SIZE, window)
    scan = start  # the greedy parse continues from here
    while True:
        found = buf.find(delimiter, scan - start)
        if found >= 0:
            at = start + found
            if at >= pos:
                return Boundary(at + width, bytes(buf), start)
            scan = at + width
            continue
        fetched_end = start + len(buf)
        if fetched_end >= size:
            return Boundary(size, bytes(buf), start)
        if fetched_end - pos > max_record_size:
            raise RecordTooLargeError(
                f"no record delimiter {delimiter!r} within {max_record_size} bytes after "
                f"offset {pos}; raise max_record_size or check the format and delimiter"
            )
        chunk = read(fetched_end, min(size, fetched_end + step))
        step = min(step * 2, window)
        if not chunk:
            return Boundary(fetched_end, bytes(buf), start)
        buf += chunk
        scan = max(scan, fetched_end - width + 1)


def _fresh_point(read: ReadFn, pos: int, size: int, delimiter: bytes) -> int:
    """Return ``q <= pos`` where no occurrence of ``delimiter`` straddles ``q``.

    The sequential parse then restarts cleanly at ``q``: whatever it matched before ``q``
    ends at or before ``q``, so a greedy scan from ``q`` finds the same delimiters.
    """
    width = len(delimiter)
    q = pos
    step = FIRST_WINDOW_SIZE
    while q > 0:
        lo = max(0, q - max(step, width))
        seg = read(lo, min(size, q + width - 1))
        step = min(step * 2, WINDOW_SIZE)
        while q > 0:
            # an occurrence that starts in (q - width, q) straddles q: move q back to it
            found = seg.find(delimiter, max(0, q - width + 1 - lo), q + width - 1 - lo)
            if found < 0 or lo + found >= q:
                return q
            q = lo + found
            if lo > 0 and q - width + 1 < lo:
                break  # look further back
    return 0


class RecordFormat(Protocol):
    """How bytes become records. Formats are frozen, picklable and JSON-describable."""

    @property
    def name(self) -> str:
        """The name ``format=`` accepts, such as ``"lines"``."""
        ...

    @property
    def delimiter(self) -> bytes:
        """The byte string records end with; blocks are cut on it."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe description, accepted by ``formats.from_dict``."""
        ...

    def boundary(self, read: ReadFn, pos: int, size: int, *, max_record_size: int) -> Boundary:
        """Return the first record start at or after ``pos`` (the one ownership rule of
        this format; both ends of every block are computed with it)."""
        ...

    def iter_batches(self, chunks: Iterable[bytes], *, at_file_start: bool) -> Iterator[list[Any]]:
        """Yield the records of an aligned range, a batch per chunk, in order."""
        ...


class DelimitedBoundary:
    """Mixin for delimiter-terminated formats: :meth:`boundary` is :func:`find_boundary`."""

    __slots__ = ()

    @property
    def delimiter(self) -> bytes:
        """The byte string records end with."""
        raise NotImplementedError

    def boundary(self, read: ReadFn, pos: int, size: int, *, max_record_size: int) -> Boundary:
        """Return the offset right after the first delimiter at or after ``pos``."""
        return find_boundary(read, pos, size, self.delimiter, max_record_size=max_record_size)


def split_chunks(chunks: Iterable[bytes], delimiter: bytes) -> Iterator[list[bytes]]:
    """Yield the records of aligned ``chunks`` as lists of bytes, one list per chunk.

    The chunks may cut records anywhere; a final record without a delimiter is kept.

    Examples
    --------
    >>> list(split_chunks([b"a\\nb", b"c\\n\\nd"], b"\\n"))
    [[b'a'], [b'bc', b''], [b'd']]
    """
    carry = b""
    for chunk in chunks:
        data = carry + chunk if carry else chunk
        records = data.split(delimiter)
        carry = records.pop()
        if records:
            yield records
    if carry:
        yield [carry]
