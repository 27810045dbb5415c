"""Part-file writers: how what a mapper returns becomes the bytes of a part-file.

Chosen with ``output_format=`` (CLI ``--output-format``); each writes to the attempt's
staging path, so every format commits through the same exactly-once protocol, and
counts records, bytes and the CRC-32 of what it wrote (the manifest's checksum).

========  ===========  ======================================================
name      extension    what ``fn`` may return
========  ===========  ======================================================
text      .txt         str/bytes (a line), None, or an iterable of them
csv       .csv         dict (a row) or several; a ``pyarrow.Table``; a header
                       line in each part (``CSVOutput(header=False)`` to drop it)
jsonl     .jsonl       any JSON value (a dict is one line) or a list of them;
                       a ``pyarrow.Table``
parquet   .parquet     a ``pyarrow.Table``/``RecordBatch``, dicts; one schema for
                       every part when ``ParquetOutput(schema=...)`` is given
npy       .npy         numpy arrays (concatenated on axis 0) or numpy scalars
========  ===========  ======================================================

In every format ``None`` writes nothing and a list, tuple or generator stands for
several records. text, csv and jsonl stream as results come; Parquet writes a row
group per table (or per 65,536 dict rows); ``.npy`` keeps the part's arrays until the
block ends, because its header holds the row count.
"""

from __future__ import annotations

import csv
import datetime as _dt
import decimal
import io
import json
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from blockproc._deps import numpy, pyarrow, require
from blockproc._registry import Registry
from blockproc.errors import ConfigError, ReturnTypeError

__all__ = [
    "ACCEPTED_RETURNS", "OUTPUT_FORMATS", "CSVOutput", "JSONLinesOutput", "NpyOutput",
    "OutputFormat", "ParquetOutput", "PartWriter", "ReturnTypeError", "TextOutput",
    "get_output_format",
]

REGISTRY = Registry("output_format", {
    "text": "blockproc.writers:TextOutput",
    "csv": "blockproc.writers:CSVOutput",
    "jsonl": "blockproc.writers:JSONLinesOutput",
    "parquet": "blockproc.writers:ParquetOutput",
    "npy": "blockproc.writers:NpyOutput",
}, alternative=" or pass a spec such as blockproc.writers.CSVOutput(header=False)")
"""The names ``output_format=`` accepts (``--output-format``), each an output spec class."""

OUTPUT_FORMATS = REGISTRY.names()
"""The names ``output_format=`` accepts."""

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
}
"""What a function may return, by ``(output format, "record" | "block")``: ``"record"``
is a per-record function (``map_lines``, ``--map``), ``"block"`` a per-block one
(``map_blocks``, ``--map-blocks``). Anything else raises :class:`ReturnTypeError`."""


def _refuse(name: str, mode: str, value: Any, hint: str = "", *,
            where: str = "") -> ReturnTypeError:
    """Return the error for ``value`` returned to output format ``name`` (``where``: in
    what it was returned, ``hint``: what to do)."""
    kind = type(value).__name__
    if _is_array(value):
        kind = f"numpy {kind} of dtype {value.dtype}"
    return ReturnTypeError(f"the function returned {kind} {value!r:.80}{where}; output_format="
                           f"{name!r} accepts {ACCEPTED_RETURNS[name, mode]}{hint}")


def _is_several(value: Any) -> bool:
    """True for what stands for several records: a list, tuple or iterator (generator)."""
    return isinstance(value, (list, tuple, Iterator))

_ROWS_PER_FLUSH = 65536


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


class _Sink:
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

    def __init__(self, file: Any) -> None:
        self._sink = _Sink(file)
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
        each), None (nothing) or iterables of them."""
        try:
            text: str | None = "\n".join(results)  # the common case: every result is a str
        except TypeError:
            text = None
        if text is None:
            lines: list[Any] = []
            for result in results:
                if result is None:
                    continue
                if isinstance(result, (str, bytes)):
                    lines.append(result)
                elif _is_several(result):
                    for line in result:
                        if isinstance(line, (str, bytes)):
                            lines.append(line)
                        elif line is not None:
                            raise _refuse("text", "record", line, where=" inside a list")
                else:
                    raise _refuse("text", "record", result)
            self.write_lines(lines)
        elif results:
            self.write((text + "\n").encode(), len(results))

    def write_lines(self, lines: list[Any]) -> None:
        """Write each str or bytes in ``lines`` followed by a newline."""
        if not lines:
            return
        try:
            data = ("\n".join(lines) + "\n").encode()
        except TypeError:
            data = b"".join(_as_bytes(line) + b"\n" for line in lines)
        self.write(data, len(lines))

    def write_block(self, result: Any) -> None:
        """Write what a per-block function returned: None, a str or bytes written as is,
        or an iterable of lines."""
        if result is None:
            return
        if isinstance(result, (str, bytes)):
            data = _as_bytes(result)
            self.write(data, data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1))
            return
        _refuse_columnar(result, "text")
        if not _is_several(result):
            raise _refuse("text", "block", result)
        lines: list[Any] = []
        for line in result:
            if line is None:
                continue
            if not isinstance(line, (str, bytes)):
                raise _refuse("text", "block", line, where=" inside an iterable")
            lines.append(line)
            if len(lines) >= _ROWS_PER_FLUSH:
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


# -- helpers shared by the writers -------------------------------------------------------


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise _refuse("text", "record", value)


def _is_table(value: Any) -> bool:
    return type(value).__module__.startswith("pyarrow") and hasattr(value, "num_rows")


def _is_array(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype")


def _refuse_columnar(result: Any, name: str) -> None:
    if _is_table(result):
        raise ReturnTypeError(f"the function returned a {type(result).__name__}, which "
                        f"output_format={name!r} cannot write; pass output_format='parquet', "
                        f"'csv' or 'jsonl' (CLI: --output-format)")
    if _is_array(result):
        raise ReturnTypeError(f"the function returned a numpy {type(result).__name__}, which "
                        f"output_format={name!r} cannot write; pass output_format='npy' "
                        f"(CLI: --output-format npy) or return lines")


def _records(results: Iterable[Any]) -> Iterator[Any]:
    """Flatten per-record results: None is nothing, a list/tuple/generator is several."""
    for result in results:
        if result is None:
            continue
        if isinstance(result, (list, tuple, Iterator)):
            yield from (r for r in result if r is not None)
        else:
            yield result


def _json_default(value: Any) -> Any:
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        return value.tolist() if hasattr(value, "shape") and value.shape else value.item()
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise ReturnTypeError(f"cannot write {type(value).__name__} {value!r:.80} as JSON; "
                          f"output_format='jsonl' accepts {ACCEPTED_RETURNS['jsonl', 'record']}")


# -- csv ---------------------------------------------------------------------------------


class _CSVWriter(PartWriter):
    extension = ".csv"

    def __init__(self, file: Any, spec: CSVOutput) -> None:
        super().__init__(file)
        self._spec = spec
        self._columns: list[str] | None = list(spec.columns) if spec.columns else None
        self._header_done = not spec.header
        self._arrow: Any = None

    def write_results(self, results: list[Any]) -> None:
        """Write rows: dicts, or lists of dicts."""
        self._write_rows(list(_records(results)))

    def write_block(self, result: Any) -> None:
        """Write a ``pyarrow.Table``, str/bytes as is, or rows (dicts)."""
        if result is None:
            return
        if isinstance(result, (str, bytes)):
            PartWriter.write_block(self, result)
        elif _is_table(result):
            self._write_table(result)
        elif isinstance(result, Mapping):
            self._write_rows([result])
        else:
            _refuse_columnar(result, "csv")
            if not _is_several(result):
                raise _refuse("csv", "block", result)
            rows: list[Any] = []
            for row in _records([result]):
                rows.append(row)
                if len(rows) >= _ROWS_PER_FLUSH:
                    self._write_rows(rows)
                    rows = []
            self._write_rows(rows)

    def _write_rows(self, rows: list[Any]) -> None:
        if not rows:
            return
        for row in rows:
            if not isinstance(row, Mapping):
                raise _refuse("csv", "record", row)
        if self._columns is None:
            self._columns = [str(k) for k in rows[0]]
        out = io.StringIO()
        writer = csv.DictWriter(out, self._columns, delimiter=self._spec.sep,
                                lineterminator="\n", extrasaction="raise")
        if not self._header_done:
            writer.writeheader()
            self._header_done = True
        try:
            writer.writerows(rows)
        except ValueError as exc:
            raise ValueError(f"{exc}: a row has keys the part's header {self._columns} lacks; "
                             f"return the same keys in every row, or pass "
                             f"CSVOutput(columns=[...])") from None
        self.write(out.getvalue().encode(), len(rows))

    def _write_table(self, table: Any) -> None:
        pa = pyarrow("output_format='csv'")
        pa_csv = require("pyarrow.csv", "output_format='csv'")
        if self._columns is not None and table.column_names != self._columns:
            table = table.select(self._columns)
        if self._arrow is None:
            self._columns = list(table.column_names)
            options = pa_csv.WriteOptions(include_header=not self._header_done,
                                          delimiter=self._spec.sep)
            self._arrow = pa_csv.CSVWriter(pa.PythonFile(self._sink, mode="w"),
                                           table.schema, write_options=options)
            self._header_done = True
        self._arrow.write(table)
        self.records += table.num_rows

    def close(self) -> None:
        """Write the header of an empty part (when the columns are known)."""
        if self._arrow is not None:
            self._arrow.close()
        elif not self._header_done and self._columns:
            self._write_rows_header()

    def _write_rows_header(self) -> None:
        out = io.StringIO()
        csv.writer(out, delimiter=self._spec.sep, lineterminator="\n").writerow(self._columns or [])
        self.write(out.getvalue().encode())
        self._header_done = True


# -- jsonl -------------------------------------------------------------------------------


class _JSONLinesWriter(PartWriter):
    extension = ".jsonl"

    def write_results(self, results: list[Any]) -> None:
        """Write each record (any JSON value) as one line."""
        self._dump(list(_records(results)))

    def write_block(self, result: Any) -> None:
        """Write a ``pyarrow.Table`` row by row, str/bytes as is, or records."""
        if result is None:
            return
        if isinstance(result, (str, bytes)):
            PartWriter.write_block(self, result)
        elif _is_table(result):
            batches = (result.to_batches(max_chunksize=_ROWS_PER_FLUSH)
                       if hasattr(result, "to_batches") else [result])  # a RecordBatch
            for batch in batches:
                self._dump(batch.to_pylist())
        elif isinstance(result, Mapping):
            self._dump([result])
        else:
            _refuse_columnar(result, "jsonl")
            if not _is_several(result) and not isinstance(result, (int, float, bool)):
                raise _refuse("jsonl", "block", result)
            self._dump(list(_records([result])))

    def _dump(self, records: Sequence[Any]) -> None:
        if not records:
            return
        dumps = json.dumps
        try:
            text = "".join(dumps(r, ensure_ascii=False, default=_json_default) + "\n"
                           for r in records)
        except ReturnTypeError:
            raise
        except (TypeError, ValueError) as exc:  # keys that are not str, circular values
            raise ReturnTypeError(f"cannot write a record as JSON ({exc}); output_format="
                                  f"'jsonl' accepts {ACCEPTED_RETURNS['jsonl', 'record']}"
                                  ) from None
        self.write(text.encode(), len(records))


# -- parquet -----------------------------------------------------------------------------


class _ParquetWriter(PartWriter):
    extension = ".parquet"

    def __init__(self, file: Any, spec: ParquetOutput) -> None:
        super().__init__(file)
        self._spec = spec
        self._schema: Any = spec.arrow_schema()
        self._writer: Any = None
        self._rows: list[Any] = []

    def write_results(self, results: list[Any]) -> None:
        """Buffer dict rows; a row group is written every 65,536 rows."""
        for row in _records(results):
            if not isinstance(row, Mapping):
                raise _refuse("parquet", "record", row)
            self._rows.append(row)
        if len(self._rows) >= _ROWS_PER_FLUSH:
            self._flush_rows()

    def write_block(self, result: Any) -> None:
        """Write a ``pyarrow.Table`` or ``RecordBatch`` (a pandas DataFrame is
        converted), a dict or an iterable of dicts."""
        if result is None:
            return
        pa = pyarrow("output_format='parquet'")
        if type(result).__name__ == "DataFrame" and hasattr(result, "to_parquet"):
            result = pa.Table.from_pandas(result, preserve_index=False)
        if _is_table(result):
            self._flush_rows()
            table = result if isinstance(result, pa.Table) else pa.Table.from_batches([result])
            self._write_table(table)
        elif isinstance(result, Mapping):
            self.write_results([result])
        elif _is_several(result):
            self.write_results([result if isinstance(result, (list, tuple)) else
                                list(result)])
        else:
            raise _refuse("parquet", "block", result, "; it writes pyarrow Tables or dicts")

    def _flush_rows(self) -> None:
        if not self._rows:
            return
        pa = pyarrow("output_format='parquet'")
        rows, self._rows = self._rows, []
        self._write_table(pa.Table.from_pylist(rows, schema=self._schema))

    def _write_table(self, table: Any) -> None:
        pa = pyarrow("output_format='parquet'")
        pq = require("pyarrow.parquet", "output_format='parquet'")
        if self._schema is None:
            self._schema = table.schema
        if table.schema != self._schema:
            try:
                table = table.select(self._schema.names).cast(self._schema)
            except (KeyError, ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ReturnTypeError(
                    f"this table's schema does not match the part's schema "
                    f"({self._schema}); got ({table.schema}): {exc}. Return tables with one "
                    f"schema, or pass ParquetOutput(schema=...)") from None
        if self._writer is None:
            self._writer = pq.ParquetWriter(pa.PythonFile(self._sink, mode="w"), self._schema,
                                            compression=self._spec.compression)
        self._writer.write_table(table, row_group_size=self._spec.row_group_size)
        self.records += table.num_rows

    def close(self) -> None:
        """Write the remaining rows and the footer; an empty part still gets a valid
        file with the schema (an empty schema if none is known)."""
        self._flush_rows()
        if self._writer is None:
            pa = pyarrow("output_format='parquet'")
            self._write_table((self._schema or pa.schema([])).empty_table())
        self._writer.close()


# -- npy ---------------------------------------------------------------------------------


class _NpyWriter(PartWriter):
    extension = ".npy"

    def __init__(self, file: Any, spec: NpyOutput) -> None:
        super().__init__(file)
        self._spec = spec
        self._arrays: list[Any] = []

    def write_results(self, results: list[Any]) -> None:
        """Collect numpy scalars or arrays (one record each, or a record per row)."""
        np = numpy("output_format='npy'")
        items = list(_records(results))
        if not items:
            return
        if all(isinstance(i, np.ndarray) for i in items):
            for item in items:
                _check_npy(np, item, "record")
            self._arrays.extend(items)
        else:
            for item in items:
                if not isinstance(item, (np.ndarray, np.generic, int, float, complex)) or \
                        (isinstance(item, np.ndarray) and item.dtype.hasobject):
                    raise _refuse("npy", "record", item)
            first = items[0]
            dtype = first.dtype if isinstance(first, np.generic) else None
            self._arrays.append(_check_npy(np, np.array(items, dtype=dtype), "record"))

    def write_block(self, result: Any) -> None:
        """Collect a numpy array (rows along axis 0)."""
        if result is None:
            return
        np = numpy("output_format='npy'")
        if isinstance(result, (str, bytes, Mapping)) or _is_table(result) or not (
                isinstance(result, (np.ndarray, np.generic, int, float, complex, list,
                                    tuple))):
            raise _refuse("npy", "block", result, "; it writes numpy arrays")
        array = result if isinstance(result, np.ndarray) else np.asarray(result)
        self._arrays.append(_check_npy(np, array, "block"))

    def close(self) -> None:
        """Write the header and the concatenated arrays."""
        np = numpy("output_format='npy'")
        if not self._arrays:
            array = np.empty(0, dtype=self._spec.dtype or "float64")
        elif len(self._arrays) == 1:
            array = self._arrays[0]
        else:
            array = np.concatenate(self._arrays)
        self._arrays = []
        if self._spec.dtype is not None:
            array = array.astype(self._spec.dtype, copy=False)
        np.lib.format.write_array(self._sink, np.ascontiguousarray(array), allow_pickle=False)
        self.records += len(array) if array.ndim else 1


def _check_npy(np: Any, array: Any, mode: str) -> Any:
    """Return ``array``, or raise if ``.npy`` cannot hold it (objects need pickle)."""
    if array.dtype.hasobject:
        raise _refuse("npy", mode, array, "; values of mixed or non-numeric types make an "
                      "object array, which .npy cannot store without pickle")
    return array


# -- the specs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextOutput:
    """Text lines (``part-NNNNN.txt``), the default."""

    name: str = "text"
    extension: str = ".txt"
    is_streaming_text: bool = True

    def open(self, file: Any) -> PartWriter:
        """Return a writer over ``file``."""
        return PartWriter(file)


@dataclass(frozen=True, slots=True)
class CSVOutput:
    """CSV part-files (``.csv``) with a header line in each (``header=False`` drops it).

    ``columns`` fixes the header and column order for dict rows; by default it is the
    keys of the first row of each part.
    """

    header: bool = True
    sep: str = ","
    columns: Sequence[str] | None = None
    name: str = "csv"
    extension: str = ".csv"
    is_streaming_text: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.sep, str) or len(self.sep) != 1:
            raise ConfigError(f"sep must be one character, got {self.sep!r}")
        if self.columns is not None:
            object.__setattr__(self, "columns", tuple(self.columns))

    def open(self, file: Any) -> PartWriter:
        """Return a writer over ``file``."""
        return _CSVWriter(file, self)


@dataclass(frozen=True, slots=True)
class JSONLinesOutput:
    """JSON Lines part-files (``.jsonl``): one JSON value per line, UTF-8."""

    name: str = "jsonl"
    extension: str = ".jsonl"
    is_streaming_text: bool = True

    def open(self, file: Any) -> PartWriter:
        """Return a writer over ``file``."""
        return _JSONLinesWriter(file)


@dataclass(frozen=True, slots=True)
class ParquetOutput:
    """Parquet part-files (``.parquet``).

    ``schema`` (a ``pyarrow.Schema`` or a mapping of column names to pyarrow type
    names) gives every part the same schema, empty parts included; without it, each part
    takes the schema of its first table (or of its dict rows, as pyarrow infers it).
    """

    schema: Any = None
    compression: str = "snappy"
    row_group_size: int | None = None
    name: str = "parquet"
    extension: str = ".parquet"
    is_streaming_text: bool = False

    def arrow_schema(self) -> Any:
        """Return ``schema`` as a ``pyarrow.Schema`` (or None)."""
        if self.schema is None:
            return None
        pa = pyarrow("output_format='parquet'")
        if isinstance(self.schema, pa.Schema):
            return self.schema
        try:
            return pa.schema([pa.field(n, pa.type_for_alias(t)) if isinstance(t, str)
                              else pa.field(n, t) for n, t in dict(self.schema).items()])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"schema {self.schema!r} is not a pyarrow schema or a mapping "
                              f"of column names to type names like 'int64': {exc}") from None

    def open(self, file: Any) -> PartWriter:
        """Return a writer over ``file``."""
        return _ParquetWriter(file, self)


@dataclass(frozen=True, slots=True)
class NpyOutput:
    """NumPy ``.npy`` part-files: one array per part, rows along axis 0.

    ``dtype`` casts every part to one dtype (and gives empty parts their dtype).
    """

    dtype: Any = None
    name: str = "npy"
    extension: str = ".npy"
    is_streaming_text: bool = False

    def open(self, file: Any) -> PartWriter:
        """Return a writer over ``file``."""
        return _NpyWriter(file, self)


def get_output_format(spec: str | OutputFormat) -> OutputFormat:
    """Return the output format for a name or a spec instance.

    Examples
    --------
    >>> get_output_format("csv").extension
    '.csv'
    >>> get_output_format("xlsx")
    Traceback (most recent call last):
    ...
    blockproc.ConfigError: unknown output_format 'xlsx'; choose one of text, csv, jsonl, ...
    """
    if isinstance(spec, str):
        return REGISTRY.load(spec)()  # type: ignore[no-any-return]
    if isinstance(spec, OutputFormat):
        return spec
    raise TypeError(f"output_format must be a name or an output spec, got {spec!r}")
