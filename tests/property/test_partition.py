"""The core invariant: cutting a file into blocks never changes its records.

For any content and EVERY block size, the concatenation of all blocks' records equals the
records of the whole file read sequentially, each exactly once, in order (DESIGN.md,
"Blocks and record ownership"). Checked on the pure functions (nominal_ranges,
find_boundary, iter_batches) and end to end through the worker's read path.
"""

from __future__ import annotations

import codecs
import itertools
import posixpath
import random
import uuid
from collections.abc import Callable
from typing import Any

import fsspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import blockproc
from blockproc.formats import Delimited, Lines, Raw, find_boundary
from blockproc.formats.base import WINDOW_SIZE
from blockproc.planning import nominal_ranges
from blockproc.storage import RangeSource
from blockproc.testing import write_files
from blockproc.worker import BlockTask, aligned_chunks, count_records

BOM = codecs.BOM_UTF8
ALPHABET = b"a\n\r|+x"
FIXED_DELIMITERS = [b"\n", b"\r\n", b"|+|", b"\n\n", b"aa", b"aba", b"aaa"]

# -- strategies ------------------------------------------------------------------------


def _sized_bytes(alphabet: bytes, max_size: int = 300) -> st.SearchStrategy[bytes]:
    """Bytes from ``alphabet``, with a length drawn uniformly from 0..max_size (plain
    ``st.lists`` stays very short, and long inputs are where blocks cut records)."""
    return st.integers(0, max_size).flatmap(
        lambda n: st.lists(st.sampled_from(list(alphabet)), min_size=n, max_size=n).map(bytes)
    )


rich_bytes = st.one_of(
    _sized_bytes(ALPHABET),
    _sized_bytes(b"ab"),  # long runs for aa, aba, aaa
    _sized_bytes(b"a\n"),  # runs of newlines for \n\n
    st.integers(0, 300).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
)
random_delimiter = st.lists(st.sampled_from(list(ALPHABET)), min_size=1, max_size=4).map(bytes)
any_delimiter = st.one_of(st.sampled_from(FIXED_DELIMITERS), random_delimiter)

_TEXT_PIECES = [b"a", b"x", b"\n", b"\n", b"\r", b"\r\n", b"|", "é".encode(), "€".encode(),
                "日".encode(), BOM]
utf8_text = st.builds(
    lambda bom, pieces: (BOM if bom else b"") + b"".join(pieces),
    st.booleans(),
    st.integers(0, 150).flatmap(
        lambda n: st.lists(st.sampled_from(_TEXT_PIECES), min_size=n, max_size=n)
    ),
)


# -- the sequential parse (the oracle) -------------------------------------------------


def sequential_delimited(data: bytes, delimiter: bytes) -> list[bytes]:
    """``data.split(delimiter)`` minus a trailing empty piece."""
    pieces = data.split(delimiter)
    if pieces[-1] == b"":
        pieces.pop()
    return pieces


def sequential_lines(data: bytes) -> list[str]:
    """The whole file as text: BOM stripped once, split on LF, the CR of a CRLF dropped
    (a CR not followed by LF, at the end of the file too, is data)."""
    if data.startswith(BOM):
        data = data[len(BOM):]
    pieces = data.decode("utf-8").split("\n")
    last = pieces.pop()  # after the last LF: a line only if not empty, and its CR is data
    return [p.removesuffix("\r") for p in pieces] + ([last] if last else [])


def sequential(data: bytes, fmt: Any) -> list[Any]:
    if isinstance(fmt, Lines):
        return sequential_lines(data)
    if isinstance(fmt, Raw):
        return [data] if data else []
    return sequential_delimited(data, fmt.delimiter)


def delimiter_ends(data: bytes, delimiter: bytes) -> set[int]:
    """Offsets right after each delimiter of the sequential (greedy, leftmost) parse."""
    ends = set()
    at = data.find(delimiter)
    while at >= 0:
        ends.add(at + len(delimiter))
        at = data.find(delimiter, at + len(delimiter))
    return ends


# -- the block path on pure functions --------------------------------------------------


def aligned_ranges(data: bytes, delimiter: bytes, block_size: int) -> list[tuple[int, int, int]]:
    """``(nominal start, aligned start, aligned end)`` of each block, as a worker cuts them."""
    size = len(data)

    def read(start: int, end: int) -> bytes:
        return data[start:end]

    out = []
    for start, end in nominal_ranges(size, block_size):
        first = find_boundary(read, start, size, delimiter).offset
        last = size if end >= size else find_boundary(read, end, size, delimiter).offset
        out.append((start, first, last))
    return out


def decode(fmt: Any, chunks: list[bytes], *, at_file_start: bool) -> list[Any]:
    return [r for batch in fmt.iter_batches(chunks, at_file_start=at_file_start) for r in batch]


def records_by_blocks(data: bytes, fmt: Any, block_size: int) -> list[Any]:
    out: list[Any] = []
    for start, first, last in aligned_ranges(data, fmt.delimiter, block_size):
        out.extend(decode(fmt, [data[first:last]], at_file_start=start == 0))
    return out


def check_partition(data: bytes, fmt: Any) -> None:
    """Check tiling, ownership and record equality for EVERY block size 1..len+1."""
    size = len(data)
    delimiter = fmt.delimiter
    ends = delimiter_ends(data, delimiter)
    expected = sequential(data, fmt)
    for block_size in range(1, size + 2):
        ranges = aligned_ranges(data, delimiter, block_size)
        # (a) the aligned ranges tile [0, size) in order, no gap, no overlap
        if size == 0:
            assert ranges == []
        else:
            assert ranges[0][1] == 0, block_size
            assert ranges[-1][2] == size, block_size
            for (_, first, last), (_, next_first, _) in itertools.pairwise(ranges):
                assert first <= last, (block_size, ranges)
                assert last == next_first, (block_size, ranges)
        # (b) every non-empty range starts at 0 or right after a sequential delimiter,
        # and ends at EOF or right after one
        for _, first, last in ranges:
            if first < last:
                assert first == 0 or first in ends, (block_size, first)
                assert last == size or last in ends, (block_size, last)
        # ... and exactly the one the rule names: block [s, e) with s > 0 starts right
        # after the first delimiter that begins at or after s
        for start, first, _ in ranges[1:]:
            owner_rule = min((e for e in ends if e - len(delimiter) >= start), default=size)
            assert first == owner_rule, (block_size, start, first, owner_rule)
        # (c) the records, each exactly once, in order
        got: list[Any] = []
        for start, first, last in ranges:
            got.extend(decode(fmt, [data[first:last]], at_file_start=start == 0))
        if isinstance(fmt, Raw):
            assert b"".join(got) == data, block_size
            assert len(got) == sum(1 for _, first, last in ranges if first < last)
        else:
            assert got == expected, (block_size, got, expected)


# -- properties on the pure functions --------------------------------------------------


@settings(max_examples=300)
@given(data=rich_bytes, delimiter=any_delimiter)
def test_delimited_blocks_give_the_sequential_parse_for_every_block_size(
    data: bytes, delimiter: bytes
) -> None:
    check_partition(data, Delimited(delimiter))


@settings(max_examples=150)
@given(data=rich_bytes, delimiter=st.sampled_from([b"\n\n", b"aa", b"aba", b"aaa", b"|+|"]))
def test_self_overlapping_delimiters_give_the_sequential_parse_for_every_block_size(
    data: bytes, delimiter: bytes
) -> None:
    check_partition(data, Delimited(delimiter))


@settings(max_examples=200)
@given(data=utf8_text)
def test_lines_blocks_give_the_sequential_parse_for_every_block_size(data: bytes) -> None:
    check_partition(data, Lines())


@settings(max_examples=100)
@given(data=rich_bytes, delimiter=any_delimiter)
def test_raw_blocks_concatenate_to_the_file_for_every_block_size(
    data: bytes, delimiter: bytes
) -> None:
    check_partition(data, Raw(delimiter))


@settings(max_examples=200)
@given(data=rich_bytes, delimiter=any_delimiter)
@example(data=b"aaa", delimiter=b"aa")
@example(data=b"x|+|+|", delimiter=b"|+|")
def test_count_records_matches_the_records_of_each_block(data: bytes, delimiter: bytes) -> None:
    # count_records gives records_in when a per-block function never decodes its batch
    fmt = Delimited(delimiter)
    for block_size in range(1, len(data) + 2):
        for _, first, last in aligned_ranges(data, delimiter, block_size):
            aligned = data[first:last]
            records = decode(fmt, [aligned], at_file_start=first == 0)
            assert count_records(aligned, delimiter) == len(records), (aligned, records)


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=250)
@given(
    data=st.one_of(utf8_text, rich_bytes),
    delimiter=any_delimiter,
    kind=st.sampled_from(["lines", "delimited", "raw"]),
    draw=st.data(),
)
def test_iter_batches_gives_the_same_records_for_any_chunking(
    data: bytes, delimiter: bytes, kind: str, draw: st.DataObject
) -> None:
    if kind == "lines":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            data = data.decode("utf-8", "replace").encode("utf-8")
        fmt: Any = Lines()
    else:
        fmt = Delimited(delimiter) if kind == "delimited" else Raw(delimiter)
    block_size = draw.draw(st.integers(1, len(data) + 1), label="block_size")
    for start, first, last in aligned_ranges(data, fmt.delimiter, block_size):
        aligned = data[first:last]
        at_file_start = start == 0
        whole = decode(fmt, [aligned], at_file_start=at_file_start)
        cuts = draw.draw(st.lists(st.integers(0, len(aligned)), max_size=8), label="cuts")
        chunks = _chunked(aligned, cuts)
        assert b"".join(chunks) == aligned
        assert decode(fmt, chunks, at_file_start=at_file_start) == whole, chunks
        batches = list(fmt.iter_batches(chunks, at_file_start=at_file_start))
        assert all(isinstance(b, list) for b in batches)
    # and the whole file, fed in arbitrary chunks, is the sequential parse
    cuts = draw.draw(st.lists(st.integers(0, len(data)), max_size=12), label="file cuts")
    got = decode(fmt, _chunked(data, cuts), at_file_start=True)
    if kind == "raw":
        assert got == ([data] if data else [])
    else:
        assert got == sequential(data, fmt)


@settings(max_examples=150)
@given(data=utf8_text, draw=st.data())
def test_lines_bom_is_stripped_only_in_block_0(data: bytes, draw: st.DataObject) -> None:
    data = BOM + data
    block_size = draw.draw(st.integers(1, len(data) + 1), label="block_size")
    ranges = aligned_ranges(data, b"\n", block_size)
    for start, first, last in ranges[1:]:
        # a later block decodes its bytes as they are, BOM-looking or not
        raw = data[first:last]
        expected = sequential_lines(b"x" + raw) if raw else []
        if expected:
            expected[0] = expected[0][1:]
        assert decode(Lines(), [raw], at_file_start=start == 0) == expected
    assert records_by_blocks(data, Lines(), block_size) == sequential_lines(data)


# -- end to end through the worker's read path -----------------------------------------


def _read_blocks(url: str, fmt: Any, block_size: int) -> tuple[list[Any], int, int]:
    """Plan ``url`` and read every block as a worker does; return records, bytes read,
    number of blocks. Checks on the way that the blocks' bytes tile the file."""
    plan = blockproc.plan(url, block_size=block_size, format=fmt)
    fs = fsspec.filesystem(plan.protocol)
    records: list[Any] = []
    bytes_read = 0
    pieces: list[bytes] = []
    for block in plan.blocks:
        task = BlockTask(
            block=block, attempt=1, num_blocks=len(plan.blocks), file=plan.file(block.path),
            format=blockproc.formats.from_dict(plan.format), input_fs=fs, output_fs=fs,
            part=f"part-{block.id:05d}.txt", staging_path=f"/unused/part-{block.id:05d}.txt",
        )
        with RangeSource(fs, block.path) as source:
            chunks = list(aligned_chunks(task, source))
            records.extend(decode(task.format, chunks, at_file_start=block.start == 0))
            bytes_read += source.bytes_read
        pieces.extend(chunks)
    if plan.blocks:
        assert b"".join(pieces) == fs.cat_file(plan.blocks[0].path)
    return records, bytes_read, len(plan.blocks)


def _longest_record(data: bytes, delimiter: bytes) -> int:
    return max((len(p) + len(delimiter) for p in data.split(delimiter)), default=0)


@settings(max_examples=80)
@given(
    data=st.one_of(utf8_text, rich_bytes),
    delimiter=any_delimiter,
    kind=st.sampled_from(["lines", "delimited", "raw"]),
)
def test_worker_read_path_gives_the_sequential_parse_for_every_block_size(
    data: bytes, delimiter: bytes, kind: str
) -> None:
    fmt: Any
    if kind == "lines":
        data = data.decode("utf-8", "replace").encode("utf-8")
        fmt = Lines()
    else:
        fmt = Delimited(delimiter) if kind == "delimited" else Raw(delimiter)
    root = f"memory://partition-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("memory")
    try:
        (url,) = write_files(root, {"in.dat": data})
        expected = sequential(data, fmt)
        bound_per_block = _longest_record(data, fmt.delimiter) + WINDOW_SIZE
        for block_size in range(1, len(data) + 2):
            records, bytes_read, num_blocks = _read_blocks(url, fmt, block_size)
            if kind == "raw":
                assert b"".join(records) == data, block_size
            else:
                assert records == expected, (block_size, records, expected)
            assert bytes_read <= len(data) + num_blocks * bound_per_block, block_size
    finally:
        path = posixpath.join("/", root.removeprefix("memory://"))
        if fs.exists(path):
            fs.rm(path, recursive=True)


def _fresh_memory_file(data: bytes) -> tuple[str, Callable[[], None]]:
    root = f"memory://partition-{uuid.uuid4().hex[:12]}"
    (url,) = write_files(root, {"big.log": data})
    fs = fsspec.filesystem("memory")

    def cleanup() -> None:
        fs.rm(root.replace("memory://", "/"), recursive=True)

    return url, cleanup


@pytest.mark.parametrize("block_size", [4096, 50_000, 100_000, 300_000, 10**7])
def test_worker_reads_its_slice_plus_one_record_on_larger_files(block_size: int) -> None:
    # large enough that the 64 KiB window does not hide the overhang: all blocks
    # together read the file once plus, per block, at most one window and one record
    rng = random.Random(block_size)
    data = b"".join(b"%d:" % i + b"x" * rng.randrange(0, 3000) + b"\n" for i in range(900))
    url, cleanup = _fresh_memory_file(data)
    try:
        records, bytes_read, num_blocks = _read_blocks(url, Lines(), block_size)
        assert records == sequential_lines(data)
        longest = _longest_record(data, b"\n")
        assert len(data) <= bytes_read <= len(data) + num_blocks * (longest + WINDOW_SIZE)
    finally:
        cleanup()
