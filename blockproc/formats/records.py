"""A block's records as :func:`blockproc.map_blocks` hands them over: ``batch.records``.

Iterating streams them: the block's bytes are decoded ~1 MiB at a time, and each piece's
records are let go once the loop has moved past them, so a counting or filtering loop
over a 64 MiB block holds ~1 MiB of records at a time (it stays in cache, and the
worker's memory stays flat). Anything that needs the records at once (``len``,
indexing, slicing, ``==``, ``+``, the list methods) decodes them into a list, once,
and uses that list from then on.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from blockproc.formats.base import RecordFormat

CHUNK_SIZE = 1 << 20
"""Bytes decoded per piece while streaming (~1 MiB keeps a piece's records in cache)."""

_LIST_METHODS = frozenset({"append", "clear", "copy", "extend", "insert", "pop", "remove",
                           "reverse", "sort"})


class Records(Sequence[Any]):
    """The records of ``data`` (record-aligned bytes) in ``format``, decoded as needed.

    Iteration streams: ``chunk_size`` bytes are decoded at a time, and no list of the
    whole block is kept. Without ``data``, each pass reads the bytes from ``chunks()``
    (an iterable of record-aligned pieces: a worker reads the block ~1 MiB at a time, so
    it never holds the block's bytes either). ``len``, indexing, slicing, ``==``, ``+``,
    ``*``, ``reversed`` and the list methods (``sort``, ``append``, ...) turn it into a
    list first (once; later iterations read that list). ``list(records)`` is that list's
    copy; pickling gives a plain list. Not a ``list`` subclass: ``isinstance(records,
    list)`` is False, and ``json.dumps`` wants ``list(records)``.

    Examples
    --------
    >>> from blockproc.formats.lines import Lines
    >>> records = Records(b"a\\r\\nbb\\nccc", Lines(), at_file_start=True, chunk_size=2)
    >>> [len(r) for r in records]  # streamed, 2 bytes decoded at a time
    [1, 2, 3]
    >>> records.streamed_count, records.is_list
    (3, False)
    >>> len(records), records[0], records[-2:], records.is_list
    (3, 'a', ['bb', 'ccc'], True)
    >>> records == ["a", "bb", "ccc"]
    True
    """

    __slots__ = ("_at_file_start", "_chunk_size", "_chunks", "_data", "_format", "_list",
                 "streamed_count")

    def __init__(self, data: bytes | None, format: RecordFormat, *, at_file_start: bool,
                 chunk_size: int = CHUNK_SIZE,
                 chunks: Callable[[], Iterable[bytes]] | None = None) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1 byte, got {chunk_size}")
        if (data is None) == (chunks is None):
            raise ValueError("pass the records' bytes (data) or a function that reads them "
                             "in pieces (chunks), one of the two")
        self._data = data
        self._chunks = chunks
        self._format = format
        self._at_file_start = at_file_start
        self._chunk_size = chunk_size
        self._list: list[Any] | None = None
        self.streamed_count: int | None = None  # records of the last complete streamed pass

    @property
    def is_list(self) -> bool:
        """True once the records were decoded into one list (by ``len``, an index, ...)."""
        return self._list is not None

    def batches(self) -> Iterator[list[Any]]:
        """Yield the records in lists, one per ~``chunk_size`` bytes decoded (the list
        of all of them, if they were already turned into one)."""
        if self._list is not None:
            yield self._list
            return
        data, size = self._data, self._chunk_size
        chunks: Iterable[bytes]
        if data is None:
            assert self._chunks is not None
            chunks = self._chunks()  # read from the input again, piece by piece
        else:
            chunks = ([data] if len(data) <= size else
                      (data[i:i + size] for i in range(0, len(data), size)))
        count = 0
        for batch in self._format.iter_batches(chunks, at_file_start=self._at_file_start):
            count += len(batch)
            yield batch
            del batch  # not kept alive while the next piece is decoded
        self.streamed_count = count

    def as_list(self) -> list[Any]:
        """Return the records as one list (decoded once, then kept)."""
        if self._list is None:
            records: list[Any] = []
            for batch in self.batches():
                records += batch
            self._list = records
        return self._list

    def __iter__(self) -> Iterator[Any]:
        if self._list is not None:
            return iter(self._list)
        return itertools.chain.from_iterable(self.batches())  # C-level, per record

    def __len__(self) -> int:
        return len(self.as_list())

    def __getitem__(self, index: Any) -> Any:
        return self.as_list()[index]

    def __reversed__(self) -> Iterator[Any]:
        backwards: Iterator[Any] = reversed(self.as_list())
        return backwards

    def index(self, value: Any, start: int = 0, stop: int = 2**63 - 1) -> int:
        """Return the first index of ``value`` (as ``list.index``)."""
        return self.as_list().index(value, start, stop)

    def count(self, value: Any) -> int:
        """Return how many records equal ``value`` (streamed if not yet a list)."""
        if self._list is not None:
            return self._list.count(value)
        return sum(batch.count(value) for batch in self.batches())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Records):
            other = other.as_list()
        return self.as_list() == other

    __hash__ = None  # type: ignore[assignment]  # like a list

    def __add__(self, other: Any) -> list[Any]:
        return self.as_list() + (other.as_list() if isinstance(other, Records) else other)

    def __radd__(self, other: Any) -> Any:
        return other + self.as_list()

    def __mul__(self, times: int) -> list[Any]:
        return self.as_list() * times

    __rmul__ = __mul__

    def __getattr__(self, name: str) -> Any:
        if name in _LIST_METHODS:  # sort, append, ...: on the list, which is kept
            return getattr(self.as_list(), name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return list, (list(self),)  # a plain list on the other side

    def __repr__(self) -> str:
        return repr(self.as_list())
