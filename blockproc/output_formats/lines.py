"""The ``text`` output format: one line per record (``part-NNNNN.txt``), the write side
of :mod:`blockproc.formats.lines`.

>>> import io
>>> file = io.BytesIO()
>>> with TextOutput().open(file) as writer:
...     writer.write_results(["a", None, ["b", "c"]])
>>> file.getvalue(), writer.records
(b'a\\nb\\nc\\n', 3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blockproc.output_formats.base import PartWriter


@dataclass(frozen=True, slots=True)
class TextOutput:
    """Text lines (``part-NNNNN.txt``), the default."""

    name: str = "text"
    extension: str = ".txt"
    is_streaming_text: bool = True

    def open(self, file: Any) -> PartWriter:
        """Return a writer over ``file``."""
        return PartWriter(file)
