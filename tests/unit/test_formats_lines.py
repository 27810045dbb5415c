"""The record boundary rule and the delimiter-terminated formats (lines, delimited, raw).

Every case of DESIGN.md "What must come out right" has its own test here; the random
version of the same invariant is tests/property/test_partition.py.
"""

from __future__ import annotations

import codecs
import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockproc import formats
from blockproc.errors import ConfigError, InputError, RecordTooLargeError
from blockproc.formats import Delimited, Lines, Raw, find_boundary
from blockproc.formats.base import has_border, split_chunks
from blockproc.planning import nominal_ranges

BOM = codecs.BOM_UTF8


# -- helpers ---------------------------------------------------------------------------


def aligned_ranges(data: bytes, delimiter: bytes, block_size: int,
                   **kwargs: Any) -> list[tuple[int, int, int]]:
    """Return ``(nominal start, aligned start, aligned end)`` for each block of ``data``."""
    size = len(data)

    def read(start: int, end: int) -> bytes:
        return data[start:end]

    out = []
    for start, end in nominal_ranges(size, block_size):
        first = find_boundary(read, start, size, delimiter, **kwargs).offset
        last = size if end >= size else find_boundary(read, end, size, delimiter,
                                                      **kwargs).offset
        out.append((start, first, last))
    return out


def block_records(data: bytes, fmt: Any, block_size: int) -> list[list[Any]]:
    """Return each block's records (one list per block)."""
    out = []
    for start, first, last in aligned_ranges(data, fmt.delimiter, block_size):
        records = []
        for batch in fmt.iter_batches([data[first:last]], at_file_start=start == 0):
            records.extend(batch)
        out.append(records)
    return out


def all_records(data: bytes, fmt: Any, block_size: int) -> list[Any]:
    return [r for block in block_records(data, fmt, block_size) for r in block]


def split_sequential(data: bytes, delimiter: bytes) -> list[bytes]:
    """The sequential parse: ``data.split(delimiter)`` minus a trailing empty piece."""
    pieces = data.split(delimiter)
    if pieces[-1] == b"":
        pieces.pop()
    return pieces


def every_block_size(data: bytes) -> range:
    return range(1, len(data) + 2)


def decode_all(fmt: Any, chunks: list[bytes], *, at_file_start: bool = True) -> list[Any]:
    return [r for batch in fmt.iter_batches(chunks, at_file_start=at_file_start) for r in batch]


# -- find_boundary ---------------------------------------------------------------------


def test_find_boundary_returns_offset_after_first_delimiter_at_or_after_pos() -> None:
    data = b"ab\ncd\nef"
    offsets = [find_boundary(lambda s, e: data[s:e], p, len(data), b"\n").offset
               for p in range(len(data) + 1)]
    assert offsets == [0, 3, 3, 6, 6, 6, 8, 8, 8]


def test_find_boundary_at_zero_and_at_end_reads_nothing() -> None:
    calls = []

    def read(start: int, end: int) -> bytes:
        calls.append((start, end))
        return b"x" * (end - start)

    assert find_boundary(read, 0, 100, b"\n").offset == 0
    assert find_boundary(read, 100, 100, b"\n").offset == 100
    assert find_boundary(read, 150, 100, b"\n").offset == 100
    assert calls == []


@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n", b"|+|", b"\n\n", b"aa", b"aaa", b"aba"])
@pytest.mark.parametrize("window", [1, 2, 3, 5, 64 * 1024])
def test_find_boundary_does_not_depend_on_the_read_window(delimiter: bytes, window: int) -> None:
    data = b"xaaaba\r\n\n\n|+|+|aabaaa\r\n\n|+|ab" * 3
    expected = [find_boundary(lambda s, e: data[s:e], p, len(data), delimiter).offset
                for p in range(len(data) + 1)]
    got = [find_boundary(lambda s, e: data[s:e], p, len(data), delimiter, window=window).offset
           for p in range(len(data) + 1)]
    assert got == expected


def test_find_boundary_data_holds_the_bytes_it_says() -> None:
    data = b"".join(b"record %d\n" % i for i in range(100))
    for pos in range(1, len(data), 7):
        found = find_boundary(lambda s, e: data[s:e], pos, len(data), b"\n", window=16)
        assert found.data == data[found.data_start:found.data_start + len(found.data)]
        assert found.data_start <= pos
        assert found.data_start + len(found.data) >= found.offset


def test_find_boundary_stops_at_a_file_shorter_than_planned() -> None:
    data = b"abcdef"  # planned as 100 bytes, now 6: no delimiter, no crash
    found = find_boundary(lambda s, e: data[s:e], 2, 100, b"\n", window=2)
    assert found.offset == 6


def test_find_boundary_raises_record_too_large_without_delimiter_in_max_record_size() -> None:
    data = b"x" * 1000 + b"\n" + b"y\n"
    with pytest.raises(RecordTooLargeError, match=r"max_record_size") as info:
        find_boundary(lambda s, e: data[s:e], 10, len(data), b"\n",
                      max_record_size=100, window=16)
    assert "after offset 10" in str(info.value)
    assert "b'\\n'" in str(info.value)
    assert isinstance(info.value, InputError)


def test_find_boundary_finds_delimiter_within_max_record_size() -> None:
    data = b"x" * 1000 + b"\n" + b"y\n"
    found = find_boundary(lambda s, e: data[s:e], 10, len(data), b"\n",
                          max_record_size=2000, window=16)
    assert found.offset == 1001


def test_find_boundary_reaching_end_of_file_is_not_too_large() -> None:
    data = b"x" * 1000  # no delimiter at all, but the file ends: the last record
    found = find_boundary(lambda s, e: data[s:e], 10, len(data), b"\n",
                          max_record_size=10_000, window=16)
    assert found.offset == 1000


@pytest.mark.parametrize(
    ("delimiter", "expected"),
    [
        (b"\n", False),
        (b"\r\n", False),
        (b"ab", False),
        (b"abc", False),
        (b"aa", True),
        (b"aaa", True),
        (b"\n\n", True),
        (b"|+|", True),
        (b"aba", True),
        (b"abab", True),
        (b"abca", True),
        (b"abcab", True),
        (b"aab", False),
    ],
)
def test_has_border_detects_self_overlapping_delimiters(delimiter: bytes, expected: bool) -> None:
    assert has_border(delimiter) is expected


def test_split_chunks_keeps_a_final_record_without_delimiter() -> None:
    assert list(split_chunks([b"a\nb", b"c\n\nd"], b"\n")) == [[b"a"], [b"bc", b""], [b"d"]]
    assert list(split_chunks([], b"\n")) == []
    assert list(split_chunks([b""], b"\n")) == []


# -- DESIGN.md: what must come out right -----------------------------------------------


def test_crlf_split_between_cr_and_lf_belongs_to_the_block_before() -> None:
    data = b"ab\r\ncd\r\n"  # block_size 3 cuts between \r (2) and \n (3)
    ranges = aligned_ranges(data, b"\n", 3)
    assert [(first, last) for _, first, last in ranges] == [(0, 4), (4, 8), (8, 8)]
    assert block_records(data, Lines(), 3) == [["ab"], ["cd"], []]


@pytest.mark.parametrize("fmt", [Lines(), Delimited(b"\r\n")], ids=["lines", "delimited-crlf"])
def test_crlf_lines_come_out_without_line_endings_for_every_block_size(fmt: Any) -> None:
    data = b"one\r\ntwo\r\n\r\nthree\r\n"
    expected: list[Any] = ["one", "two", "", "three"]
    if isinstance(fmt, Delimited):
        expected = [r.encode() for r in expected]
    for block_size in every_block_size(data):
        assert all_records(data, fmt, block_size) == expected, block_size


def test_lines_mixed_lf_and_crlf_and_lone_cr() -> None:
    data = b"a\r\nb\nc\rd\n\r\n"
    for block_size in every_block_size(data):
        assert all_records(data, Lines(), block_size) == ["a", "b", "c\rd", ""], block_size


@pytest.mark.parametrize("cut", [3, 4, 5, 6])
def test_multibyte_delimiter_cut_inside_belongs_to_the_block_holding_its_first_byte(
    cut: int,
) -> None:
    data = b"one|+|two|+|three"  # delimiters at [3, 6) and [9, 12)
    fmt = Delimited(b"|+|")
    ranges = [(first, last) for _, first, last in aligned_ranges(data, b"|+|", cut)]
    if cut == 3:  # the first delimiter begins at the cut: it ends block 0
        assert ranges[:2] == [(0, 6), (6, 12)]
    else:  # |+| begins before the cut, so "two" still belongs to block 0
        assert ranges[0] == (0, 12)
        assert ranges[1][0] == 12
    assert all_records(data, fmt, cut) == [b"one", b"two", b"three"]


def test_pipe_plus_pipe_cut_after_one_byte_for_every_block_size() -> None:
    data = b"|+|a|+||+|bb|+|+|c|"
    expected = split_sequential(data, b"|+|")
    assert expected == [b"", b"a", b"", b"bb", b"+|c|"]
    for block_size in every_block_size(data):
        assert all_records(data, Delimited(b"|+|"), block_size) == expected, block_size


@pytest.mark.parametrize("fmt", [Lines(), Delimited(b"\n")], ids=["lines", "delimited"])
def test_missing_final_delimiter_keeps_the_last_record(fmt: Any) -> None:
    data = b"a\nbb\nccc"
    for block_size in every_block_size(data):
        records = all_records(data, fmt, block_size)
        assert [r if isinstance(r, str) else r.decode() for r in records] == ["a", "bb", "ccc"]


def test_a_cr_without_lf_is_data_even_at_the_end_of_the_file() -> None:
    # The rule (README, "Formats"): only LF ends a line; a CR right before it is part of
    # the line end (CRLF), and every other CR is data, at the end of the file too. This
    # replaces the old behaviour, which stripped a lone CR at the end of the file only.
    for data, expected in [(b"a\r\nb\r", ["a", "b\r"]), (b"a\rb\n", ["a\rb"]),
                           (b"a\r\n\r", ["a", "\r"]), (b"\r", ["\r"]),
                           (b"a\r\r\n", ["a\r"])]:
        for block_size in every_block_size(data):
            assert all_records(data, Lines(), block_size) == expected, (data, block_size)


@given(pieces=st.lists(st.sampled_from(["a", "é", "\r", "\n", "\r\n", "\r\r"]), max_size=12),
       block_size=st.integers(1, 40), chunk=st.integers(1, 8))
def test_only_crlf_and_lf_end_a_line_whatever_the_cuts(pieces: list[str], block_size: int,
                                                       chunk: int) -> None:
    """Property of the CR rule: every CR that is not right before an LF survives, in
    every block split and every chunking, and a CR before an LF never does."""
    data = "".join(pieces).encode()
    records = all_records(data, Lines(), block_size)
    assert "".join(records).count("\r") == data.count(b"\r") - data.count(b"\r\n")
    lines = data.decode().split("\n")
    last = lines.pop()
    assert records == [line.removesuffix("\r") for line in lines] + ([last] if last else [])
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    assert decode_all(Lines(), chunks) == records


def test_empty_records_are_kept_in_lines() -> None:
    data = b"\n\na\n\n"
    for block_size in every_block_size(data):
        assert all_records(data, Lines(), block_size) == ["", "", "a", ""], block_size


def test_empty_records_are_kept_in_delimited() -> None:
    data = b"||x||"
    for block_size in every_block_size(data):
        assert all_records(data, Delimited(b"|"), block_size) == [b"", b"", b"x", b""]


def test_record_longer_than_several_blocks_belongs_to_one_block_and_the_ones_between_own_nothing(
) -> None:
    data = b"a\n" + b"x" * 50 + b"\nb\n"  # 55 bytes; the long record spans [2, 53)
    ranges = aligned_ranges(data, b"\n", 10)
    owned = [(first, last) for _, first, last in ranges]
    assert owned[0] == (0, 53)  # block 0 holds the \n before the long record
    assert owned[1:5] == [(53, 53)] * 4  # blocks [10, 50) own nothing
    assert owned[5] == (53, 55)
    per_block = block_records(data, Lines(), 10)
    assert per_block == [["a", "x" * 50], [], [], [], [], ["b"]]


def test_record_longer_than_several_blocks_in_the_middle_of_a_block() -> None:
    data = b"hello\n" + b"y" * 37 + b"\n" + b"z" * 23
    for block_size in every_block_size(data):
        assert all_records(data, Lines(), block_size) == ["hello", "y" * 37, "z" * 23]


@pytest.mark.parametrize("fmt", [Lines(), Delimited(b"|+|"), Raw()], ids=["lines", "delim", "raw"])
def test_empty_file_has_no_blocks_and_no_records(fmt: Any) -> None:
    assert nominal_ranges(0, 10) == []
    assert all_records(b"", fmt, 10) == []
    assert list(fmt.iter_batches([], at_file_start=True)) == []
    assert list(fmt.iter_batches([b""], at_file_start=True)) == []
    assert list(fmt.iter_batches([b"", b""], at_file_start=False)) == []


def test_utf8_bom_is_stripped_once_in_block_0() -> None:
    data = BOM + b"a\n" + BOM + b"b\n"
    for block_size in every_block_size(data):
        per_block = block_records(data, Lines(), block_size)
        assert [r for block in per_block for r in block] == ["a", "\ufeffb"], block_size
        assert per_block[0][0] == "a"


def test_bom_looking_bytes_at_the_start_of_a_later_block_are_kept() -> None:
    data = b"x\n" + BOM + b"y\n"  # block 1 starts exactly at the BOM-looking bytes
    assert block_records(data, Lines(), 1)[1] == ["\ufeffy"]
    assert decode_all(Lines(), [BOM + b"y\n"], at_file_start=False) == ["\ufeffy"]


def test_bom_is_stripped_only_at_the_start_of_the_file_not_after_a_newline() -> None:
    assert decode_all(Lines(), [BOM + b"a\n" + BOM + b"b\n"]) == ["a", "\ufeffb"]
    assert decode_all(Lines(), [BOM + BOM + b"a\n"]) == ["\ufeffa"]


@pytest.mark.parametrize("cut", [0, 1, 2, 3, 4, 5])
def test_bom_split_across_chunks_is_stripped_once(cut: int) -> None:
    data = BOM + b"ab\ncd\n"
    assert decode_all(Lines(), [data[:cut], data[cut:]]) == ["ab", "cd"]
    points = sorted({0, 1, 2, cut, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    assert b"".join(chunks) == data
    assert decode_all(Lines(), chunks) == ["ab", "cd"]


def test_a_file_that_is_only_a_bom_has_no_records() -> None:
    assert decode_all(Lines(), [BOM]) == []
    assert decode_all(Lines(), [BOM[:1], BOM[1:]]) == []


def test_bom_alone_on_the_first_line_gives_an_empty_record() -> None:
    assert decode_all(Lines(), [BOM + b"\nx\n"]) == ["", "x"]


def test_latin1_lines_keep_utf8_bom_bytes_as_characters() -> None:
    # a UTF-8 BOM is only a BOM in UTF-8; in latin-1 it is three characters
    assert decode_all(Lines(encoding="latin-1"), [BOM + b"a\n"]) == ["\xef\xbb\xbfa"]


@pytest.mark.parametrize(
    ("delimiter", "data"),
    [
        (b"\n\n", b"a\n\n\nb\n\n\n\nc\n\n\n"),
        (b"\n\n", b"\n\n\n\n\n"),
        (b"\n\n", b"para one\nline 2\n\npara two\n\n\n\npara three"),
        (b"aa", b"aaaaab"),
        (b"aa", b"baaabaaaaaba"),
        (b"aa", b"a" * 23),
        (b"aaa", b"aaaaaaaxaaaaxaa"),
        (b"aaa", b"a" * 31),
        (b"aba", b"abababaxabaababa"),
        (b"|+|", b"|+|+|+|+||+|"),
    ],
)
def test_self_overlapping_delimiters_give_the_sequential_parse(
    delimiter: bytes, data: bytes
) -> None:
    expected = split_sequential(data, delimiter)
    fmt = Delimited(delimiter)
    for block_size in every_block_size(data):
        assert all_records(data, fmt, block_size) == expected, block_size


def test_double_newline_in_a_run_of_newlines_pairs_from_the_left() -> None:
    data = b"a\n\n\nb"  # sequential: "a", then "\nb"
    assert split_sequential(data, b"\n\n") == [b"a", b"\nb"]
    for block_size in every_block_size(data):
        assert all_records(data, Delimited(b"\n\n"), block_size) == [b"a", b"\nb"]


@pytest.mark.parametrize("delimiter", [b"\n", b"aa", b"\n\n", b"|+|"])
def test_aligned_ranges_tile_the_file(delimiter: bytes) -> None:
    data = b"aa\n\n|+|+|a\naaa\n\n\nx|+||+|aaaa\n"
    for block_size in every_block_size(data):
        ranges = aligned_ranges(data, delimiter, block_size)
        assert ranges[0][1] == 0
        assert ranges[-1][2] == len(data)
        for (_, _, end), (_, start, _) in itertools.pairwise(ranges):
            assert start == end


# -- Lines: encodings ------------------------------------------------------------------


def test_lines_decode_utf8_multibyte_characters_across_block_cuts() -> None:
    data = "héllo\nwörld €\n日本語\n".encode()
    for block_size in every_block_size(data):
        assert all_records(data, Lines(), block_size) == ["héllo", "wörld €", "日本語"]


def test_lines_latin1_decodes_every_byte() -> None:
    data = b"caf\xe9\r\n\xff\xfe\n"
    for block_size in every_block_size(data):
        assert all_records(data, Lines(encoding="latin-1"), block_size) == ["café", "ÿþ"]


def test_lines_errors_replace_substitutes_bad_bytes() -> None:
    fmt = Lines(errors="replace")
    assert decode_all(fmt, [b"caf\xe9\nok\n"]) == ["caf\ufffd", "ok"]
    assert decode_all(fmt, [b"a\n\xff"]) == ["a", "\ufffd"]


def test_lines_errors_strict_raises_unicode_decode_error_on_bad_bytes() -> None:
    with pytest.raises(UnicodeDecodeError):
        decode_all(Lines(errors="strict"), [b"ok\ncaf\xe9\n"])
    with pytest.raises(UnicodeDecodeError):
        decode_all(Lines(), [b"ok\n\xff"])  # in the final record without newline


def test_lines_surrogateescape_round_trips_bad_bytes() -> None:
    records = decode_all(Lines(errors="surrogateescape"), [b"caf\xe9\n"])
    assert records[0].encode("utf-8", "surrogateescape") == b"caf\xe9"


@pytest.mark.parametrize("encoding", ["cp037"])
def test_lines_refuses_encodings_where_newline_is_not_byte_0x0a(encoding: str) -> None:
    with pytest.raises(ConfigError, match=f"encoding {encoding!r} does not write a newline"):
        Lines(encoding=encoding)


def test_lines_refuses_unknown_encoding_with_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown encoding: no-such-codec"):
        Lines(encoding="no-such-codec")


def test_lines_refuses_unknown_errors_handler_with_config_error() -> None:
    with pytest.raises(ConfigError, match="no-such-handler"):
        Lines(errors="no-such-handler")


def test_lines_accepts_codec_aliases() -> None:
    data = b"a\nb\n"
    assert decode_all(Lines(encoding="UTF8"), [BOM + data]) == ["a", "b"]
    assert decode_all(Lines(encoding="cp1252"), [b"\x80\n"]) == ["€"]


def test_lines_delimiter_is_newline() -> None:
    assert Lines().delimiter == b"\n"
    assert Lines(encoding="latin-1").delimiter == b"\n"


# -- Delimited and Raw -----------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [b"", ""])
def test_delimited_refuses_empty_delimiter(delimiter: bytes | str) -> None:
    with pytest.raises(ConfigError, match="delimiter must not be empty"):
        Delimited(delimiter)  # type: ignore[arg-type]


def test_raw_refuses_empty_delimiter() -> None:
    with pytest.raises(ConfigError, match="delimiter must not be empty"):
        Raw(b"")


def test_delimited_refuses_non_bytes_delimiter_with_type_error() -> None:
    with pytest.raises(TypeError, match="delimiter must be bytes or str"):
        Delimited(10)  # type: ignore[arg-type]


def test_delimited_accepts_a_str_delimiter_as_utf8_bytes() -> None:
    assert Delimited("|+|").delimiter == b"|+|"
    assert Delimited("§").delimiter == "§".encode()


def test_delimited_records_are_bytes_by_default() -> None:
    assert decode_all(Delimited(b"\0"), [b"a\0b\0", b"c"]) == [b"a", b"b", b"c"]


def test_delimited_with_encoding_yields_str() -> None:
    fmt = Delimited(b"\0", encoding="utf-8")
    assert decode_all(fmt, ["é\0ü".encode()]) == ["é", "ü"]


def test_delimited_with_encoding_errors_replace() -> None:
    fmt = Delimited(b"|", encoding="utf-8", errors="replace")
    assert decode_all(fmt, [b"\xff|ok"]) == ["\ufffd", "ok"]


def test_delimited_refuses_unknown_encoding_with_config_error() -> None:
    # every other bad option value is a ConfigError (Lines turns LookupError into one)
    with pytest.raises(ConfigError, match="no-such-codec"):
        Delimited(b"|", encoding="no-such-codec")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_delimited_refuses_utf16_text_encoding_with_config_error(encoding: str) -> None:
    # bytes of UTF-16 text cannot be cut on a byte delimiter: b"\n" splits the
    # two-byte code unit of "\n" and every record fails to decode
    with pytest.raises(ConfigError, match="encoding"):
        Delimited(b"\n", encoding=encoding)


def test_raw_yields_one_record_per_block_holding_its_aligned_bytes() -> None:
    data = b"a\nbb\nccc\ndddd\n"
    for block_size in every_block_size(data):
        per_block = block_records(data, Raw(), block_size)
        ranges = aligned_ranges(data, b"\n", block_size)
        assert [len(records) for records in per_block] == [
            1 if last > first else 0 for _, first, last in ranges
        ]
        assert [r for records in per_block for r in records] == [
            data[first:last] for _, first, last in ranges if last > first
        ]
        assert b"".join(r for records in per_block for r in records) == data


def test_raw_joins_chunks_into_one_record() -> None:
    assert list(Raw().iter_batches([b"a\n", b"b", b"\n"], at_file_start=True)) == [[b"a\nb\n"]]


def test_raw_with_custom_delimiter_cuts_on_it() -> None:
    data = b"r1\0r2\0r3"
    for block_size in every_block_size(data):
        records = all_records(data, Raw(b"\0"), block_size)
        assert b"".join(records) == data
        assert all(r.endswith(b"\0") for r in records[:-1])


# -- format registry -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt",
    [
        Lines(),
        Lines(encoding="latin-1", errors="replace"),
        Lines(encoding="utf-8", errors="surrogateescape"),
        Delimited(),
        Delimited(b"|+|"),
        Delimited(b"\0", encoding="utf-8", errors="replace"),
        Delimited(b"\xff\xfe"),
        Raw(),
        Raw(b"\r\n"),
    ],
    ids=repr,
)
def test_from_dict_round_trips_each_format(fmt: Any) -> None:
    spec = fmt.to_dict()
    assert json.loads(json.dumps(spec)) == spec  # JSON-safe
    rebuilt = formats.from_dict(json.loads(json.dumps(spec)))
    assert rebuilt == fmt
    assert type(rebuilt) is type(fmt)
    assert rebuilt.delimiter == fmt.delimiter


def test_get_format_returns_an_instance_for_each_name() -> None:
    assert formats.available_formats() == ["csv", "delimited", "fixed", "jsonl", "lines",
                                           "parquet", "raw"]
    assert formats.get_format("lines") == Lines()
    assert formats.get_format("delimited") == Delimited()
    assert formats.get_format("raw") == Raw()
    custom = Delimited(b"|")
    assert formats.get_format(custom) is custom


def test_get_format_rejects_unknown_name_listing_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown format 'xml'; choose one of "
                                          "csv, delimited, fixed, jsonl, lines, parquet, raw"):
        formats.get_format("xml")


def test_get_format_rejects_objects_that_are_not_formats() -> None:
    with pytest.raises(TypeError, match="format must be a name or a format instance"):
        formats.get_format(42)  # type: ignore[arg-type]


def test_formats_are_frozen() -> None:
    fmt = Lines()
    with pytest.raises(AttributeError):
        fmt.encoding = "latin-1"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "pos", "delimiter"),
    [
        (b"a" * 200_000, 100_000, b"aa"),
        (b"x" + b"\n" * 200_000, 100_001, b"\n\n"),
    ],
    ids=["aa", "double-newline"],
)
def test_find_boundary_looks_back_over_a_long_delimiter_run_in_windows_not_byte_by_byte(
    data: bytes, pos: int, delimiter: bytes
) -> None:
    # the parse inside a run of a self-overlapping delimiter depends on where the run
    # starts, so looking back is needed; but each read() is a storage request (an HTTP
    # range GET on S3), so it must fetch windows, not one or two bytes per call
    calls: list[tuple[int, int]] = []

    def read(start: int, end: int) -> bytes:
        calls.append((start, end))
        return data[start:end]

    found = find_boundary(read, pos, len(data), delimiter)
    assert found.offset == pos + 2  # the run starts at an even offset of the parse
    assert len(calls) <= 16, f"{len(calls)} reads, first ones {calls[:4]}"


def test_find_boundary_handles_a_self_overlapping_delimiter_longer_than_the_lookback_step(
) -> None:
    # a 5000-byte delimiter whose last two bytes are also its first two: the occurrence
    # at 0 straddles any pos in (0, 5000) and hides the overlapping one at 4998
    delimiter = b"ab" + b"x" * 4996 + b"ab"
    data = delimiter + delimiter[2:] + b"tail"
    assert split_sequential(data, delimiter) == [b"", delimiter[2:] + b"tail"]
    ends = [len(delimiter)]
    for pos in [*range(1, len(data) + 1, 250), 4097, 4500, 4900, 4998]:
        expected = min((e for e in ends if e - len(delimiter) >= pos), default=len(data))
        found = find_boundary(lambda s, e: data[s:e], pos, len(data), delimiter)
        assert found.offset == expected, pos
    for block_size in (3000, 4500, 4999):
        assert all_records(data, Delimited(delimiter), block_size) == split_sequential(
            data, delimiter)


@given(records=st.lists(st.text("ab\u00e9", max_size=4), min_size=1, max_size=6),
       bad=st.integers(0, 100), chunk=st.integers(1, 9),
       delimiter=st.sampled_from([b"\0", b"|+|", b"\n\n"]))
def test_delimited_text_names_the_offset_of_undecodable_bytes(
        records: list[str], bad: int, chunk: int, delimiter: bytes) -> None:
    pieces = [r.encode() for r in records]
    index = bad % len(pieces)
    pieces[index] += b"\xff"
    data = delimiter.join(pieces) + delimiter
    offset = data.index(b"\xff")
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    with pytest.raises(InputError, match=rf"at byte {offset} of the file: invalid start "):
        decode_all(Delimited(delimiter, encoding="utf-8"), chunks)
