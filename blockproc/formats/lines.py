"""Delimiter-terminated formats: ``lines`` (text), ``delimited`` (any byte string) and
``raw`` (a block's aligned bytes as one record)."""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True, slots=True)
class Lines(DelimitedBoundary):
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

    encoding: str = "utf-8"
    errors: str = "strict"
    name: str = "lines"

    def __post_init__(self) -> None:
        _check_encoding(self.encoding, self.errors, wide=True)

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
        """Yield lists of lines, one list per chunk, decoding each chunk in one call."""
        if text.code_unit(self.encoding) > 1:
            yield from text.iter_wide_lines(chunks, self.encoding, self.errors,
                                            at_file_start=at_file_start)
            return
        decoder = codecs.getdecoder(self.encoding)
        errors = self.errors
        strip_bom = at_file_start and codecs.lookup(self.encoding).name == "utf-8"
        carry = b""
        done = 0  # bytes of the range before ``data``, for the offset in decoding errors
        for chunk in chunks:
            data = carry + chunk if carry else chunk
            if strip_bom:
                if len(data) < len(_BOM) and _BOM.startswith(data):
                    carry = data
                    continue
                if data.startswith(_BOM):
                    data = data[len(_BOM):]
                    done += len(_BOM)
                strip_bom = False
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                piece = data[:cut] if carry else data
                try:
                    decoded = decoder(piece, errors)[0]
                except UnicodeDecodeError as exc:
                    raise text.decode_error(exc, done + exc.start, self.encoding,
                                            at_file_start) from exc
                done += cut
                yield _split_text(decoded)
        if carry:
            try:
                decoded = decoder(carry, errors)[0]
            except UnicodeDecodeError as exc:
                raise text.decode_error(exc, done + exc.start, self.encoding,
                                        at_file_start) from exc
            yield [decoded]  # the last line, without LF: a CR at its end is data


def _split_text(text: str) -> list[str]:
    """Split newline-terminated ``text`` into lines without their LF or CRLF."""
    lines = text.split("\n")
    lines.pop()
    if "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return lines


@dataclass(frozen=True, slots=True)
class Delimited(DelimitedBoundary):
    """Records ended by any byte string (``b"\\0"``, ``b"|+|"``, ``b"\\n\\n"``...).

    Records are ``bytes``, or ``str`` when ``encoding`` is given.

    Examples
    --------
    >>> list(Delimited(b"|+|").iter_batches([b"a|+|b|", b"+|c"], at_file_start=True))
    [[b'a'], [b'b'], [b'c']]
    """

    delimiter: bytes = b"\n"
    encoding: str | None = None
    errors: str = "strict"
    name: str = "delimited"

    def __post_init__(self) -> None:
        object.__setattr__(self, "delimiter", _bytes_delimiter(self.delimiter))
        if self.encoding is not None:
            _check_encoding(self.encoding, self.errors)

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


@dataclass(frozen=True, slots=True)
class Raw(DelimitedBoundary):
    """A block's aligned bytes as one record, cut on ``delimiter`` (newline by default).

    Examples
    --------
    >>> list(Raw().iter_batches([b"a\\n", b"b\\n"], at_file_start=True))
    [[b'a\\nb\\n']]
    """

    delimiter: bytes = b"\n"
    name: str = "raw"

    def __post_init__(self) -> None:
        object.__setattr__(self, "delimiter", _bytes_delimiter(self.delimiter))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe description."""
        return {"name": self.name, "delimiter": self.delimiter.hex()}

    def iter_batches(self, chunks: Iterable[bytes], *, at_file_start: bool) -> Iterator[list[Any]]:
        """Yield one batch holding the whole range as one ``bytes`` record (none if empty)."""
        data = b"".join(chunks)
        if data:
            yield [data]
