"""The ``csv`` output format: a header line and dict rows or pyarrow Tables per
part-file, the write side of :mod:`blockproc.formats.csv_format`.

>>> import io
>>> file = io.BytesIO()
>>> with CSVOutput().open(file) as writer:
...     writer.write_results([{"a": 1, "b": "x"}, None])
>>> file.getvalue()
b'a,b\\n1,x\\n'
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blockproc._deps import pyarrow, require
from blockproc.errors import ConfigError
from blockproc.output_formats.base import (
    ROWS_PER_FLUSH,
    PartWriter,
    flatten_records,
    is_several,
    is_table,
    refuse,
    refuse_columnar,
)


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
        self._write_rows(list(flatten_records(results)))

    def write_block(self, result: Any) -> None:
        """Write a ``pyarrow.Table``, str/bytes as is, or rows (dicts)."""
        if result is None:
            return
        if isinstance(result, (str, bytes)):
            PartWriter.write_block(self, result)
        elif is_table(result):
            self._write_table(result)
        elif isinstance(result, Mapping):
            self._write_rows([result])
        else:
            refuse_columnar(result, "csv")
            if not is_several(result):
                raise refuse("csv", "block", result)
            rows: list[Any] = []
            for row in flatten_records([result]):
                rows.append(row)
                if len(rows) >= ROWS_PER_FLUSH:
                    self._write_rows(rows)
                    rows = []
            self._write_rows(rows)

    def _write_rows(self, rows: list[Any]) -> None:
        if not rows:
            return
        for row in rows:
            if not isinstance(row, Mapping):
                raise refuse("csv", "record", row)
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
