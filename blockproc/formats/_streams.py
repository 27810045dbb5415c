"""File-like adapters that let pyarrow read from blockproc's chunk iterators and ranged
reads, so formats stay free of file objects (only ``read`` functions come in)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable, Iterator

from blockproc.formats.base import ReadFn


class ChunkStream(io.RawIOBase):
    """A read-only stream over an iterator of byte chunks (pulled lazily, so progress
    is reported as pyarrow consumes them).

    Examples
    --------
    >>> s = ChunkStream(iter([b"ab", b"", b"cde"]))
    >>> s.read(3), s.read(), s.read()
    (b'abc', b'de', b'')
    """

    def __init__(self, chunks: Iterable[bytes], head: bytes = b"") -> None:
        super().__init__()
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = head
        self._pos = 0
        self._offset = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._offset

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            rest = [self._buf[self._pos:], *self._chunks]
            self._buf, self._pos = b"", 0
            data = b"".join(rest)
            self._offset += len(data)
            return data
        parts: list[bytes] = []
        want = size
        while want > 0:
            if self._pos >= len(self._buf):
                nxt = next(self._chunks, None)
                if nxt is None:
                    break
                self._buf, self._pos = nxt, 0
                continue
            piece = self._buf[self._pos:self._pos + want]
            self._pos += len(piece)
            want -= len(piece)
            parts.append(piece)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._offset += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class RangeFile(io.RawIOBase):
    """A seekable read-only file over ``read(start, end)`` of a file of ``size`` bytes.

    Examples
    --------
    >>> data = b"0123456789"
    >>> f = RangeFile(lambda s, e: data[s:e], len(data))
    >>> f.seek(-3, 2), f.read(2), f.tell(), f.read()
    (7, b'78', 9, b'9')
    """

    def __init__(self, read: ReadFn, size: int) -> None:
        super().__init__()
        self._read = read
        self._size = size
        self._pos = 0
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        with self._lock:
            end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
            data = self._read(self._pos, end) if end > self._pos else b""
            self._pos += len(data)
            return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class Capture(io.RawIOBase):
    """A write-only sink that hands out what was written since the last :meth:`take`."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._offset = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._offset

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        piece = bytes(data)
        self._parts.append(piece)
        self._offset += len(piece)
        return len(piece)

    def take(self) -> bytes:
        """Return and forget the bytes written since the last call."""
        data = b"".join(self._parts)
        self._parts = []
        return data
