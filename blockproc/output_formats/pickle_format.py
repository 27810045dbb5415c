"""The ``pickle`` output format: what the function returned, sent back to the master
(``JobResult.values``, :func:`~blockproc.reduce_blocks`) and, with an output directory,
kept as the part-file ``part-NNNNN.pickle``, so that a resumed job reads back the values
of the blocks it committed before.

A per-block function's value is its return value as is (an iterator is turned into a
list); a per-record function's is the list of its non-None results
(``PickleOutput(per_record=True)``, which the job sets for ``map_lines``).

>>> import io, pickle
>>> file = io.BytesIO()
>>> with PickleOutput().open(file) as writer:
...     writer.write_block({"GET": 3})
>>> pickle.loads(file.getvalue()), writer.records
({'GET': 3}, 1)
>>> with PickleOutput(per_record=True).open(io.BytesIO()) as writer:
...     writer.write_results(["a", None, ["b", "c"]])
>>> pickle.loads(writer.value_bytes)
['a', 'b', 'c']
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from blockproc.output_formats.base import PartWriter, flatten_records
from blockproc.values import pickle_value


class _PickleWriter(PartWriter):
    extension = ".pickle"

    def __init__(self, file: Any, per_record: bool) -> None:
        super().__init__(file)
        self._value: Any = None
        self._rows: list[Any] | None = [] if per_record else None

    def write_results(self, results: list[Any]) -> None:
        """Keep the non-None results of a per-record function (a list for the block)."""
        if self._rows is None:
            self._rows = []
        before = len(self._rows)
        self._rows.extend(flatten_records(results))
        self.records += len(self._rows) - before

    def write_block(self, result: Any) -> None:
        """Keep what a per-block function returned (an iterator becomes a list)."""
        self._value = list(result) if isinstance(result, Iterator) else result
        self.records = 0 if result is None else 1

    def close(self) -> None:
        """Pickle the value into the part-file (``value_bytes`` keeps the same bytes)."""
        value = self._rows if self._rows is not None else self._value
        data = pickle_value(value)
        self.value_bytes = data
        self.write(data)


@dataclass(frozen=True, slots=True)
class PickleOutput:
    """The function's results as one pickled value per block (``part-NNNNN.pickle``)."""

    name: str = "pickle"
    extension: str = ".pickle"
    is_streaming_text: bool = False
    per_record: bool = False
    """The value is a list of results, empty for a block without any."""

    def open(self, file: Any) -> PartWriter:
        """Return a writer over ``file``."""
        return _PickleWriter(file, self.per_record)
