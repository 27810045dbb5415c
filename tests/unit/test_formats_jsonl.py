"""format="jsonl": records, tables, options and errors."""

from __future__ import annotations

import json

import pytest

from blockproc import formats
from blockproc.errors import ConfigError, InputError
from blockproc.formats import JSONLines

DATA = b'{"a": 1, "b": "x"}\n\n{"a": 2, "b": "y\\nz"}\r\n  \n{"a": 3}'


def records(fmt: JSONLines, chunks: list[bytes], at_file_start: bool = True) -> list[object]:
    return [r for batch in fmt.iter_batches(chunks, at_file_start=at_file_start) for r in batch]


def test_lines_are_parsed_and_blank_lines_skipped() -> None:
    assert records(JSONLines(), [DATA]) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y\nz"}, {"a": 3}]


def test_any_chunking_gives_the_same_records() -> None:
    whole = records(JSONLines(), [DATA])
    for cut in range(len(DATA) + 1):
        assert records(JSONLines(), [DATA[:cut], DATA[cut:]]) == whole


def test_a_bom_is_dropped_only_at_the_file_start() -> None:
    data = b"\xef\xbb\xbf" + DATA
    assert records(JSONLines(), [data[:1], data[1:]]) == records(JSONLines(), [DATA])
    assert JSONLines().decode_block(data, at_file_start=True).num_rows == 3


def test_map_blocks_gets_a_table_or_dicts() -> None:
    table = JSONLines().decode_block(DATA, at_file_start=True)
    assert table.num_rows == 3 and table.column("a").to_pylist() == [1, 2, 3]
    assert JSONLines(block_as="dicts").decode_block(DATA, at_file_start=True) == \
        records(JSONLines(), [DATA])


def test_schema_fixes_types_and_keeps_absent_fields() -> None:
    table = JSONLines(schema={"a": "float64", "c": "string"}).decode_block(
        b'{"a": 1}\n', at_file_start=False)
    assert table.schema.field("a").type.__str__() == "double"
    assert table.to_pylist() == [{"a": 1.0, "c": None}]
    with pytest.raises(ConfigError, match="not a pyarrow type"):
        JSONLines(schema={"a": "floaty"}).decode_block(b'{"a": 1}\n', at_file_start=True)


def test_an_empty_block_is_an_empty_table() -> None:
    assert JSONLines().decode_block(b"\n \r\n", at_file_start=True).num_rows == 0
    assert JSONLines(schema={"a": "int64"}).decode_block(
        b"", at_file_start=True).column_names == ["a"]


def test_invalid_json_names_the_line() -> None:
    with pytest.raises(InputError, match=r"line 2 of the block is not valid JSON.*b'\{oops'"):
        records(JSONLines(), [b'{"a": 1}\n{oops\n'])
    with pytest.raises(InputError, match="cannot read the block as JSON"):
        JSONLines().decode_block(b'{"a": 1}\n{oops\n', at_file_start=True)


def test_boundaries_are_the_lines_rule() -> None:
    data = b'{"a":1}\n{"a":2}\n'

    def read(s: int, e: int) -> bytes:
        return data[s:e]

    got = [JSONLines().boundary(read, p, len(data), max_record_size=99).offset
           for p in range(len(data) + 1)]
    assert got == [0] + [8] * 7 + [16] * 9
    assert JSONLines().count_records(data, at_file_start=True) == 2


def test_options_are_checked_and_round_trip() -> None:
    with pytest.raises(ConfigError, match="block_as"):
        JSONLines(block_as="rows")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="schema"):
        JSONLines(schema={"a": 1})  # type: ignore[dict-item]
    fmt = JSONLines(block_as="dicts", schema={"a": "int64"})
    assert formats.from_dict(json.loads(json.dumps(fmt.to_dict()))) == fmt
    assert formats.get_format("jsonl") == JSONLines()
