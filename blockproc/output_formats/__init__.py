"""Output formats: how what a mapper returns becomes the bytes of a part-file.

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
pickle    .pickle      any picklable value, sent back to the master too
                       (``JobResult.values``, ``reduce_blocks``)
========  ===========  ======================================================

In every format ``None`` writes nothing and a list, tuple or generator stands for
several records. text, csv and jsonl stream as results come; Parquet writes a row
group per table (or per 65,536 dict rows); ``.npy`` keeps the part's arrays until the
block ends, because its header holds the row count.

One module per output format, named after its :mod:`blockproc.formats` sibling:
``base`` (:class:`PartWriter`, which also writes ``text``; the checks that refuse a
value), ``lines`` (text), ``csv_format``, ``jsonl``, ``parquet``, ``npy`` and ``pickle_format``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blockproc._registry import Registry, lazy_attribute
from blockproc.output_formats.base import ACCEPTED_RETURNS, OutputFormat, PartWriter

if TYPE_CHECKING:
    from blockproc.output_formats.csv_format import CSVOutput
    from blockproc.output_formats.jsonl import JSONLinesOutput
    from blockproc.output_formats.lines import TextOutput
    from blockproc.output_formats.npy import NpyOutput
    from blockproc.output_formats.parquet import ParquetOutput
    from blockproc.output_formats.pickle_format import PickleOutput

__all__ = [
    "ACCEPTED_RETURNS", "OUTPUT_FORMATS", "CSVOutput", "JSONLinesOutput", "NpyOutput",
    "OutputFormat", "ParquetOutput", "PartWriter", "PickleOutput", "TextOutput",
    "get_output_format",
]

REGISTRY = Registry("output_format", {
    "text": "blockproc.output_formats.lines:TextOutput",
    "csv": "blockproc.output_formats.csv_format:CSVOutput",
    "jsonl": "blockproc.output_formats.jsonl:JSONLinesOutput",
    "parquet": "blockproc.output_formats.parquet:ParquetOutput",
    "npy": "blockproc.output_formats.npy:NpyOutput",
    "pickle": "blockproc.output_formats.pickle_format:PickleOutput",
}, alternative=" or pass a spec such as bp.output_formats.CSVOutput(header=False)")
"""The names ``output_format=`` accepts (``--output-format``), each an output spec class."""

OUTPUT_FORMATS = REGISTRY.names()
"""The names ``output_format=`` accepts."""

_LAZY = {"CSVOutput": "csv_format", "JSONLinesOutput": "jsonl", "NpyOutput": "npy",
         "ParquetOutput": "parquet", "PickleOutput": "pickle_format", "TextOutput": "lines"}
"""The module of each output spec, imported on first use (PEP 562): a job writing text
never loads the CSV, JSON Lines, Parquet or npy writers."""


def __getattr__(name: str) -> Any:
    """Load an output spec, or a submodule, on first use."""
    return lazy_attribute(__name__, globals(), _LAZY, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
