"""``Lines.iter_batches`` decodes each chunk in place (the line a chunk finishes is
joined from its pieces; the rest is decoded from the chunk itself, through a
``memoryview`` for UTF-8, ASCII and Latin-1). Whatever the cut points, the records, the
batches (one per chunk that ends a line) and the byte offset of a decoding error must
be those of decoding the whole range at once.
"""

from __future__ import annotations

import codecs
import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockproc.errors import TextDecodeError
from blockproc.formats import Lines

BOM = codecs.BOM_UTF8

# Bytes rich in what matters here: LF, CR, a BOM, multi-byte UTF-8 and invalid bytes.
pieces = st.sampled_from([b"\n", b"\r", b"\r\n", b"a", b"xyz", BOM, "é".encode(),
                          "😀".encode(), b"\xff", b"\xe2\x82", b"\x80", b" "])
data_bytes = st.lists(pieces, max_size=40).map(b"".join)
valid_bytes = st.lists(st.sampled_from([b"\n", b"\r\n", b"ab", "é".encode(), BOM]),
                       max_size=30).map(b"".join)
bad_bytes = st.sampled_from([b"\xff", b"\xe2\x82\n", b"\x80", b"\xc3"])
# valid lines, then the first bad bytes somewhere after them
late_error = st.tuples(valid_bytes, bad_bytes, data_bytes).map(b"".join)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at ``points`` (empty chunks included where points repeat)."""
    bounds = [0, *sorted(points), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def reference(data: bytes, encoding: str, errors: str, at_file_start: bool) -> list[str]:
    """Decode the whole range at once, then split on LF and drop a CR before each LF."""
    if at_file_start and codecs.lookup(encoding).name == "utf-8" and data.startswith(BOM):
        data = data[len(BOM):]
    text = data.decode(encoding, errors)
    lines = text.split("\n")
    last = lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return lines + ([last] if last else [])


def expected_batches(chunks: list[bytes], lines: list[str]) -> list[int]:
    """How many lines each batch holds: one batch per chunk with an LF (the lines it
    ends), then the last line without LF, if any."""
    sizes = [chunk.count(b"\n") for chunk in chunks if b"\n" in chunk]
    rest = len(lines) - sum(sizes)
    return sizes + ([rest] if rest else [])


@settings(max_examples=400)
@given(data=data_bytes, points=st.lists(st.integers(0, 200), max_size=10),
       encoding=st.sampled_from(["utf-8", "latin-1", "cp1252", "ascii"]),
       errors=st.sampled_from(["replace", "surrogateescape"]),
       at_file_start=st.booleans())
def test_records_and_batches_do_not_depend_on_the_cut_points(
        data: bytes, points: list[int], encoding: str, errors: str,
        at_file_start: bool) -> None:
    points = [p % (len(data) + 1) for p in points]
    chunks = cut(data, points)
    batches = list(Lines(encoding, errors).iter_batches(chunks, at_file_start=at_file_start))
    lines = reference(data, encoding, errors, at_file_start)
    assert [line for batch in batches for line in batch] == lines
    assert [len(batch) for batch in batches] == expected_batches(chunks, lines)


def error_offset(message: str) -> int:
    found = re.search(r"at byte (\d+)", message)
    assert found, message
    return int(found.group(1))


@settings(max_examples=300)
@given(data=st.one_of(data_bytes, late_error),
       points=st.lists(st.integers(0, 200), max_size=10), at_file_start=st.booleans())
def test_a_decoding_error_names_the_offset_of_the_first_bad_byte(
        data: bytes, points: list[int], at_file_start: bool) -> None:
    points = [p % (len(data) + 1) for p in points]
    skip = len(BOM) if at_file_start and data.startswith(BOM) else 0
    try:
        data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        first_bad = skip + exc.start
    else:
        assert [r for b in Lines().iter_batches(cut(data, points), at_file_start=at_file_start)
                for r in b] == reference(data, "utf-8", "strict", at_file_start)
        return
    with pytest.raises(TextDecodeError) as info:
        for _ in Lines().iter_batches(cut(data, points), at_file_start=at_file_start):
            pass
    assert error_offset(str(info.value)) == first_bad


def test_a_line_longer_than_many_chunks_is_joined_once() -> None:
    line = b"x" * 1000
    chunks = [line[i:i + 7] for i in range(0, len(line), 7)] + [b"\ny\n"]
    assert list(Lines().iter_batches(chunks, at_file_start=False)) == [["x" * 1000, "y"]]


def test_bytearray_chunks_and_codecs_read_through_slices_decode_alike() -> None:
    data = b"a\r\nb\xc3\xa9\nc"
    expected = [["a", "bé"], ["c"]]
    assert list(Lines().iter_batches([bytearray(data)], at_file_start=True)) == expected
    assert list(Lines("cp1252").iter_batches([data[:2], data[2:]], at_file_start=True)) \
        == [["a", "bÃ©"], ["c"]]
