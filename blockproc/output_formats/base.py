"""What every output format shares: the :class:`OutputFormat` protocol, the
:class:`PartWriter` that counts and checksums a part-file (and writes ``text``), and
the checks that refuse a value an output format cannot write."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from blockproc.errors import ReturnTypeError
from blockproc.formats.records import Records

_SEVERAL = (list, tuple, Iterator, Records)

ACCEPTED_RETURNS: dict[tuple[str, str], str] = {
    ("text", "record"): "str or bytes (one line), None (nothing), or a list, tuple or "
                        "generator of them",
    ("text", "block"): "str or bytes (written as is), None, or a list, tuple or generator "
                       "of str/bytes lines",
    ("csv", "record"): "a dict (one row), None, or a list, tuple or generator of dicts",
    ("csv", "block"): "a pyarrow Table or RecordBatch, a dict or a list, tuple or generator "
                      "of dicts, str or bytes (written as is), None",
    ("jsonl", "record"): "any JSON value (dict, str, number, bool; numpy numbers and arrays, "
                         "dates, Decimal and bytes are converted), None, or a list, tuple or "
                         "generator of them (one line each)",
    ("jsonl", "block"): "a pyarrow Table or RecordBatch, a dict, a number or bool, a list, "
                        "tuple or generator of JSON values, str or bytes (written as is), "
                        "None",
    ("parquet", "record"): "a dict (one row), None, or a list, tuple or generator of dicts",
    ("parquet", "block"): "a pyarrow Table or RecordBatch, a pandas DataFrame, a dict or a "
                          "list, tuple or generator of dicts, None",
    ("npy", "record"): "a numpy array or scalar, a Python number, None, or a list, tuple "
                       "or generator of them",
    ("npy", "block"): "a numpy array (rows along axis 0), a numpy scalar, a list or tuple "
                      "of numbers, None",
    ("pickle", "record"): "any picklable value, None (nothing), or a list, tuple or "
                          "generator of them",
    ("pickle", "block"): "any picklable value (a generator is turned into a list)",
}
"""What a function may return, by ``(output format, "record" | "block")``: ``"record"``
is a per-record function (``map_lines``, ``--map``), ``"block"`` a per-block one
(``map_blocks``, ``--map-blocks``). Anything else raises :class:`ReturnTypeError`."""


def refuse(name: str, mode: str, value: Any, hint: str = "", *,
            where: str = "") -> ReturnTypeError:
    """Return the error for ``value`` returned to output format ``name`` (``where``: in
    what it was returned, ``hint``: what to do)."""
    kind = type(value).__name__
    if is_array(value):
        kind = f"numpy {kind} of dtype {value.dtype}"
    return ReturnTypeError(f"the function returned {kind} {value!r:.80}{where}; output_format="
                           f"{name!r} accepts {ACCEPTED_RETURNS[name, mode]}{hint}")


def is_several(value: Any) -> bool:
    """True for what stands for several records: a list, tuple or iterator (generator),
    or a block's :class:`~blockproc.formats.records.Records` (``batch.records``)."""
    return isinstance(value, _SEVERAL)

ROWS_PER_FLUSH = 65536
"""Rows a writer gathers before it writes them (a Parquet row group, a CSV chunk)."""


@runtime_checkable
class OutputFormat(Protocol):
    """A part-file format: a small frozen picklable spec that opens writers."""

    @property
    def name(self) -> str:
        """The name ``output_format=`` accepts."""
        ...

    @property
    def extension(self) -> str:
        """The part-file extension, with its dot (``".csv"``)."""
        ...

    @property
    def is_streaming_text(self) -> bool:
        """True if a command's stdout can be written as is."""
        ...

    def open(self, file: Any) -> PartWriter:
        """Return a writer over an open binary file."""
        ...


class Sink:
    """The part-file as the writers see it: counts bytes, computes the CRC-32, and after
    :meth:`abort` drops writes (so a writer left open cannot touch a failed attempt)."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self.bytes_written = 0
        self.crc = 0
        self.closed = False

    def write(self, data: Any) -> int:
        if self._file is None:
            return len(data)
        piece = data if isinstance(data, bytes) else bytes(data)
        if piece:
            self._file.write(piece)
            self.bytes_written += len(piece)
            self.crc = zlib.crc32(piece, self.crc)
        return len(piece)

    def tell(self) -> int:
        return self.bytes_written

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def flush(self) -> None:
        return None

    def close(self) -> None:  # pyarrow closes what it wraps; the worker owns the file
        return None

    def abort(self) -> None:
        self._file = None


class PartWriter:
    """Write one part-file; the ``text`` writer, and the base of the others.

    ``write`` takes raw bytes (a command's stdout), ``write_results`` what a per-record
    function returned for a batch, ``write_block`` what a per-block function returned.
    Use as a context manager: a clean exit finishes the file (Parquet footer, ``.npy``
    header), an exception abandons it.
    """

    extension = ".txt"
    value_bytes: bytes | None = None
    """The block's value for the master, pickled (set by the ``pickle`` format only)."""

    def __init__(self, file: Any) -> None:
        self._sink = Sink(file)
        self.records = 0

    # -- counters ----------------------------------------------------------------------

    @property
    def bytes_written(self) -> int:
        """Bytes written to the part-file so far."""
        return self._sink.bytes_written

    @property
    def checksum(self) -> str:
        """``crc32:`` and eight hex digits."""
        return f"crc32:{self._sink.crc:08x}"

    # -- writing -----------------------------------------------------------------------

    def write(self, data: bytes, records: int = 0) -> None:
        """Write raw bytes that hold ``records`` records."""
        self._sink.write(data)
        self.records += records

    def write_results(self, results: list[Any]) -> None:
        """Write what a per-record function returned for a batch: str or bytes (a line
        each), None (nothing) or iterables of them.

        Examples
        --------
        >>> import io
        >>> PartWriter(io.BytesIO()).write_results([{"a": 1}])
        Traceback (most recent call last):
        ...
        blockproc.ReturnTypeError: the function returned dict {'a': 1}; ...
        """
        try:
            text = "\n".join(results)  # the common case: every result is a str
        except TypeError:
            if not _write_str_lines(self, results):
                self.write_lines(_result_lines(results))
            return
        if results:  # the text, then the last line's newline (no copy of the text)
            self.write(text.encode(), len(results))
            self.write(b"\n")

    def write_lines(self, lines: list[Any]) -> None:
        """Write each str or bytes in ``lines`` followed by a newline."""
        if not lines:
            return
        try:
            data = ("\n".join(lines) + "\n").encode()
        except TypeError:
            data = b"".join(as_bytes(line) + b"\n" for line in lines)
        self.write(data, len(lines))

    def write_block(self, result: Any) -> None:
        """Write what a per-block function returned: None, a str or bytes written as is,
        or an iterable of lines."""
        if result is None:
            return
        if isinstance(result, (str, bytes)):
            data = as_bytes(result)
            self.write(data, data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1))
            return
        refuse_columnar(result, "text")
        if not is_several(result):
            raise refuse("text", "block", result)
        lines: list[Any] = []
        for line in result:
            if line is None:
                continue
            if not isinstance(line, (str, bytes)):
                raise refuse("text", "block", line, where=" inside an iterable")
            lines.append(line)
            if len(lines) >= ROWS_PER_FLUSH:
                self.write_lines(lines)
                lines = []
        self.write_lines(lines)

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Finish the part-file (nothing to do for text)."""

    def abort(self) -> None:
        """Abandon the part-file after an error: later writes are dropped."""
        self._sink.abort()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _write_str_lines(writer: PartWriter, results: list[Any]) -> bool:
    """Write ``results`` if they are only str and None (such as a filter's: mostly None)
    and return True; False, with nothing written, for anything else.

    The Nones are counted and dropped in C (``list.count``, ``filter``) instead of one
    Python step per result; the counts prove that only Nones were dropped (``filter``
    also drops ``""``, ``0``, ``[]``), or the caller's general loop takes over.
    """
    try:
        nones = results.count(None)
        if nones == len(results):
            return True
        kept = list(filter(None, results))
        if len(kept) + nones != len(results):
            return False
        text = "\n".join(kept)
    except Exception:  # bytes, lists, or objects whose == or bool() fail: the loop decides
        return False
    writer.write(text.encode(), len(kept))
    writer.write(b"\n")
    return True


def _result_lines(results: list[Any]) -> list[Any]:
    """The lines of per-record ``results``: str and bytes, lists of them flattened,
    None dropped; anything else is refused."""
    lines: list[Any] = []
    for result in results:
        if result is None:
            continue
        if isinstance(result, (str, bytes)):
            lines.append(result)
        elif is_several(result):
            for line in result:
                if isinstance(line, (str, bytes)):
                    lines.append(line)
                elif line is not None:
                    raise refuse("text", "record", line, where=" inside a list")
        else:
            raise refuse("text", "record", result)
    return lines


# -- checks shared by the writers ---------------------------------------------------------


def as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise refuse("text", "record", value)


def is_table(value: Any) -> bool:
    return type(value).__module__.startswith("pyarrow") and hasattr(value, "num_rows")


def is_array(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype")


def refuse_columnar(result: Any, name: str) -> None:
    if is_table(result):
        raise ReturnTypeError(f"the function returned a {type(result).__name__}, which "
                        f"output_format={name!r} cannot write; pass output_format='parquet', "
                        f"'csv' or 'jsonl' (CLI: --output-format)")
    if is_array(result):
        raise ReturnTypeError(f"the function returned a numpy {type(result).__name__}, which "
                        f"output_format={name!r} cannot write; pass output_format='npy' "
                        f"(CLI: --output-format npy) or return lines")


def flatten_records(results: Iterable[Any]) -> Iterator[Any]:
    """Flatten per-record results: None is nothing, a list/tuple/generator is several."""
    for result in results:
        if result is None:
            continue
        if isinstance(result, _SEVERAL):
            yield from (r for r in result if r is not None)
        else:
            yield result
