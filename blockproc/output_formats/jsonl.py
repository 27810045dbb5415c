"""The ``jsonl`` output format: one JSON value per line, UTF-8, the write side of
:mod:`blockproc.formats.jsonl`.

>>> import io
>>> file = io.BytesIO()
>>> with JSONLinesOutput().open(file) as writer:
...     writer.write_results([{"a": 1}, [2, "é"]])
>>> file.getvalue().decode()
'{"a": 1}\\n2\\n"é"\\n'
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blockproc.errors import ReturnTypeError
from blockproc.output_formats.base import (
    ACCEPTED_RETURNS,
    ROWS_PER_FLUSH,
    PartWriter,
    flatten_records,
    is_several,
    is_table,
    refuse,
    refuse_columnar,
)


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


class _JSONLinesWriter(PartWriter):
    extension = ".jsonl"

    def write_results(self, results: list[Any]) -> None:
        """Write each record (any JSON value) as one line."""
        self._dump(list(flatten_records(results)))

    def write_block(self, result: Any) -> None:
        """Write a ``pyarrow.Table`` row by row, str/bytes as is, or records."""
        if result is None:
            return
        if isinstance(result, (str, bytes)):
            PartWriter.write_block(self, result)
        elif is_table(result):
            batches = (result.to_batches(max_chunksize=ROWS_PER_FLUSH)
                       if hasattr(result, "to_batches") else [result])  # a RecordBatch
            for batch in batches:
                self._dump(batch.to_pylist())
        elif isinstance(result, Mapping):
            self._dump([result])
        else:
            refuse_columnar(result, "jsonl")
            if not is_several(result) and not isinstance(result, (int, float, bool)):
                raise refuse("jsonl", "block", result)
            self._dump(list(flatten_records([result])))

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



@dataclass(frozen=True, slots=True)
class JSONLinesOutput:
    """JSON Lines part-files (``.jsonl``): one JSON value per line, UTF-8."""

    name: str = "jsonl"
    extension: str = ".jsonl"
    is_streaming_text: bool = True

    def open(self, file: Any) -> PartWriter:
        """Return a writer over ``file``."""
        return _JSONLinesWriter(file)
