"""Delimiter-terminated formats: ``lines`` (text), ``delimited`` (any byte string) and
``raw`` (a block's aligned bytes as one record)."""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from blockproc._frozen import FrozenSlots
from blockproc.errors import ConfigError
from blockproc.formats import text
from blockproc.formats.base import (
    Boundary,
    DelimitedBoundary,
    ReadFn,
    find_boundary,
    split_chunks,
)
from blockproc.formats.hooks import FileAccess
from blockproc.formats.text import check_text_encoding
from blockproc.model import Block, InputFile

_BOM = codecs.BOM_UTF8


def _check_encoding(encoding: str, errors: str, *, wide: bool = False) -> None:
    check_text_encoding(encoding, errors)
    if not wide and text.code_unit(encoding) > 1:
        raise ConfigError(
            f"encoding {encoding!r} writes a newline as a {text.code_unit(encoding)}-byte code "
            f"unit, so records cannot be cut on a byte delimiter; use format='lines' with "
            f"this encoding, or an ASCII-compatible encoding (utf-8, latin-1, cp1252, ...)"
        )


def _bytes_delimiter(delimiter: bytes | str) -> bytes:
    if isinstance(delimiter, str):
        delimiter = delimiter.encode()
    if not isinstance(delimiter, bytes):
        raise TypeError(f"delimiter must be bytes or str, got {delimiter!r}")
    if not delimiter:
        raise ConfigError("delimiter must not be empty; pass a byte string such as b'\\n'")
    return delimiter


class Lines(DelimitedBoundary, FrozenSlots):
    """Newline-terminated text: LF or CRLF, decoded with ``encoding`` (UTF-8 by default).

    Records are ``str`` without their line ending; a BOM at the start of a file is
    dropped once. Only LF ends a line, and a CR right before it belongs to the line end
    (CRLF); any other CR is data, a CR at the end of a file without a final LF included
    (unlike ``str.splitlines``, which also splits on a lone CR). Any ASCII-compatible
    codec works, and so do UTF-16 and UTF-32 (LE, BE,
    or ``utf-16``/``utf-32`` with the byte order taken from the BOM at plan time), cut
    only on newlines aligned to code units (see :mod:`blockproc.formats.text`).
    Undecodable bytes follow ``errors``; ``"strict"`` fails with their byte offset.

    Examples
    --------
    >>> list(Lines().iter_batches([b"\\xef\\xbb\\xbfa\\r\\nb\\n"], at_file_start=True))
    [['a', 'b']]
    >>> list(Lines().iter_batches([b"a\\rb\\r\\nc\\r"], at_file_start=True))
    [['a\\rb'], ['c\\r']]
    """

    _fields = ("encoding", "errors", "name")
    __slots__ = _fields
    encoding: str
    errors: str
    name: str

    def __init__(self, encoding: str = "utf-8", errors: str = "strict",
                 name: str = "lines") -> None:
        object.__setattr__(self, "encoding", encoding)
        object.__setattr__(self, "errors", errors)
        object.__setattr__(self, "name", name)
        _check_encoding(encoding, errors, wide=True)

    @property
    def delimiter(self) -> bytes:
        """Lines end with ``b"\\n"`` (one code unit in UTF-16/32); a ``\\r`` before it is
        stripped from the record."""
        return text.newline(self.encoding)

    @property
    def packable(self) -> bool:
        """Small files may share a block, except in UTF-16/32 (each file has its BOM)."""
        return text.code_unit(self.encoding) == 1

    def boundary(self, read: ReadFn, pos: int, size: int, *, max_record_size: int) -> Boundary:
        """Return the offset right after the first newline at or after ``pos`` (on a
        code-unit boundary in UTF-16/32)."""
        if text.code_unit(self.encoding) > 1:
            return text.find_unit_boundary(read, pos, size, self.encoding,
                                           max_record_size=max_record_size)
        return find_boundary(read, pos, size, b"\n", max_record_size=max_record_size)

    def plan_blocks(self, files: Sequence[InputFile], blocks: Sequence[Block],
                    access: FileAccess) -> tuple[Lines, list[Block]]:
        """Resolve ``utf-16``/``utf-32`` to one byte order from the files' BOMs."""
        if not text.is_generic(self.encoding) or not files:
            return self, list(blocks)
        found = {f.path: text.specific_encoding(self.encoding, access.head(f, 4))
                 for f in files}
        orders = sorted(set(found.values()))
        if len(orders) > 1:
            examples = ", ".join(f"{next(p for p, e in found.items() if e == o)!r} is {o}"
                                 for o in orders)
            raise ConfigError(
                f"the inputs are {self.encoding} in different byte orders ({examples}); "
                f"process them in separate jobs, or pass the encoding with its byte order "
                f"(such as 'utf-16-le')"
            )
        return Lines(orders[0], self.errors, self.name), list(blocks)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe description."""
        return {"name": self.name, "encoding": self.encoding, "errors": self.errors}

    def iter_batches(self, chunks: Iterable[bytes], *, at_file_start: bool) -> Iterator[list[Any]]:
        """Yield lists of lines, one list per chunk that ends a line, decoding each in
        one call without copying the chunk (see :func:`_chunk_lines`)."""
        if text.code_unit(self.encoding) > 1:
            yield from text.iter_wide_lines(chunks, self.encoding, self.errors,
                                            at_file_start=at_file_start)
            return
        name = codecs.lookup(self.encoding).name
        decode = codecs.getdecoder(self.encoding)
        views = name in _VIEW_DECODERS
        errors = self.errors
        strip_bom = at_file_start and name == "utf-8"
        pending: list[bytes] = []  # the start of a line that no chunk has ended yet
        done = 0  # bytes of the range before ``pending``, for the offset in decoding errors
        for raw in chunks:
            chunk = raw
            if strip_bom:
                chunk = b"".join(pending) + raw if pending else raw
                pending = []
                if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                    pending = [chunk]
                    continue
                if chunk.startswith(_BOM):
                    chunk = chunk[len(_BOM):]
                    done += len(_BOM)
                strip_bom = False
            try:
                lines, used, rest = _chunk_lines(chunk, pending, decode, errors, views)
            except _Undecodable as bad:
                raise text.decode_error(bad.exc, done + bad.offset, self.encoding,
                                        at_file_start) from bad.exc
            if lines is None:  # no LF in this chunk: it continues the pending line
                if chunk:
                    pending.append(chunk)
                continue
            done += used
            pending = [rest] if rest else []
            yield lines
            del lines  # let the consumer free them before the next chunk is decoded
        last = b"".join(pending)
        if last:
            try:
                decoded = decode(last, errors)[0]
            except UnicodeDecodeError as exc:
                raise text.decode_error(exc, done + exc.start, self.encoding,
                                        at_file_start) from exc
            yield [decoded]  # the last line, without LF: a CR at its end is data


_VIEW_DECODERS = frozenset({"utf-8", "ascii", "latin-1", "iso8859-1"})
"""Codecs whose decode function reads a ``memoryview`` in place (C codecs taking any
buffer); the others get a ``bytes`` slice."""


class _Undecodable(Exception):
    """A decoding error at ``offset`` bytes after the start of the pending line."""

    def __init__(self, exc: UnicodeDecodeError, offset: int) -> None:
        super().__init__(str(exc))
        self.exc = exc
        self.offset = offset


def _chunk_lines(chunk: bytes, pending: list[bytes], decode: Any, errors: str,
                 views: bool) -> tuple[list[str] | None, int, bytes]:
    """Decode the lines that ``chunk`` ends; return them, the bytes they took (the
    ``pending`` line start plus the chunk up to its last LF) and the rest of the chunk,
    or ``(None, 0, b"")`` if the chunk holds no LF.

    The pending start and the chunk's bytes up to its first LF are joined and decoded
    as the first line (a few bytes); the rest up to the last LF is decoded from the
    chunk itself (a ``memoryview`` with ``views``), so the chunk is never copied into a
    joined buffer or a slice first. Cutting after an LF never splits a character in an
    ASCII-compatible codec, so the lines are the same as decoding it all at once.

    Examples
    --------
    >>> _chunk_lines(b"b\\r\\nc\\nd", [b"a"], codecs.utf_8_decode, "strict", True)
    (['ab', 'c'], 6, b'd')
    >>> _chunk_lines(b"xy", [], codecs.utf_8_decode, "strict", True)
    (None, 0, b'')
    """
    start = 0
    head: list[str] = []
    held = sum(map(len, pending))
    if pending:
        first = chunk.find(b"\n")
        if first < 0:
            return None, 0, b""
        start = first + 1
        piece = b"".join(pending) + chunk[:start]
        try:
            head = _split_text(decode(piece, errors)[0])
        except UnicodeDecodeError as exc:
            raise _Undecodable(exc, exc.start) from exc
    cut = chunk.rfind(b"\n", start) + 1
    if not cut:
        if not pending:
            return None, 0, b""
        cut = start
    if cut > start:
        body: Any = chunk if start == 0 and cut == len(chunk) else (
            memoryview(chunk)[start:cut] if views else chunk[start:cut])
        try:
            lines = _split_text(decode(body, errors)[0])
        except UnicodeDecodeError as exc:
            raise _Undecodable(exc, held + start + exc.start) from exc
        if head:
            lines.insert(0, head[0])
    else:
        lines = head
    return lines, held + cut, chunk[cut:]


def _split_text(text: str) -> list[str]:
    """Split newline-terminated ``text`` into lines without their LF or CRLF."""
    lines = text.split("\n")
    lines.pop()
    if "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return lines


class Delimited(DelimitedBoundary, FrozenSlots):
    """Records ended by any byte string (``b"\\0"``, ``b"|+|"``, ``b"\\n\\n"``...).

    Records are ``bytes``, or ``str`` when ``encoding`` is given.

    Examples
    --------
    >>> list(Delimited(b"|+|").iter_batches([b"a|+|b|", b"+|c"], at_file_start=True))
    [[b'a'], [b'b'], [b'c']]
    """

    _fields = ("delimiter", "encoding", "errors", "name")
    __slots__ = _fields
    delimiter: bytes  # a field, where the mixin has a property
    encoding: str | None
    errors: str
    name: str

    def __init__(self, delimiter: bytes | str = b"\n", encoding: str | None = None,
                 errors: str = "strict", name: str = "delimited") -> None:
        object.__setattr__(self, "delimiter", _bytes_delimiter(delimiter))
        object.__setattr__(self, "encoding", encoding)
        object.__setattr__(self, "errors", errors)
        object.__setattr__(self, "name", name)
        if encoding is not None:
            _check_encoding(encoding, errors)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe description."""
        return {"name": self.name, "delimiter": self.delimiter.hex(),
                "encoding": self.encoding, "errors": self.errors}

    def iter_batches(self, chunks: Iterable[bytes], *, at_file_start: bool) -> Iterator[list[Any]]:
        """Yield lists of records, one list per chunk; undecodable bytes fail with their
        byte offset (:class:`~blockproc.TextDecodeError`, not retried)."""
        done = 0  # bytes of the range before this batch
        step = len(self.delimiter)
        for batch in split_chunks(chunks, self.delimiter):
            if self.encoding is None:
                yield batch
                continue
            try:
                yield [r.decode(self.encoding, self.errors) for r in batch]
            except UnicodeDecodeError:
                for r in batch:  # find the bad bytes again, for their offset
                    try:
                        r.decode(self.encoding, self.errors)
                    except UnicodeDecodeError as exc:
                        raise text.decode_error(exc, done + exc.start, self.encoding,
                                                at_file_start) from exc
                    done += len(r) + step
                raise
            done += sum(len(r) for r in batch) + step * len(batch)


class Raw(DelimitedBoundary, FrozenSlots):
    """A block's aligned bytes as one record, cut on ``delimiter`` (newline by default).

    Examples
    --------
    >>> list(Raw().iter_batches([b"a\\n", b"b\\n"], at_file_start=True))
    [[b'a\\nb\\n']]
    """

    _fields = ("delimiter", "name")
    __slots__ = _fields
    delimiter: bytes  # a field, where the mixin has a property
    name: str

    def __init__(self, delimiter: bytes | str = b"\n", name: str = "raw") -> None:
        object.__setattr__(self, "delimiter", _bytes_delimiter(delimiter))
        object.__setattr__(self, "name", name)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe description."""
        return {"name": self.name, "delimiter": self.delimiter.hex()}

    def iter_batches(self, chunks: Iterable[bytes], *, at_file_start: bool) -> Iterator[list[Any]]:
        """Yield one batch holding the whole range as one ``bytes`` record (none if empty)."""
        data = b"".join(chunks)
        if data:
            yield [data]
