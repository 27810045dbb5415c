"""Output formats (blockproc.output_formats): text, csv, jsonl, parquet, npy."""

from __future__ import annotations

import datetime as dt
import io
import json
import zlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockproc.errors import ConfigError, ReturnTypeError
from blockproc.output_formats import (
    ACCEPTED_RETURNS,
    OUTPUT_FORMATS,
    CSVOutput,
    JSONLinesOutput,
    NpyOutput,
    OutputFormat,
    ParquetOutput,
    PartWriter,
    TextOutput,
    get_output_format,
)


def written(spec: OutputFormat, *calls: tuple[str, Any]) -> tuple[bytes, PartWriter]:
    """Run ``(method, argument)`` calls on a writer over a BytesIO; return the bytes."""
    buf = io.BytesIO()
    with spec.open(buf) as writer:
        for method, arg in calls:
            getattr(writer, method)(arg)
    data = buf.getvalue()
    assert writer.bytes_written == len(data)
    assert writer.checksum == f"crc32:{zlib.crc32(data):08x}"
    return data, writer


def test_names_extensions_and_lookup() -> None:
    assert [get_output_format(n).extension for n in OUTPUT_FORMATS] == [
        ".txt", ".csv", ".jsonl", ".parquet", ".npy", ".pickle"]
    spec = CSVOutput(header=False)
    assert get_output_format(spec) is spec
    with pytest.raises(ConfigError, match="unknown output_format 'xlsx'"):
        get_output_format("xlsx")
    with pytest.raises(TypeError, match="output_format must be"):
        get_output_format(3)  # type: ignore[arg-type]


# -- text ------------------------------------------------------------------------------


def test_text_keeps_the_line_semantics() -> None:
    data, w = written(TextOutput(), ("write_results", ["a", None, ["b", b"c"]]),
                      ("write_block", "raw\n"), ("write_block", ["x", "y"]))
    assert data == b"a\nb\nc\nraw\nx\ny\n" and w.records == 6


@pytest.mark.parametrize("value", [pa.table({"a": [1]}), np.arange(3)])
def test_text_refuses_tables_and_arrays_naming_the_output_format(value: Any) -> None:
    with pytest.raises(TypeError, match="output_format="):
        written(TextOutput(), ("write_block", value))


# -- csv -------------------------------------------------------------------------------


def test_csv_dict_rows_with_a_header_in_each_part() -> None:
    data, w = written(CSVOutput(), ("write_results", [{"a": 1, "b": "x,y"}, None,
                                                      [{"a": 2, "b": None}]]))
    assert data == b'a,b\n1,"x,y"\n2,\n' and w.records == 2
    data, _ = written(CSVOutput(header=False, sep=";"), ("write_block", [{"a": 1, "b": 2}]))
    assert data == b"1;2\n"


def test_csv_from_a_table_and_an_empty_part() -> None:
    table = pa.table({"n": [1, 2], "s": ["p", 'q"']})
    data, w = written(CSVOutput(), ("write_block", table), ("write_block", table.slice(0, 1)))
    assert data.splitlines() == [b'"n","s"', b'1,"p"', b'2,"q"""', b'1,"p"'] and w.records == 3
    data, _ = written(CSVOutput(), ("write_block", table.slice(0, 0)))
    assert data == b'"n","s"\n'
    data, _ = written(CSVOutput(columns=["x"]))
    assert data == b"x\n"  # columns known: an empty part still has its header
    assert written(CSVOutput())[0] == b""


def test_csv_rows_must_be_dicts_with_the_header_keys() -> None:
    with pytest.raises(ReturnTypeError, match=r"returned str 'plain string'; output_format="
                                              r"'csv' accepts a dict \(one row\)"):
        written(CSVOutput(), ("write_results", ["plain string"]))
    with pytest.raises(ValueError, match="keys the part's header"):
        written(CSVOutput(), ("write_results", [{"a": 1}, {"a": 2, "zz": 3}]))
    with pytest.raises(ConfigError, match="sep"):
        CSVOutput(sep="::")


# -- jsonl -----------------------------------------------------------------------------


def test_jsonl_writes_any_json_value_per_line() -> None:
    data, w = written(JSONLinesOutput(), ("write_results", [
        {"a": np.int64(3), "t": dt.date(2026, 1, 2), "v": np.array([1.5])}, "s", None,
        [1, 2]]), ("write_block", pa.table({"x": ["é"]})))
    lines = [json.loads(x) for x in data.decode().splitlines()]
    assert lines == [{"a": 3, "t": "2026-01-02", "v": [1.5]}, "s", 1, 2, {"x": "é"}]
    assert w.records == 5 and "é".encode() in data
    with pytest.raises(TypeError, match="cannot write object"):
        written(JSONLinesOutput(), ("write_results", [object()]))


# -- parquet ---------------------------------------------------------------------------


def read_parquet(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


def test_parquet_from_tables_batches_and_dicts() -> None:
    table = pa.table({"a": [1, 2], "b": ["x", "y"]})
    data, w = written(ParquetOutput(), ("write_block", table),
                      ("write_block", table.to_batches()[0]),
                      ("write_results", [{"a": 5, "b": "z"}]))
    assert read_parquet(data).to_pylist() == table.to_pylist() * 2 + [{"a": 5, "b": "z"}]
    assert w.records == 5


def test_parquet_schema_is_the_same_in_every_part_even_empty_ones() -> None:
    spec = ParquetOutput(schema={"a": "int32", "b": "string"})
    full, _ = written(spec, ("write_results", [{"a": 1, "b": "x"}]))
    empty, w = written(spec)
    assert read_parquet(full).schema == read_parquet(empty).schema
    assert read_parquet(full).schema.field("a").type == pa.int32()
    assert w.records == 0
    assert read_parquet(written(ParquetOutput())[0]).num_columns == 0  # still a valid file


def test_parquet_refuses_a_second_table_with_another_schema() -> None:
    with pytest.raises(TypeError, match="does not match the part's schema"):
        written(ParquetOutput(), ("write_block", pa.table({"a": [1]})),
                ("write_block", pa.table({"b": ["x"]})))
    with pytest.raises(TypeError, match="writes pyarrow Tables or dicts"):
        written(ParquetOutput(), ("write_block", "text"))
    with pytest.raises(ConfigError, match="not a pyarrow schema"):
        ParquetOutput(schema={"a": "nonsense"}).arrow_schema()


def test_parquet_flushes_dict_rows_in_row_groups() -> None:
    rows = [{"i": i} for i in range(40_000)]
    data, w = written(ParquetOutput(), *[("write_results", rows)] * 3)
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    assert w.records == 120_000 and meta.num_rows == 120_000 and meta.num_row_groups == 2


# -- npy -------------------------------------------------------------------------------


def test_npy_concatenates_arrays_and_scalars() -> None:
    dtype = np.dtype([("id", "<u2"), ("x", "<f4")])
    arr = np.zeros(3, dtype)
    data, w = written(NpyOutput(), ("write_block", arr), ("write_block", arr[:1]))
    assert np.load(io.BytesIO(data)).shape == (4,) and w.records == 4
    data, _ = written(NpyOutput(), ("write_results", list(arr)))
    assert np.array_equal(np.load(io.BytesIO(data)), arr)
    data, w = written(NpyOutput(dtype="<i4"))
    loaded = np.load(io.BytesIO(data))
    assert loaded.dtype == np.dtype("<i4") and loaded.shape == (0,) and w.records == 0
    with pytest.raises(TypeError, match="writes numpy arrays"):
        written(NpyOutput(), ("write_block", {"a": 1}))


# -- lifecycle -------------------------------------------------------------------------


def test_an_error_abandons_the_part_and_later_writes_are_dropped() -> None:
    buf = io.BytesIO()
    with pytest.raises(RuntimeError), ParquetOutput().open(buf) as writer:
        writer.write_block(pa.table({"a": [1]}))
        raise RuntimeError("the user function failed")
    size = len(buf.getvalue())
    writer.close()  # what a garbage-collected pyarrow writer would do
    writer.write(b"more")
    assert len(buf.getvalue()) == size


# -- what each format refuses ------------------------------------------------------------

REFUSED = [
    (TextOutput(), "write_results", [{"a": 1}], "returned dict"),
    (TextOutput(), "write_results", [7], "returned int 7"),
    (TextOutput(), "write_results", [["ok", {1}]],
     r"returned set \{1\} inside a list; output_format='text'"),
    (TextOutput(), "write_block", 7, "returned int 7"),
    (TextOutput(), "write_block", {"k": "v"}, "returned dict"),
    (TextOutput(), "write_block", ["a", 3], "returned int 3 inside an iterable; output_format"),
    (CSVOutput(), "write_results", [3.5], "returned float 3.5"),
    (CSVOutput(), "write_block", 7, "returned int 7"),
    (JSONLinesOutput(), "write_results", [{(1, 2): "tuple key"}], "cannot write a record as JSON"),
    (JSONLinesOutput(), "write_block", {1, 2}, r"returned set \{1, 2\}"),
    (ParquetOutput(), "write_results", ["text"], "returned str 'text'"),
    (ParquetOutput(), "write_block", 7, "returned int 7"),
    (NpyOutput(), "write_results", ["text"], "returned str 'text'"),
    (NpyOutput(), "write_results", [np.array([{"a": 1}])], "object array"),
    (NpyOutput(), "write_block", [{"a": 1}], "object array"),
    (NpyOutput(), "write_block", "text", "returned str"),
]


@pytest.mark.parametrize(("spec", "method", "value", "match"), REFUSED,
                         ids=[f"{s.name}-{m}-{i}" for i, (s, m, _, _) in enumerate(REFUSED)])
def test_a_refused_value_raises_return_type_error_naming_what_is_accepted(
        spec: OutputFormat, method: str, value: Any, match: str) -> None:
    with pytest.raises(ReturnTypeError, match=match) as info:
        written(spec, (method, value))
    assert info.value.retryable is False
    mode = "record" if method == "write_results" else "block"
    assert ACCEPTED_RETURNS[spec.name, mode] in str(info.value) or \
        "cannot write" in str(info.value)


def test_none_inside_a_list_writes_nothing_in_text() -> None:
    data, w = written(TextOutput(), ("write_results", [["a", None, "b"]]),
                      ("write_block", ["c", None]))
    assert data == b"a\nb\nc\n" and w.records == 3


# -- text: the fast paths of write_results give what the general loop gives ---------------

_text_results = st.lists(st.one_of(
    st.none(), st.none(), st.none(), st.sampled_from(["", "a", "é x", "\r"]),
    st.sampled_from([b"", b"b"]), st.lists(st.sampled_from(["c", None, b"d"]), max_size=3),
    st.sampled_from([0, 0.0, False, 7]), st.just(np.array([1, 2]))), max_size=12)


def _reference_text(results: list[Any]) -> bytes | str:
    """One line per str/bytes (lists flattened, None dropped), or the refused value's type."""
    out = []
    for result in results:
        for item in (result if isinstance(result, list) else [result]):
            if item is None:
                continue
            if not isinstance(item, (str, bytes)):
                return type(item).__name__
            out.append(item.encode() if isinstance(item, str) else item)
    return b"".join(line + b"\n" for line in out)


@settings(max_examples=300)
@given(batches=st.lists(_text_results, max_size=4))
def test_text_write_results_matches_the_line_semantics_on_every_path(
        batches: list[list[Any]]) -> None:
    file = io.BytesIO()
    expected: list[bytes] = []
    with TextOutput().open(file) as writer:
        for results in batches:
            want = _reference_text(results)
            if isinstance(want, str):  # refused: the error names the type, nothing written
                before = file.getvalue()
                with pytest.raises(ReturnTypeError, match=want):
                    writer.write_results(results)
                assert file.getvalue() == before
                continue
            writer.write_results(results)
            expected.append(want)
    data = b"".join(expected)
    assert file.getvalue() == data
    assert writer.records == data.count(b"\n")
    assert writer.checksum == f"crc32:{zlib.crc32(data):08x}"
