"""``format="jsonl"``: one JSON value per line (JSON Lines / NDJSON).

JSON strings cannot hold a raw newline, so blocks are cut on newlines exactly like
``lines``. Blank lines are skipped (as ``pyarrow.json`` does); a UTF-8 BOM at the start
of a file is dropped.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from blockproc._deps import pyarrow, require
from blockproc.errors import ConfigError, InputError
from blockproc.formats.base import DelimitedBoundary, split_chunks

_BOM = codecs.BOM_UTF8
_NOT_BLANK = re.compile(rb"[^ \t\r\n]")
_BLOCK_AS = ("table", "dicts")


@dataclass(frozen=True, slots=True)
class JSONLines(DelimitedBoundary):
    """JSON Lines: ``map_lines`` functions get each line parsed (``json.loads``: a dict
    for an object); ``map_blocks`` functions get a ``pyarrow.Table`` (``pyarrow.json``),
    or the list of parsed values with ``block_as="dicts"``.

    Parameters
    ----------
    block_as : {"table", "dicts"}, default "table"
        What ``map_blocks`` functions receive.
    schema : mapping of str to str, optional
        pyarrow type names for some fields (``{"id": "int64"}``). pyarrow infers the
        others per block, so a field absent from a block is absent from its table:
        give the schema when every block's table must have the same columns and types.

    Examples
    --------
    >>> list(JSONLines().iter_batches([b'{"a": 1}\\n\\n{"a": [2]}\\n'], at_file_start=True))
    [[{'a': 1}, {'a': [2]}]]
    >>> JSONLines().decode_block(b'{"a": 1}\\n{"a": 2}\\n', at_file_start=True).to_pylist()
    [{'a': 1}, {'a': 2}]
    """

    block_as: Literal["table", "dicts"] = "table"
    schema: Mapping[str, str] | tuple[tuple[str, str], ...] = ()
    name: str = "jsonl"

    def __post_init__(self) -> None:
        if self.block_as not in _BLOCK_AS:
            raise ConfigError(f"block_as must be 'table' or 'dicts', got {self.block_as!r}")
        types = dict(self.schema)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in types.items()):
            raise TypeError(f"schema must map field names to pyarrow type names such as "
                            f"'int64', got {self.schema!r}")
        object.__setattr__(self, "schema", tuple(sorted(types.items())))

    @property
    def delimiter(self) -> bytes:
        """Records end with ``b"\\n"``."""
        return b"\n"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe description."""
        return {"name": self.name, "block_as": self.block_as, "schema": dict(self.schema)}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> JSONLines:
        """Rebuild from :meth:`to_dict` output."""
        return cls(**dict(spec))

    def iter_batches(self, chunks: Iterable[bytes], *, at_file_start: bool) -> Iterator[list[Any]]:
        """Yield the parsed values of non-blank lines, a list per chunk."""
        number = 0
        for lines in split_chunks(_strip_bom(chunks) if at_file_start else chunks, b"\n"):
            batch = []
            for line in lines:
                number += 1
                if not line.strip():
                    continue
                try:
                    batch.append(json.loads(line))
                except ValueError as exc:
                    raise InputError(
                        f"line {number} of the block is not valid JSON ({exc}): "
                        f"{line[:200]!r}"
                    ) from None
            if batch:
                yield batch

    def decode_block(self, data: bytes, *, at_file_start: bool) -> Any:
        """Return the block's records as a ``pyarrow.Table`` (or a list, ``block_as``)."""
        if self.block_as == "dicts":
            return [r for batch in self.iter_batches([data], at_file_start=at_file_start)
                    for r in batch]
        pa = pyarrow("format='jsonl'")
        pa_json = require("pyarrow.json", "format='jsonl'")
        body = memoryview(data)
        if at_file_start and data.startswith(_BOM):
            body = body[len(_BOM):]
        schema = self._schema(pa)
        if not _NOT_BLANK.search(body):
            return (schema or pa.schema([])).empty_table()
        parse_opts = pa_json.ParseOptions(explicit_schema=schema,
                                          unexpected_field_behavior="infer")
        for block_size in (1 << 20, min(len(body) + 1, 2**31 - 1)):
            read_opts = pa_json.ReadOptions(use_threads=False, block_size=block_size)
            try:
                return pa_json.read_json(pa.BufferReader(pa.py_buffer(body)),
                                         read_options=read_opts, parse_options=parse_opts)
            except pa.ArrowInvalid as exc:
                if "straddl" in str(exc) and block_size < len(body):
                    continue  # a line longer than 1 MiB: parse the block in one piece
                raise InputError(f"cannot read the block as JSON lines: {exc}") from None
        raise AssertionError("unreachable")

    def count_records(self, data: bytes, *, at_file_start: bool) -> int:
        """Return how many non-blank lines an aligned range holds."""
        return sum(1 for line in data.split(b"\n") if line.strip())

    def _schema(self, pa: Any) -> Any:
        if not self.schema:
            return None
        try:
            return pa.schema([pa.field(n, pa.type_for_alias(t))
                              for n, t in dict(self.schema).items()])
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"schema {dict(self.schema)} holds a name that is not a "
                              f"pyarrow type; use names like 'int64', 'float64', 'string', "
                              f"'bool'") from None


def _strip_bom(chunks: Iterable[bytes]) -> Iterator[bytes]:
    head = b""
    it = iter(chunks)
    for chunk in it:
        head += chunk
        if len(head) >= len(_BOM) or not _BOM.startswith(head):
            break
    yield head.removeprefix(_BOM)
    yield from it
