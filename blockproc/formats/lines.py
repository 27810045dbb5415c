"""Delimiter-terminated formats: ``lines`` (text), ``delimited`` (any byte string) and
``raw`` (a block's aligned bytes as one record)."""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from blockproc.errors import ConfigError
from blockproc.formats.base import DelimitedBoundary, split_chunks

_BOM = codecs.BOM_UTF8


def _check_encoding(encoding: str, errors: str) -> None:
    try:
        codecs.lookup(encoding)
        codecs.lookup_error(errors)
    except LookupError as exc:
        raise ConfigError(
            f"{exc}; pass a codec name Python knows, such as 'utf-8' or 'latin-1', and an "
            f"errors handler such as 'strict', 'replace' or 'surrogateescape'"
        ) from None
    if "\n".encode(encoding, "ignore") != b"\n":
        raise ConfigError(
            f"encoding {encoding!r} does not write a newline as the byte 0x0a, so lines cannot "
            f"be cut on it; use an ASCII-compatible encoding (utf-8, latin-1, cp1252, ...)"
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

    Records are ``str`` without their line ending; a UTF-8 BOM at the start of a file is
    dropped once.

    Examples
    --------
    >>> list(Lines().iter_batches([b"\\xef\\xbb\\xbfa\\r\\nb\\n"], at_file_start=True))
    [['a', 'b']]
    """

    encoding: str = "utf-8"
    errors: str = "strict"
    name: str = "lines"

    def __post_init__(self) -> None:
        _check_encoding(self.encoding, self.errors)

    @property
    def delimiter(self) -> bytes:
        """Lines end with ``b"\\n"``; a ``\\r`` before it is stripped from the record."""
        return b"\n"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe description."""
        return {"name": self.name, "encoding": self.encoding, "errors": self.errors}

    def iter_batches(self, chunks: Iterable[bytes], *, at_file_start: bool) -> Iterator[list[Any]]:
        """Yield lists of lines, one list per chunk, decoding each chunk in one call."""
        decoder = codecs.getdecoder(self.encoding)
        errors = self.errors
        strip_bom = at_file_start and codecs.lookup(self.encoding).name == "utf-8"
        carry = b""
        for chunk in chunks:
            data = carry + chunk if carry else chunk
            if strip_bom:
                if len(data) < len(_BOM) and _BOM.startswith(data):
                    carry = data
                    continue
                if data.startswith(_BOM):
                    data = data[len(_BOM):]
                strip_bom = False
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                yield _split_text(decoder(data[:cut] if carry else data, errors)[0])
        if carry:
            yield _split_text(decoder(carry, errors)[0] + "\n")


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
        """Yield lists of records, one list per chunk."""
        for batch in split_chunks(chunks, self.delimiter):
            if self.encoding is None:
                yield batch
            else:
                yield [r.decode(self.encoding, self.errors) for r in batch]


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
