"""``batch.records`` (:class:`~blockproc.formats.records.Records`) streams a block's
records ~1 MiB at a time as it is iterated, and turns into one list for ``len``, an
index or a slice. Whatever the piece size (every split point, a CRLF cut between its
CR and LF, a multi-byte character or delimiter cut in two, no final newline, a BOM),
the records streamed, counted and listed must be those of decoding the block at once.
"""

from __future__ import annotations

import codecs
import collections
import pickle
import tracemalloc
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import blockproc as bp
from blockproc.formats import Delimited, Lines
from blockproc.formats.records import Records
from tests.property.test_lines_chunks import reference

BOM = codecs.BOM_UTF8

line_bytes = st.lists(st.sampled_from([b"\n", b"\r", b"\r\n", b"a", b"xyz", BOM, "é".encode(),
                                       "😀".encode(), b" "]), max_size=30).map(b"".join)


def whole(fmt: Any, data: bytes, at_file_start: bool) -> list[Any]:
    """The records of ``data`` decoded in one piece."""
    return [r for batch in fmt.iter_batches([data], at_file_start=at_file_start) for r in batch]


@settings(max_examples=300)
@given(data=line_bytes, at_file_start=st.booleans(), size=st.integers(1, 40))
def test_streamed_lines_are_those_of_the_whole_block(data: bytes, at_file_start: bool,
                                                     size: int) -> None:
    expected = reference(data, "utf-8", "strict", at_file_start)
    records = Records(data, Lines(), at_file_start=at_file_start, chunk_size=size)
    assert list(iter(records)) == expected
    assert records.streamed_count == len(expected) and not records.is_list
    assert list(iter(records)) == expected  # a second pass streams again, alike
    assert collections.Counter(records) == collections.Counter(expected)
    assert len(records) == len(expected) and records.is_list
    assert list(iter(records)) == expected and records == expected


@settings(max_examples=200)
@given(data=line_bytes, at_file_start=st.booleans())
def test_every_split_point_of_a_small_block(data: bytes, at_file_start: bool) -> None:
    expected = reference(data, "utf-8", "strict", at_file_start)
    for size in range(1, len(data) + 2):
        assert list(Records(data, Lines(), at_file_start=at_file_start, chunk_size=size)) \
            == expected, size


@settings(max_examples=200)
@given(parts=st.lists(st.sampled_from([b"a", b"|", b"+", b"b", b"|+|", b"aa"]), max_size=30),
       delimiter=st.sampled_from([b"|+|", b"aa", b"\n"]), size=st.integers(1, 12),
       at_file_start=st.booleans())
def test_streamed_delimited_records_match_across_pieces(parts: list[bytes], delimiter: bytes,
                                                        size: int, at_file_start: bool) -> None:
    data = b"".join(parts)
    fmt = Delimited(delimiter)
    records = Records(data, fmt, at_file_start=at_file_start, chunk_size=size)
    assert list(records) == whole(fmt, data, at_file_start)


@settings(max_examples=200)
@given(text=st.text(st.sampled_from("ab\r\né😀\u0a41"), max_size=20), size=st.integers(1, 9),
       encoding=st.sampled_from(["utf-16-le", "utf-16-be", "utf-32-le"]))
def test_streamed_wide_lines_match_with_code_units_cut_in_two(text: str, size: int,
                                                              encoding: str) -> None:
    data = text.encode(encoding)
    fmt = Lines(encoding)
    assert list(Records(data, fmt, at_file_start=False, chunk_size=size)) \
        == whole(fmt, data, False)


def test_a_decoding_error_while_streaming_names_its_offset() -> None:
    data = b"ok\n" * 10 + b"\xff\n"
    with pytest.raises(bp.TextDecodeError, match="at byte 30"):
        list(Records(data, Lines(), at_file_start=False, chunk_size=4))


def test_it_behaves_as_the_list_it_stands_for() -> None:
    records = Records(b"b\na\nc\n", Lines(), at_file_start=False, chunk_size=2)
    assert isinstance(records, Sequence) and not isinstance(records, list)
    assert "a" in records and "z" not in records and not records.is_list
    assert records.count("a") == 1 and not records.is_list
    assert records[1] == "a" and records[-1] == "c" and records[:2] == ["b", "a"]
    assert records.index("c") == 2 and list(reversed(records)) == ["c", "a", "b"]
    assert records + ["d"] == ["b", "a", "c", "d"]  # noqa: RUF005
    assert ["z"] + records == ["z", "b", "a", "c"]  # noqa: RUF005
    assert records * 2 == ["b", "a", "c"] * 2 and repr(records) == "['b', 'a', 'c']"
    records.sort()
    records.append("d")
    assert list(records) == ["a", "b", "c", "d"] and len(records) == 4  # kept, not re-read
    with pytest.raises(TypeError, match="unhashable"):
        hash(records)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        records.nope  # noqa: B018
    restored = pickle.loads(pickle.dumps(records))
    assert type(restored) is list and restored == ["a", "b", "c", "d"]


def test_streaming_holds_one_piece_of_records_not_the_block() -> None:
    line = b"203.0.113.7 - - [27/Nov/2026:00:00:01 +0000] \"GET /a HTTP/1.1\" 200 5123\n"
    data = line * (8 * 2**20 // len(line))  # 8 MiB: ~115,000 records

    def peak(fn: Any) -> int:
        records = Records(data, Lines(), at_file_start=False, chunk_size=2**20)
        tracemalloc.start()
        try:
            fn(records)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    streamed = peak(lambda r: collections.Counter(s[-8:-5] for s in r))
    listed = peak(len)
    assert listed > 12 * 2**20, listed  # every record at once: ~1.7x the block's bytes
    # one ~1 MiB piece at a time: its bytes, their text and its records (~4 MiB)
    assert streamed < 5 * 2**20, streamed


def counted_records(batch: Any) -> list[str]:
    counts = collections.Counter(line[0] for line in batch.records)  # streamed
    return [f"{k},{n}" for k, n in sorted(counts.items())]


def first_record(batch: Any) -> list[str]:
    for line in batch.records:  # stops early: no complete pass to count
        return [line]
    return []


@pytest.mark.parametrize("fn", [counted_records, first_record, lambda b: b.records,
                                lambda b: [str(len(b.records))]])
def test_the_job_counts_every_record_however_the_function_reads_them(fn: Any) -> None:
    bp.testing.write_files("memory://streamed/in", {"a.log": b"x1\ny2\r\nx3\nz4"})
    res = bp.map_blocks(fn, "memory://streamed/in", output="memory://streamed/out",
                        executor="inline", if_exists="overwrite", block_size=4)
    assert res.num_records == 4
    if fn is counted_records:
        total: collections.Counter[str] = collections.Counter()
        for row in bp.testing.read_parts("memory://streamed/out").decode().split():
            key, n = row.split(",")
            total[key] += int(n)
        assert total == {"x": 2, "y": 1, "z": 1}
