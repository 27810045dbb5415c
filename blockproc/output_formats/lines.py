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

from typing import Any

from blockproc._frozen import FrozenSlots
from blockproc.output_formats.base import PartWriter


class TextOutput(FrozenSlots):
    """Text lines (``part-NNNNN.txt``), the default."""

    _fields = ("name", "extension", "is_streaming_text")
    __slots__ = _fields
    name: str
    extension: str
    is_streaming_text: bool

    def __init__(self, name: str = "text", extension: str = ".txt",
                 is_streaming_text: bool = True) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "extension", extension)
        object.__setattr__(self, "is_streaming_text", is_streaming_text)

    def open(self, file: Any) -> PartWriter:
        """Return a writer over ``file``."""
        return PartWriter(file)
