"""``format="parquet"``: Parquet files, split on row groups.

A row group belongs to the block that holds its midpoint (the rule of Spark and
parquet-mr), so each row group is read exactly once whatever the block size; blocks
that hold no midpoint own nothing. The plan stays nominal byte ranges (planning reads
nothing); each worker reads the footer, then only its row groups and columns.

Inside blockproc a Parquet block travels as an Arrow IPC stream of its row groups (one
chunk per row group): ``map_blocks`` functions get a ``pyarrow.Table``,
``map_lines`` functions each row as a dict, and a command reads the IPC stream on stdin.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blockproc._deps import pyarrow, require
from blockproc.errors import ConfigError, InputError
from blockproc.formats._streams import Capture, ChunkStream, RangeFile
from blockproc.formats.base import Boundary, ReadFn
from blockproc.formats.hooks import FileAccess
from blockproc.model import Block, InputFile


def row_group_spans(metadata: Any) -> list[tuple[int, int]]:
    """Return ``(start, end)`` byte ranges of the row groups in a Parquet footer.

    A row group starts at the first page of its first column chunk (the dictionary
    page if there is one) and spans its columns' compressed size.
    """
    spans = []
    for i in range(metadata.num_row_groups):
        rg = metadata.row_group(i)
        starts, total = [], 0
        for j in range(rg.num_columns):
            col = rg.column(j)
            offsets = [o for o in (col.dictionary_page_offset, col.data_page_offset)
                       if o is not None and o > 0]
            if offsets:
                starts.append(min(offsets))
            total += col.total_compressed_size
        start = min(starts) if starts else 4
        spans.append((start, start + total))
    return spans


def owned(spans: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    """Return the indices of the row groups whose midpoint is in ``[start, end)``.

    Examples
    --------
    >>> spans = [(4, 104), (104, 204), (204, 254)]
    >>> owned(spans, 0, 100), owned(spans, 100, 200), owned(spans, 200, 300)
    ([0], [1], [2])
    >>> owned(spans, 50, 160)
    [0, 1]
    """
    return [i for i, (a, b) in enumerate(spans) if start <= a + (b - a) // 2 < end]


@dataclass(frozen=True, slots=True)
class Parquet:
    """Parquet input, one or more row groups per block.

    Parameters
    ----------
    columns : sequence of str, optional
        Read only these columns (the others are never fetched).

    Examples
    --------
    >>> import io, pyarrow as pa, pyarrow.parquet as pq
    >>> buf = io.BytesIO()
    >>> pq.write_table(pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]}), buf, row_group_size=2)
    >>> data = buf.getvalue()
    >>> chunks = Parquet(columns=["a"]).read_block(lambda s, e: data[s:e], 0, len(data),
    ...                                             len(data))
    >>> Parquet().decode_block(b"".join(chunks), at_file_start=True).to_pylist()
    [{'a': 1}, {'a': 2}, {'a': 3}]
    """

    columns: Sequence[str] | None = None
    name: str = "parquet"

    def __post_init__(self) -> None:
        if self.columns is not None:
            if isinstance(self.columns, str) or not all(isinstance(c, str) for c in self.columns):
                raise TypeError(f"columns must be a sequence of str, got {self.columns!r}")
            object.__setattr__(self, "columns", tuple(self.columns))

    @property
    def delimiter(self) -> bytes:
        """Parquet has no record delimiter (``b""``)."""
        return b""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe description."""
        return {"name": self.name,
                "columns": None if self.columns is None else list(self.columns)}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Parquet:
        """Rebuild from :meth:`to_dict` output."""
        return cls(**dict(spec))

    def boundary(self, read: ReadFn, pos: int, size: int, *, max_record_size: int) -> Boundary:
        """Return the start of the first row group whose midpoint is at or after ``pos``."""
        if pos <= 0:
            return Boundary(0, b"", 0)
        if pos >= size:
            return Boundary(size, b"", size)
        spans = row_group_spans(self._open(read, size).metadata)
        later = owned(spans, pos, size)
        offset = spans[later[0]][0] if later else size
        return Boundary(offset, b"", offset)

    def read_block(self, read: ReadFn, start: int, end: int, size: int) -> Iterator[bytes]:
        """Yield an Arrow IPC stream of the row groups the block owns, a chunk per row
        group (the schema alone when it owns none)."""
        pa = pyarrow("format='parquet'")
        ipc = require("pyarrow.ipc", "format='parquet'")
        pf = self._open(read, size)
        groups = owned(row_group_spans(pf.metadata), start, end)
        schema = pf.schema_arrow
        if self.columns is not None:
            missing = [c for c in self.columns if c not in schema.names]
            if missing:
                raise ConfigError(f"columns {missing} are not in the Parquet schema "
                                  f"{schema.names}; check the names")
            schema = pa.schema([schema.field(c) for c in self.columns],
                               metadata=schema.metadata)
        sink = Capture()
        with ipc.new_stream(pa.PythonFile(sink, mode="w"), schema) as writer:
            yield sink.take()
            for i in groups:
                table = pf.read_row_group(i, columns=self.columns, use_threads=False)
                writer.write_table(table.cast(schema) if table.schema != schema else table)
                yield sink.take()
        yield sink.take()

    def iter_batches(self, chunks: Iterable[bytes], *, at_file_start: bool) -> Iterator[list[Any]]:
        """Yield the rows of a block's IPC stream as dicts, a list per record batch."""
        reader = self._stream(chunks)
        if reader is None:
            return
        for batch in reader:
            if batch.num_rows:
                yield batch.to_pylist()

    def decode_block(self, data: bytes, *, at_file_start: bool) -> Any:
        """Return a block's IPC stream as a ``pyarrow.Table`` (zero-copy)."""
        pa = pyarrow("format='parquet'")
        ipc = require("pyarrow.ipc", "format='parquet'")
        if not data:
            return pa.table({})
        return ipc.open_stream(pa.BufferReader(pa.py_buffer(data))).read_all()

    def count_records(self, data: bytes, *, at_file_start: bool) -> int:
        """Return the rows in a block's IPC stream."""
        return int(self.decode_block(data, at_file_start=at_file_start).num_rows)

    def plan_blocks(self, files: Sequence[InputFile], blocks: Sequence[Block],
                    access: FileAccess) -> tuple[Parquet, list[Block]]:
        """Refuse compressed Parquet files (Parquet compresses inside; reads nothing)."""
        for f in files:
            if f.compression:
                raise ConfigError(
                    f"{f.path!r} is a {f.compression}-compressed file, which format='parquet' "
                    f"cannot split or seek in; Parquet compresses its pages itself, so store "
                    f"the .parquet file uncompressed")
        return self, list(blocks)

    def _open(self, read: ReadFn, size: int) -> Any:
        """Open the file reading exactly its footer (two small reads), not the 64 KiB tail
        pyarrow would fetch for every block."""
        pq = require("pyarrow.parquet", "format='parquet'")
        pa = pyarrow("format='parquet'")
        tail = read(size - 8, size) if size >= 12 else b""
        length = int.from_bytes(tail[:4], "little") if len(tail) == 8 else -1
        if tail[4:] != b"PAR1" or not 0 < length <= size - 12:
            raise InputError(f"cannot read the input as Parquet: it does not end with a "
                             f"Parquet footer ({size} bytes, tail {tail!r}); the file is "
                             f"truncated or not Parquet: re-create it, or pick its format")
        footer = read(size - 8 - length, size - 8)
        try:
            metadata = pq.read_metadata(pa.BufferReader(b"PAR1" + footer + tail))
            return pq.ParquetFile(RangeFile(read, size), metadata=metadata, pre_buffer=False)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"cannot read the input as Parquet: {exc}; the file is corrupt "
                             f"or not Parquet: re-create it, or pick its format") from None

    @staticmethod
    def _stream(chunks: Iterable[bytes]) -> Any:
        pa = pyarrow("format='parquet'")
        ipc = require("pyarrow.ipc", "format='parquet'")
        it = iter(chunks)
        for first in it:
            if first:
                return ipc.open_stream(pa.PythonFile(ChunkStream(it, first), mode="r"))
        return None
