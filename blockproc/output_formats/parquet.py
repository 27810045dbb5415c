"""The ``parquet`` output format: pyarrow Tables or dict rows, a row group per table
(or per 65,536 rows), the write side of :mod:`blockproc.formats.parquet`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blockproc._deps import pyarrow, require
from blockproc.errors import ConfigError, ReturnTypeError
from blockproc.output_formats.base import (
    ROWS_PER_FLUSH,
    PartWriter,
    flatten_records,
    is_several,
    is_table,
    refuse,
)


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
        for row in flatten_records(results):
            if not isinstance(row, Mapping):
                raise refuse("parquet", "record", row)
            self._rows.append(row)
        if len(self._rows) >= ROWS_PER_FLUSH:
            self._flush_rows()

    def write_block(self, result: Any) -> None:
        """Write a ``pyarrow.Table`` or ``RecordBatch`` (a pandas DataFrame is
        converted), a dict or an iterable of dicts."""
        if result is None:
            return
        pa = pyarrow("output_format='parquet'")
        if type(result).__name__ == "DataFrame" and hasattr(result, "to_parquet"):
            result = pa.Table.from_pandas(result, preserve_index=False)
        if is_table(result):
            self._flush_rows()
            table = result if isinstance(result, pa.Table) else pa.Table.from_batches([result])
            self._write_table(table)
        elif isinstance(result, Mapping):
            self.write_results([result])
        elif is_several(result):
            self.write_results([result if isinstance(result, (list, tuple)) else
                                list(result)])
        else:
            raise refuse("parquet", "block", result, "; it writes pyarrow Tables or dicts")

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
