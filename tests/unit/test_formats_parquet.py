"""format="parquet": the row-group midpoint rule, columns, and errors."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from blockproc import formats
from blockproc.errors import ConfigError, InputError
from blockproc.formats import Parquet
from blockproc.formats.parquet import owned, row_group_spans
from blockproc.model import InputFile
from blockproc.planning import nominal_ranges

TABLE = pa.table({"i": list(range(100)), "s": [f"value-{i:04d}" for i in range(100)]})


def parquet_bytes(table: pa.Table = TABLE, row_group_size: int = 10) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size, compression="none")
    return buf.getvalue()


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.bytes_read = 0

    def __call__(self, start: int, end: int) -> bytes:
        piece = self.data[start:end]
        self.bytes_read += len(piece)
        return piece


def read_blocks(data: bytes, block_size: int, fmt: Parquet) -> list[pa.Table]:
    read = Reader(data)
    return [fmt.decode_block(b"".join(fmt.read_block(read, s, e, len(data))),
                             at_file_start=s == 0)
            for s, e in nominal_ranges(len(data), block_size)]


def test_every_row_group_belongs_to_the_block_holding_its_midpoint() -> None:
    data = parquet_bytes()
    spans = row_group_spans(pq.ParquetFile(io.BytesIO(data)).metadata)
    assert len(spans) == 10 and spans[0][0] == 4
    for block_size in (1, 17, 100, 333, 1000, len(data)):
        ranges = nominal_ranges(len(data), block_size)
        owners = [owned(spans, s, e) for s, e in ranges]
        assert sorted(i for o in owners for i in o) == list(range(10)), block_size
        tables = read_blocks(data, block_size, Parquet())
        assert pa.concat_tables(tables).equals(TABLE), block_size
        for table, groups in zip(tables, owners, strict=True):
            assert table.num_rows == 10 * len(groups)


def test_blocks_smaller_than_a_row_group_own_nothing_but_keep_the_schema() -> None:
    tables = read_blocks(parquet_bytes(), 7, Parquet())
    empty = [t for t in tables if t.num_rows == 0]
    assert empty and all(t.schema.names == ["i", "s"] for t in empty)


def test_boundary_is_the_start_of_the_first_owned_row_group() -> None:
    data = parquet_bytes()
    read = Reader(data)
    spans = row_group_spans(pq.ParquetFile(io.BytesIO(data)).metadata)
    fmt = Parquet()
    assert fmt.boundary(read, 0, len(data), max_record_size=0).offset == 0
    assert fmt.boundary(read, spans[3][0], len(data), max_record_size=0).offset == spans[3][0]
    assert fmt.boundary(read, spans[3][0] + 1, len(data), max_record_size=0).offset in (
        spans[3][0], spans[4][0])
    assert fmt.boundary(read, len(data) - 1, len(data), max_record_size=0).offset == len(data)


def test_columns_are_selected_and_others_never_read() -> None:
    table = pa.table({"small": list(range(10_000)),
                      "big": [f"{i:08d}" * 25 for i in range(10_000)]})
    data = parquet_bytes(table, row_group_size=10_000)
    read = Reader(data)
    fmt = Parquet(columns=["small"])
    got = fmt.decode_block(b"".join(fmt.read_block(read, 0, len(data), len(data))),
                           at_file_start=True)
    assert got.column_names == ["small"] and got.num_rows == 10_000
    assert read.bytes_read < len(data) / 4  # the 2 MB "big" column was not fetched
    with pytest.raises(ConfigError, match="not in the Parquet schema"):
        list(Parquet(columns=["nope"]).read_block(read, 0, len(data), len(data)))


def test_map_lines_gets_rows_as_dicts_streamed_per_row_group() -> None:
    data = parquet_bytes()
    fmt = Parquet()
    chunks = list(fmt.read_block(Reader(data), 0, len(data), len(data)))
    batches = list(fmt.iter_batches(iter(chunks), at_file_start=True))
    assert len(batches) == 10 and batches[0][0] == {"i": 0, "s": "value-0000"}
    assert fmt.count_records(b"".join(chunks), at_file_start=True) == 100
    assert list(fmt.iter_batches([], at_file_start=True)) == []


def test_not_parquet_and_compressed_parquet_are_refused() -> None:
    with pytest.raises(InputError, match="cannot read the input as Parquet"):
        list(Parquet().read_block(Reader(b"not parquet at all"), 0, 18, 18))
    with pytest.raises(ConfigError, match="gzip-compressed"):
        Parquet().plan_blocks([InputFile("a.parquet.gz", 10, compression="gzip")], [],
                              None)  # type: ignore[arg-type]


def test_options_round_trip() -> None:
    fmt = Parquet(columns=("a", "b"))
    assert formats.from_dict(json.loads(json.dumps(fmt.to_dict()))) == fmt
    assert formats.get_format("parquet") == Parquet()
    with pytest.raises(TypeError, match="columns"):
        Parquet(columns="a")
