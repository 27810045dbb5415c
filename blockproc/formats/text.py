"""Text in UTF-16 and UTF-32: newlines on code-unit boundaries, decoding per block.

A UTF-16 newline is the code unit ``0x000A``: the bytes ``0a 00`` (LE) or ``00 0a``
(BE), but those bytes also occur *across* two code units (``05 0a | 00 01`` is
U+0A05 U+0100). So a boundary is the first newline unit that begins at or after ``pos``
**on a code-unit boundary of the file** (an offset that is a multiple of 2, or of 4 for
UTF-32); misaligned matches are skipped. A BOM is two or four bytes, so it keeps the
alignment. Decoding uses an incremental decoder, so surrogate pairs and code units cut
by a chunk edge decode as in the whole file.

The generic names ``utf-16`` and ``utf-32`` take their byte order from the file's BOM
(as ``bytes.decode`` does; no BOM means the machine's order, like Python). A block in
the middle of a file cannot see the BOM, so planning resolves them once, from each
file's first bytes, into ``utf-16-le``/``-be`` or ``utf-32-le``/``-be``
(:func:`specific_encoding`). A BOM at the start of a file is dropped in block 0.
"""

from __future__ import annotations

import codecs
import sys
from collections.abc import Iterable, Iterator

from blockproc.errors import ConfigError, RecordTooLargeError, TextDecodeError
from blockproc.formats.base import FIRST_WINDOW_SIZE, WINDOW_SIZE, Boundary, ReadFn

_UNITS = {"utf-16": 2, "utf-16-le": 2, "utf-16-be": 2,
          "utf-32": 4, "utf-32-le": 4, "utf-32-be": 4}
_BOMS = {
    "utf-16": ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")),
    "utf-32": ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be")),
}
_NATIVE = "le" if sys.byteorder == "little" else "be"


def code_unit(encoding: str) -> int:
    """Return the code-unit size of a UTF-16/32 ``encoding``, 1 for any other codec.

    Examples
    --------
    >>> code_unit("UTF-16LE"), code_unit("utf_32"), code_unit("utf-8"), code_unit("latin-1")
    (2, 4, 1, 1)
    """
    return _UNITS.get(codecs.lookup(encoding).name, 1)


def is_generic(encoding: str) -> bool:
    """Return True for ``utf-16``/``utf-32`` without a byte order in the name."""
    return codecs.lookup(encoding).name in _BOMS


def specific_encoding(encoding: str, head: bytes) -> str:
    """Return the codec with an explicit byte order for a file starting with ``head``.

    Examples
    --------
    >>> specific_encoding("utf-16", codecs.BOM_UTF16_BE + b"\\x00a")
    'utf-16-be'
    >>> specific_encoding("utf-32", codecs.BOM_UTF32_LE)
    'utf-32-le'
    >>> specific_encoding("utf-16-be", b"")
    'utf-16-be'
    """
    name = codecs.lookup(encoding).name
    if name not in _BOMS:
        return name
    for bom, specific in _BOMS[name]:
        if head.startswith(bom):
            return specific
    return f"{name}-{_NATIVE}"


def newline(encoding: str) -> bytes:
    """Return the encoded newline code unit (``b"\\n"`` for ASCII-compatible codecs).

    Examples
    --------
    >>> newline("utf-16-be"), newline("utf-32-le"), newline("utf-8")
    (b'\\x00\\n', b'\\n\\x00\\x00\\x00', b'\\n')
    """
    name = codecs.lookup(encoding).name
    if name in _BOMS:
        name = f"{name}-{_NATIVE}"
    return "\n".encode(name)


def bom(encoding: str) -> bytes:
    """Return the byte-order mark of a codec with an explicit byte order (or UTF-8)."""
    return "\ufeff".encode(specific_encoding(encoding, b""))


def find_unit_boundary(
    read: ReadFn,
    pos: int,
    size: int,
    encoding: str,
    *,
    max_record_size: int,
    window: int = WINDOW_SIZE,
) -> Boundary:
    """Return the offset right after the first newline code unit that begins at or after
    ``pos`` on a code-unit boundary (``0`` for ``pos <= 0``, ``size`` if there is none).

    Examples
    --------
    >>> data = "a\\nbc\\n".encode("utf-16-le")
    >>> read = lambda s, e: data[s:e]
    >>> [find_unit_boundary(read, p, len(data), "utf-16-le", max_record_size=99).offset
    ...  for p in range(len(data) + 1)]
    [0, 4, 4, 10, 10, 10, 10, 10, 10, 10, 10]
    >>> data = "\\u0a05\\u0100\\n".encode("utf-16-le")  # 05 0a 00 01 0a 00: a false match at 1
    >>> find_unit_boundary(lambda s, e: data[s:e], 1, len(data), "utf-16-le",
    ...                    max_record_size=99).offset
    6
    """
    if pos <= 0:
        return Boundary(0, b"", 0)
    if pos >= size:
        return Boundary(size, b"", size)
    delimiter = newline(encoding)
    unit = len(delimiter)
    start = -(-pos // unit) * unit  # the first code-unit boundary at or after pos
    buf = bytearray()
    step = min(FIRST_WINDOW_SIZE, window)
    scan = 0
    while True:
        found = buf.find(delimiter, scan)
        while found >= 0 and found % unit:
            found = buf.find(delimiter, found + 1)
        if found >= 0:
            return Boundary(start + found + unit, bytes(buf), start)
        fetched_end = start + len(buf)
        if fetched_end >= size:
            return Boundary(size, bytes(buf), start)
        if fetched_end - pos > max_record_size:
            raise RecordTooLargeError(
                f"no {encoding} newline within {max_record_size} bytes after offset {pos}; "
                f"raise max_record_size or check the encoding"
            )
        chunk = read(fetched_end, min(size, fetched_end + step))
        step = min(step * 2, window)
        if not chunk:
            return Boundary(fetched_end, bytes(buf), start)
        scan = max(0, len(buf) - unit + 1)
        scan -= scan % unit
        buf += chunk


def decode_error(exc: UnicodeDecodeError, offset: int, encoding: str,
                 at_file_start: bool) -> TextDecodeError:
    """Return a :class:`TextDecodeError` for ``exc`` that names the byte offset of the
    bad bytes: in the file for block 0, else from the start of the block's records.

    Examples
    --------
    >>> try:
    ...     b"ok\\xff".decode("utf-8")
    ... except UnicodeDecodeError as exc:
    ...     print(decode_error(exc, 102, "utf-8", True))  # doctest: +ELLIPSIS
    cannot decode the input as 'utf-8' at byte 102 of the file: invalid start byte (b'\\xff'); ...
    """
    where = (f"byte {offset} of the file" if at_file_start else
             f"byte {offset} after the start of the block's first record")
    bad = exc.object[exc.start:exc.end]
    message = (
        f"cannot decode the input as {encoding!r} at {where}: {exc.reason} ({bad!r}); "
        f"pass errors='replace' (CLI: --errors replace) to substitute U+FFFD, "
        f"errors='surrogateescape' to keep the bytes, or the right encoding"
    )
    return TextDecodeError(encoding, bad, 0, len(bad), message)


def iter_wide_lines(chunks: Iterable[bytes], encoding: str, errors: str, *,
                    at_file_start: bool) -> Iterator[list[str]]:
    """Yield the lines of an aligned UTF-16/32 range, a list per chunk, without their
    LF or CRLF (a CR not followed by LF is data); a BOM at the start of the file is
    dropped.

    Examples
    --------
    >>> data = "\\ufeffa\\r\\nb\\n\\U0001f600".encode("utf-16-le")
    >>> list(iter_wide_lines([data[:5], data[5:11], data[11:]], "utf-16-le", "strict",
    ...                      at_file_start=True))
    [['a'], ['b'], ['😀']]
    """
    if is_generic(encoding) and not at_file_start:
        encoding = specific_encoding(encoding, b"")
    decoder = codecs.getincrementaldecoder(encoding)(errors)
    pending = ""
    consumed = 0  # bytes fed to the decoder before this chunk
    strip_bom = at_file_start
    for chunk in chunks:
        buffered = len(decoder.getstate()[0])
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise decode_error(exc, consumed - buffered + exc.start, encoding,
                               at_file_start) from exc
        consumed += len(chunk)
        if strip_bom and text:
            text = text.removeprefix("\ufeff")
            strip_bom = False
        if "\n" not in text:
            pending += text
            continue
        lines = (pending + text).split("\n")
        pending = lines.pop()
        yield _strip_cr(lines)
    buffered = len(decoder.getstate()[0])
    try:
        pending += decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise decode_error(exc, consumed - buffered + exc.start, encoding,
                           at_file_start) from exc
    if pending:
        yield [pending]  # the last line, without LF: a CR at its end is data


def _strip_cr(lines: list[str]) -> list[str]:
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def check_text_encoding(encoding: str, errors: str) -> None:
    """Raise ConfigError unless lines can be cut in ``encoding``: ASCII-compatible codecs
    (the newline is the byte 0x0a) and UTF-16/32 (the newline is one code unit)."""
    try:
        codecs.lookup(encoding)
        codecs.lookup_error(errors)
    except LookupError as exc:
        raise ConfigError(
            f"{exc}; pass a codec name Python knows, such as 'utf-8', 'latin-1' or "
            f"'utf-16', and an errors handler such as 'strict', 'replace' or "
            f"'surrogateescape'"
        ) from None
    if code_unit(encoding) == 1 and "\n".encode(encoding, "ignore") != b"\n":
        raise ConfigError(
            f"encoding {encoding!r} does not write a newline as the byte 0x0a or as one "
            f"UTF-16/32 code unit, so lines cannot be cut on it; use utf-8, latin-1, "
            f"cp1252, utf-16 or utf-32"
        )
