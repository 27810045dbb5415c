"""format="csv": quote-aware splitting, the header, types, options and errors.

The random version of the partition invariant is tests/property/test_partition_formats.py.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import operator
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from hypothesis import given
from hypothesis import strategies as st

import blockproc as bp
from blockproc import formats
from blockproc.errors import ConfigError, InputError
from blockproc.formats import CSV
from blockproc.formats import csv_split as cs
from blockproc.model import Block, InputFile
from blockproc.planning import cut_blocks

# -- helpers ---------------------------------------------------------------------------


class Source:
    def __init__(self, data: bytes, log: list[int]) -> None:
        self.data, self.log = data, log

    def read(self, start: int, end: int) -> bytes:
        piece = self.data[max(0, start):max(0, end)]
        self.log.append(len(piece))
        return piece


class Access:
    """An in-memory ``FileAccess`` that counts the bytes planning reads."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.log: list[int] = []

    @contextmanager
    def open(self, path: str) -> Iterator[Source]:
        yield Source(self.files[path], self.log)

    def head(self, file: InputFile, size: int) -> bytes:
        data = self.files[file.path]
        if file.compression:
            data = gzip.decompress(data)
        self.log.append(min(size, len(data)))
        return data[:size]


def plan_csv(files: dict[str, bytes], fmt: CSV, block_size: int,
             compressed: tuple[str, ...] = ()) -> tuple[CSV, list[Block], Access]:
    inputs = [InputFile(p, len(d), compression="gzip" if p in compressed else None)
              for p, d in sorted(files.items())]
    access = Access(files)
    planned, blocks = fmt.plan_blocks(inputs, cut_blocks(inputs, block_size), access)
    return planned, blocks, access


def rows_of(files: dict[str, bytes], fmt: CSV, block_size: int) -> list[dict[str, Any]]:
    planned, blocks, _ = plan_csv(files, fmt, block_size)
    out: list[dict[str, Any]] = []
    for b in blocks:
        data = files[b.path][b.start:b.end]
        out.extend(planned.decode_block(data, at_file_start=b.start == 0).to_pylist())
    return out


# A boundary that falls inside a quoted field whose tail looks like valid rows: cut
# naively after any newline, "2,fake" and "3,rows" would come out as rows of their own.
TRAP = b'id,text\n1,"first\n2,fake\n3,rows"\n4,"ok"\n5,"x\n\n6,y"\n'
TRAP_ROWS = [
    {"id": "1", "text": "first\n2,fake\n3,rows"},
    {"id": "4", "text": "ok"},
    {"id": "5", "text": "x\n\n6,y"},
]


# -- quoted newlines ---------------------------------------------------------------------


@pytest.mark.parametrize("block_size", range(1, len(TRAP) + 2))
def test_a_boundary_inside_a_quoted_field_whose_tail_looks_like_rows(block_size: int) -> None:
    assert rows_of({"f.csv": TRAP}, CSV(), block_size) == TRAP_ROWS


def test_cutting_on_every_newline_gets_the_trap_wrong() -> None:
    # what Dask/fsspec-style splitting does (and newlines_in_values=False asserts away):
    # the block starting inside the quoted field parses its tail as rows
    fmt = replace(CSV(newlines_in_values=False), column_names=("id", "text"))
    cut = TRAP.index(b"2,fake")
    tail = fmt.decode_block(TRAP[cut:], at_file_start=False).to_pylist()
    assert tail[0] == {"id": "2", "text": "fake"}  # a row that does not exist


def test_blocks_start_right_after_the_first_row_ending_newline() -> None:
    planned, blocks, _ = plan_csv({"f.csv": TRAP}, CSV(), 12)
    starts = [b.start for b in blocks]
    row_starts = [0, TRAP.index(b"1,"), TRAP.index(b"4,"), TRAP.index(b"5,"), len(TRAP)]
    assert set(starts) <= set(row_starts)
    assert planned.aligned and planned.column_names == ("id", "text")
    # the middle of the first quoted field owns nothing: no empty blocks in the plan
    assert all(b.start < b.end for b in blocks)
    assert [b.id for b in blocks] == list(range(len(blocks)))


def test_stray_quotes_inside_unquoted_fields_take_the_exact_path() -> None:
    data = b'size,name\n5" screen,"tv\n1,2"\n7,"a""b"\n12",x\n3,"y\nz"\n'
    expected = pa_csv.read_csv(io.BytesIO(data), convert_options=pa_csv.ConvertOptions(
        column_types={"size": pa.string(), "name": pa.string()})).to_pylist()
    assert expected[0] == {"size": '5" screen', "name": "tv\n1,2"}
    for block_size in range(1, len(data) + 2):
        assert rows_of({"f.csv": data}, CSV(), block_size) == expected, block_size


def test_escape_character_makes_newlines_and_quotes_literal() -> None:
    data = b'a,b\n1,x\\\ny\n2,"q\\"\n3,4"\n5,\\"z\n'
    fmt = CSV(escape_char="\\")
    expected = [{"a": "1", "b": "x\ny"}, {"a": "2", "b": 'q"\n3,4'}, {"a": "5", "b": '"z'}]
    for block_size in range(1, len(data) + 2):
        assert rows_of({"f.csv": data}, fmt, block_size) == expected, block_size


ROWS_WITH_NEWLINES = b"a,b,c\n" + b"".join(
    b'%d,"text %d\nwith a newline, and ""quotes""",%d\n' % (i, i, i * 7) for i in range(5000))


def test_planning_reads_a_few_kib_per_block_not_the_file() -> None:
    data = ROWS_WITH_NEWLINES
    _, blocks, access = plan_csv({"f.csv": data}, CSV(), 16 * 1024)
    assert len(blocks) > 10
    # a window of RESOLVE_WINDOW before each nominal start (all the grammar's states agree
    # within it), the row-start walk after it, the BOM probe and the header
    per_block = cs.RESOLVE_WINDOW + 4 * cs.ROW_WINDOW_SIZE
    assert sum(access.log) <= (len(blocks) + 1) * per_block + 8192, (sum(access.log), len(data))
    assert sum(access.log) < len(data) / 2


def test_windows_that_cannot_tell_fall_back_to_the_full_pass_reading_the_file_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A long stretch without any quote: a walk that starts inside quotes stays there and
    # one that starts outside stays outside, so no window before it can decide.
    quoteless = b"".join(b"%d,plain,%d\n" % (i, i) for i in range(20000))
    data = ROWS_WITH_NEWLINES + quoteless + b'1,"x\ny",2\n'
    grammar = cs.Grammar(CSV().dialect)
    pos = len(ROWS_WITH_NEWLINES) + len(quoteless) // 2

    def read(s: int, e: int) -> bytes:
        return data[s:e]

    assert cs.resolve_state(read, pos, 0, cs.S, grammar, limit=16 * 1024) is None
    assert cs.resolve_state(read, pos, 0, cs.S, grammar, limit=len(data)) == cs.F
    monkeypatch.setattr(cs, "RESOLVE_LIMIT", 16 * 1024)  # under the block size
    _, _blocks, access = plan_csv({"f.csv": data}, CSV(), 64 * 1024)
    assert len(data) <= sum(access.log) <= len(data) * 1.1 + 64 * 1024, sum(access.log)
    assert rows_of({"f.csv": data}, CSV(), 64 * 1024) == pa_csv.read_csv(
        io.BytesIO(data), convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys("abc", pa.string()))).to_pylist()


_BYTES = st.lists(st.sampled_from([b"a", b",", b'"', b'""', b"\n", b"\r\n", b"\r", b"\\",
                                   b'",', b',"', b'"\n']), max_size=60).map(b"".join)


def test_a_window_that_starts_right_after_an_escape_inside_quotes_is_not_misread() -> None:
    # found by search: without the "escaped, inside quotes" start state, the other walks
    # of [4, 8) agree on a state that is not the one the walk from byte 0 reaches
    data = b'"\\,\\\\\\"\na\\'
    grammar = cs.Grammar(cs.Dialect.of(",", '"', "\\", True))

    def read(s: int, e: int) -> bytes:
        return data[s:e]

    exact = cs.walk_range(read, 0, 8, cs.S, grammar)
    without_qe = {grammar.walk(data, 4, 8, s)[1] for s in cs.start_states(grammar.d)
                  if s != cs.QE}
    assert len(without_qe) == 1 and without_qe != {exact}
    assert cs.resolve_state(read, 8, 0, cs.S, grammar, window=4, limit=4) in (None, exact)


@given(data=_BYTES, window=st.integers(1, 8), limit=st.integers(1, 40),
       escape=st.sampled_from([None, "\\"]), double_quote=st.booleans())
def test_a_resolved_state_is_the_state_of_the_walk_from_the_start(
        data: bytes, window: int, limit: int, escape: str | None, double_quote: bool) -> None:
    # any bytes (stray quotes, CR, CRLF, doubled quotes, escapes), any split point: the
    # local answer is either "cannot tell" or exactly the sequential parse's state
    grammar = cs.Grammar(cs.Dialect.of(",", '"', escape, double_quote))

    def read(s: int, e: int) -> bytes:
        return data[max(0, s):e]

    anchors = {0: cs.S}
    for pos in range(1, len(data) + 1):
        exact = cs.walk_range(read, 0, pos, cs.S, grammar)
        anchor = max(a for a in anchors if a <= pos // 2 or a == 0)
        got = cs.resolve_state(read, pos, anchor, anchors[anchor], grammar,
                               window=window, limit=limit)
        assert got in (None, exact), (pos, got, exact)
        anchors[pos] = exact
    points = list(range(len(data) + 1))
    resolved = cs.resolve_states(read, points, 0, grammar)
    assert resolved == {p: cs.walk_range(read, 0, p, cs.S, grammar) for p in points}


def test_boundary_without_a_plan_is_exact_but_reads_from_the_start() -> None:
    fmt = CSV()
    planned, blocks, _ = plan_csv({"f.csv": TRAP}, fmt, 5)

    def read(s: int, e: int) -> bytes:
        return TRAP[s:e]

    starts = {fmt.boundary(read, p, len(TRAP), max_record_size=1 << 20).offset
              for p in range(1, len(TRAP))}
    assert {b.start for b in blocks} - {0} <= starts
    # an aligned plan trusts its ranges
    assert planned.boundary(read, 17, len(TRAP), max_record_size=1).offset == 17


def test_chained_states_match_a_walk_from_the_start() -> None:
    data = TRAP * 3
    grammar = cs.Grammar(CSV().dialect)

    def read(s: int, e: int) -> bytes:
        return data[max(0, s):e]

    bounds = [*range(0, len(data), 7), len(data)]
    scans = [cs.scan_piece(read, a, e, 0, grammar.d) for a, e in itertools.pairwise(bounds)]
    states = cs.chain_states(scans, read, 0, grammar)
    for p in bounds:
        assert states[p] == cs.walk_range(read, 0, p, cs.S, grammar), p


# -- the header --------------------------------------------------------------------------


def test_header_is_read_once_and_a_row_equal_to_it_survives() -> None:
    data = b"a,b\n1,2\na,b\n3,4\n"
    for block_size in range(1, len(data) + 2):
        assert rows_of({"f.csv": data}, CSV(), block_size) == [
            {"a": "1", "b": "2"}, {"a": "a", "b": "b"}, {"a": "3", "b": "4"}]


def test_header_only_and_empty_files() -> None:
    for data in (b"a,b\n", b"a,b", b"\xef\xbb\xbfa,b\r\n"):
        planned, blocks, _ = plan_csv({"f.csv": data}, CSV(), 2)
        assert planned.column_names == ("a", "b")
        table = planned.decode_block(data, at_file_start=True)
        assert table.num_rows == 0 and table.column_names == ["a", "b"]
    planned, blocks, _ = plan_csv({"f.csv": b""}, CSV(), 2)
    assert blocks == [] and planned.column_names == ()


def test_header_with_a_quoted_newline_and_leading_empty_lines() -> None:
    data = b'\n\r\n"first\ncol",b\n1,2\n'
    assert rows_of({"f.csv": data}, CSV(), 3) == [{"first\ncol": "1", "b": "2"}]


def test_files_with_different_headers_are_refused() -> None:
    with pytest.raises(ConfigError, match="different headers"):
        plan_csv({"a.csv": b"x,y\n1,2\n", "b.csv": b"x,z\n3,4\n"}, CSV(), 100)


def test_column_names_replace_the_header_and_header_false_keeps_row_one() -> None:
    data = b"a,b\n1,2\n"
    assert rows_of({"f.csv": data}, CSV(column_names=["x", "y"]), 3) == [{"x": "1", "y": "2"}]
    assert rows_of({"f.csv": data}, CSV(header=False), 3) == [
        {"f0": "a", "f1": "b"}, {"f0": "1", "f1": "2"}]


def test_bom_is_dropped_in_block_0() -> None:
    data = b"\xef\xbb\xbfa,b\n1,2\n"
    for block_size in range(1, len(data) + 2):
        assert rows_of({"f.csv": data}, CSV(), block_size) == [{"a": "1", "b": "2"}]


# -- types, columns, options ---------------------------------------------------------------


def test_columns_are_strings_unless_typed() -> None:
    data = b"n,x,s\n1,0.5,\n2,,z\n"
    rows = rows_of({"f.csv": data}, CSV(column_types={"n": "int64", "x": "float64"}), 4)
    assert rows == [{"n": 1, "x": 0.5, "s": ""}, {"n": 2, "x": None, "s": "z"}]


def test_unknown_type_name_fails_at_plan_time() -> None:
    with pytest.raises(ConfigError, match="column_types\\['n'\\]"):
        plan_csv({"f.csv": b"n\n1\n"}, CSV(column_types={"n": "integer64"}), 4)


def test_columns_select_and_order() -> None:
    data = b"a,b,c\n1,2,3\n"
    assert rows_of({"f.csv": data}, CSV(columns=["c", "a"]), 100) == [{"c": "3", "a": "1"}]
    with pytest.raises(ConfigError, match="not in the CSV columns"):
        plan_csv({"f.csv": data}, CSV(columns=["zz"]), 100)


def test_columns_not_asked_for_are_never_decoded() -> None:
    # "n" would fail as int64 in row 2; with columns=("s",) pyarrow never converts it
    data = b"s,n\nx,1\ny,not a number\n"
    fmt = replace(CSV(column_types={"n": "int64"}, columns=("s",)), column_names=("s", "n"))
    assert fmt.decode_block(data, at_file_start=True).to_pylist() == [{"s": "x"}, {"s": "y"}]
    with pytest.raises(InputError, match="not a number"):
        replace(fmt, columns=None).decode_block(data, at_file_start=True)


def test_a_block_is_parsed_in_place_not_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    real = pa.py_buffer

    def spy(obj: Any) -> Any:
        buf = real(obj)
        seen.append(buf)
        return buf

    monkeypatch.setattr(pa, "py_buffer", spy)
    data = b"a\n" + b"x\n" * 1000
    fmt = replace(CSV(), column_names=("a",))
    assert fmt.decode_block(data, at_file_start=True).num_rows == 1000
    (buf,) = seen
    # the buffer pyarrow reads starts inside ``data`` itself, after the header
    assert buf.address == real(data).address + 2 and buf.size == len(data) - 2


def block_pid(block: Any) -> int:
    """A per-block function that tells where it ran (module-level: processes import it)."""
    return os.getpid()


def test_map_blocks_over_csv_runs_on_threads_unless_an_executor_is_passed(
        tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(b"a,b\n" + b"1,2\n" * 100)
    options: dict[str, Any] = {"block_size": 100, "workers": 2, "progress": False}
    assert set(bp.map_blocks(block_pid, str(src), format="csv", **options).values) == {
        os.getpid()}
    assert bp.reduce_blocks(lambda t: {os.getpid()}, operator.or_, str(src), format="csv",
                            **options).value == {os.getpid()}
    # an explicit executor always wins; formats that do not prefer threads keep processes
    elsewhere = bp.map_blocks(block_pid, str(src), format="csv", executor="processes",
                              **options).values
    assert os.getpid() not in elsewhere
    lines = tmp_path / "in.txt"
    lines.write_bytes(b"x\n" * 100)
    assert os.getpid() not in bp.map_blocks(block_pid, str(lines), **options).values


def test_csv_prefers_threads_for_per_block_functions() -> None:
    assert CSV.prefers_threads is True and CSV().prefers_threads
    assert "prefers_threads" not in CSV().to_dict()  # not an option, not in the plan


def test_separator_and_no_quoting() -> None:
    data = b'a;b\n"x;1\n'
    assert rows_of({"f.csv": data}, CSV(sep=";", quote_char=None), 2) == [
        {"a": '"x', "b": "1"}]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"sep": ";;"}, "sep must be one ASCII character"),
    ({"sep": '"'}, "must differ"),
    ({"quote_char": "\n"}, "line break"),
    ({"escape_char": ","}, "must differ"),
    ({"encoding": "utf-16"}, "ASCII-compatible"),
    ({"encoding": "nope"}, "unknown encoding"),
])
def test_bad_options_are_config_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CSV(**kwargs)


def test_bad_option_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match="columns"):
        CSV(columns="a,b")
    with pytest.raises(TypeError, match="column_types"):
        CSV(column_types={"a": 1})  # type: ignore[dict-item]


def test_to_dict_round_trips_through_json() -> None:
    fmt = CSV(sep=";", escape_char="\\", column_types={"n": "int64"}, columns=["n"],
              column_names=["n", "m"])
    again = formats.from_dict(json.loads(json.dumps(fmt.to_dict())))
    assert again == fmt
    assert formats.get_format("csv") == CSV()


def test_newlines_in_values_false_skips_the_planning_pass() -> None:
    data = b"a,b\n" + b"1,2\n" * 1000
    planned, blocks, access = plan_csv({"f.csv": data}, CSV(newlines_in_values=False), 100)
    assert not planned.aligned
    assert sum(access.log) < 70 * 1024  # only the header
    assert [b.start for b in blocks] == list(range(0, len(data), 100))

    def read(s: int, e: int) -> bytes:
        return data[s:e]

    assert planned.boundary(read, 5, len(data), max_record_size=99).offset == 8


# -- records for map_lines and counts ----------------------------------------------------------


def test_iter_batches_streams_rows_as_dicts_whatever_the_chunking() -> None:
    planned, blocks, _ = plan_csv({"f.csv": TRAP}, CSV(), 1000)
    assert len(blocks) == 1
    for cut in range(len(TRAP) + 1):
        chunks = [TRAP[:cut], TRAP[cut:]]
        rows = [r for batch in planned.iter_batches(chunks, at_file_start=True) for r in batch]
        assert rows == TRAP_ROWS, cut
    assert planned.count_records(TRAP, at_file_start=True) == 3
    assert list(planned.iter_batches([], at_file_start=False)) == []


def test_compressed_files_stay_one_block_and_read_their_header() -> None:
    data = gzip.compress(TRAP)
    planned, blocks, _ = plan_csv({"f.csv.gz": data}, CSV(), 5, compressed=("f.csv.gz",))
    assert [(b.start, b.end) for b in blocks] == [(0, len(data))]
    assert planned.column_names == ("id", "text")


def test_a_header_that_cannot_be_parsed_is_an_input_error() -> None:
    with pytest.raises(InputError, match="cannot read the CSV header row"):
        CSV()._parse_names(b"a,b\nc\n")  # two rows of different widths


# -- an unclosed quote -------------------------------------------------------------------

_FIELDS = st.one_of(
    st.text("ab ,", max_size=4).filter(lambda f: "," not in f),
    st.text('ab ,\n"', max_size=5).map(lambda f: '"' + f.replace('"', '""') + '"'),
)


@st.composite
def csv_with_an_unclosed_quote(draw: st.DrawFn) -> tuple[bytes, int]:
    """A well-formed CSV (quoted fields with newlines and doubled quotes) followed by a
    row whose last field opens a quote that is never closed; returns it and the offset
    of that quote."""
    rows = ["id,text"]
    for _ in range(draw(st.integers(0, 6))):
        rows.append(f"{draw(_FIELDS)},{draw(_FIELDS)}")
    head = "".join(r + draw(st.sampled_from(["\n", "\r\n"])) for r in rows) + "9,"
    tail = draw(st.text("ab ,\n", max_size=12))
    return (head + '"' + tail).encode(), len(head.encode())


@given(case=csv_with_an_unclosed_quote(), block_size=st.integers(1, 64),
       escape=st.sampled_from([None, "\\"]))
def test_an_unclosed_quote_fails_planning_naming_the_offset_of_that_quote(
        case: tuple[bytes, int], block_size: int, escape: str | None) -> None:
    data, offset = case
    with pytest.raises(InputError, match=rf"'f.csv': the quote at byte offset {offset} is "
                                         rf"never closed, so the rest of the file "
                                         rf"\({len(data) - offset} bytes\).*"
                                         rf"allow_unclosed_quote=True"):
        plan_csv({"f.csv": data}, CSV(escape_char=escape), block_size)


@pytest.mark.parametrize("block_size", [1, 5, 1000])
def test_allow_unclosed_quote_reads_the_rest_as_one_field_as_pyarrow_does(
        block_size: int) -> None:
    data = b'id,text\n1,"ok"\n2,"open\n3,x\n'
    fmt = CSV(allow_unclosed_quote=True)
    assert rows_of({"f.csv": data}, fmt, block_size) == [
        {"id": "1", "text": "ok"}, {"id": "2", "text": "open\n3,x\n"}]
    assert pa_csv.read_csv(io.BytesIO(data)).to_pylist()[-1]["text"] == "open\n3,x\n"
    assert formats.from_dict(json.loads(json.dumps(fmt.to_dict()))) == fmt


def test_a_closed_quote_at_the_very_end_is_not_refused() -> None:
    data = b'id,text\n1,"a\nb"'
    assert rows_of({"f.csv": data}, CSV(), 3) == [{"id": "1", "text": "a\nb"}]
