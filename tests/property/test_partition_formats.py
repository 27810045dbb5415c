"""The partition property (tests/property/test_partition.py) for the formats of issue 4.

For any content and (on small inputs) every block size, the concatenation of all
blocks' records equals the records of the whole file read sequentially, each exactly
once, in order. The oracles are independent of blockproc: pyarrow's CSV reader over
the whole file, ``json.loads`` per line, ``np.frombuffer`` over the whole body,
``pq.read_table`` of the whole file, ``bytes.decode`` of the whole text.
"""

from __future__ import annotations

import codecs
import io
import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import blockproc as bp
from blockproc.formats import CSV, Fixed, JSONLines, Lines, Parquet, csv_format
from blockproc.formats import csv_split as cs
from blockproc.model import InputFile
from blockproc.planning import cut_blocks, nominal_ranges
from blockproc.testing import write_files
from blockproc.worker import BlockTask, aligned_chunks

BOM = codecs.BOM_UTF8
SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- a FileAccess over bytes (what planning gives a format's hook) ----------------------


class _Source:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.bytes_read = 0

    def read(self, start: int, end: int) -> bytes:
        piece = self.data[max(0, start):max(0, end)]
        self.bytes_read += len(piece)
        return piece


class MemAccess:
    """``formats.hooks.FileAccess`` over in-memory files."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    @contextmanager
    def open(self, path: str) -> Iterator[_Source]:
        yield _Source(self.files[path])

    def head(self, file: InputFile, size: int) -> bytes:
        return self.files[file.path][:size]


def block_sizes(size: int, draw: st.DataObject, limit: int = 70) -> list[int]:
    """Every block size for small inputs, else the edges plus a random sample."""
    if size <= limit:
        return list(range(1, size + 2))
    edges = {1, 2, 3, size - 1, size, size + 1}
    extra = draw.draw(st.lists(st.integers(1, size + 1), min_size=12, max_size=12),
                      label="block sizes")
    return sorted(edges | set(extra))


# -- CSV -------------------------------------------------------------------------------

_PLAIN = ["a", "b", "1", "x y", ""]
_QUOTED = ["a", "1", ",", "\n", "\r\n", '""', "\n1,2\n", "x,y\n3,4", "\n\n", ',"",']


@st.composite
def csv_field(draw: st.DrawFn, sep: str) -> str:
    kind = draw(st.sampled_from(["plain", "plain", "quoted", "quoted", "stray", "tail"]))
    plain = "".join(draw(st.lists(st.sampled_from(_PLAIN), max_size=3))).replace(",", sep)
    if kind == "plain":
        return plain
    if kind == "stray":  # a quote inside an unquoted field: literal for pyarrow
        return (plain or "5") + '"' + draw(st.sampled_from(["", "x", '"', "in"]))
    inner = "".join(draw(st.lists(st.sampled_from(_QUOTED), max_size=4))).replace(",", sep)
    quoted = '"' + inner + '"'
    if kind == "tail":  # after the closing quote the field goes on unquoted
        return quoted + draw(st.sampled_from(["x", 'x"', 'y"z', ' "']))
    return quoted


@st.composite
def csv_file(draw: st.DrawFn, sep: str = ",", header: bool = True) -> bytes:
    ncols = draw(st.integers(1, 3))
    rows = []
    if header:
        rows.append(sep.join(f"c{i}" for i in range(ncols)))
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.integers(0, 9)) == 0:
            rows.append("")  # an empty line
        rows.append(sep.join(draw(csv_field(sep)) for _ in range(ncols)))
    if header and rows and draw(st.booleans()):
        rows.insert(draw(st.integers(1, len(rows))), rows[0])  # a row equal to the header
    endings = [draw(st.sampled_from(["\n", "\n", "\r\n"])) for _ in rows]
    text = "".join(r + e for r, e in zip(rows, endings, strict=True))
    if text and draw(st.booleans()):
        text = text.removesuffix("\n").removesuffix("\r")
    data = text.encode()
    if draw(st.integers(0, 5)) == 0:
        data = BOM + data
    return data


def csv_oracle(data: bytes, fmt: CSV) -> list[dict[str, Any]]:
    """pyarrow's reading of the whole file, every column a string."""
    parse = pa_csv.ParseOptions(delimiter=fmt.sep, quote_char=fmt.quote_char or False,
                                escape_char=fmt.escape_char or False, newlines_in_values=True)
    body = data if data.endswith((b"\n", b"\r")) else data + b"\n"
    read = pa_csv.ReadOptions(autogenerate_column_names=not fmt.header)
    try:
        names = pa_csv.read_csv(io.BytesIO(body), read_options=read,
                                parse_options=parse).column_names
    except pa.ArrowInvalid as exc:
        assert "Empty CSV" in str(exc)
        return []
    convert = pa_csv.ConvertOptions(column_types={n: pa.string() for n in names},
                                    strings_can_be_null=False)
    table = pa_csv.read_csv(io.BytesIO(body), read_options=read, parse_options=parse,
                            convert_options=convert)
    return list(table.to_pylist())


def row_ends(data: bytes, fmt: CSV) -> list[int]:
    """Offsets right after every LF that ends a row (the exact grammar, from byte 0)."""
    grammar = cs.Grammar(fmt.dialect)
    start = 3 if data.startswith(BOM) else 0
    ends, pos, state = [], start, cs.S
    while pos < len(data):
        pos, state, found = grammar.walk(data, pos, len(data), state, cs.ROWS)
        if found:
            ends.append(pos)
    return ends


def check_csv_partition(data: bytes, fmt: CSV, sizes: list[int]) -> None:
    expected = csv_oracle(data, fmt)
    ends = row_ends(data, fmt)
    files = [InputFile("f.csv", len(data))]
    access = MemAccess({"f.csv": data})
    for block_size in sizes:
        planned, blocks = fmt.plan_blocks(files, cut_blocks(files, block_size), access)
        assert planned.aligned
        # (a) the blocks tile [0, size), in order, and none is empty
        if not data:
            assert blocks == []
            continue
        assert blocks[0].start == 0 and blocks[-1].end == len(data), (block_size, blocks)
        for a, b in itertools.pairwise(blocks):
            assert a.end == b.start and a.start < a.end, (block_size, blocks)
        assert [b.id for b in blocks] == list(range(len(blocks)))
        # (b) each block starts right after the first row-ending LF at or after its
        # nominal start (DESIGN.md's ownership rule)
        want = sorted({0} | {min((e for e in ends if e - 1 >= s), default=len(data))
                             for s, _ in nominal_ranges(len(data), block_size)[1:]}
                      - {len(data)})
        assert [b.start for b in blocks] == want, (block_size, blocks, ends)
        # (c) the rows, each exactly once, in order
        got = []
        for b in blocks:
            table = planned.decode_block(data[b.start:b.end], at_file_start=b.start == 0)
            got.extend(table.to_pylist())
        assert got == expected, (block_size, got, expected)


@settings(SLOW, max_examples=150)
@given(data=csv_file(), draw=st.data())
@example(data=b'c0,c1\n1,"x\n2,y\n3,z"\n4,w\n', draw=None)  # a quoted tail that looks like rows
@example(data=b'c0\n5" screen\n"a\nb"\n', draw=None)  # a stray quote, then a real one
@example(data=b'c0,c1\n"ab"c"d,"\n,"\n', draw=None)
def test_csv_blocks_give_pyarrows_parse_of_the_whole_file(data: bytes,
                                                          draw: st.DataObject | None) -> None:
    sizes = list(range(1, len(data) + 2)) if draw is None else block_sizes(len(data), draw)
    check_csv_partition(data, CSV(), sizes)


@settings(SLOW, max_examples=60)
@given(data=csv_file(sep=";", header=False), draw=st.data())
def test_csv_without_header_and_another_separator(data: bytes, draw: st.DataObject) -> None:
    check_csv_partition(data, CSV(sep=";", header=False), block_sizes(len(data), draw))


_ESCAPED_PLAIN = ["a", "\\,", '\\"', "\\\\", "\\\n", "x"]
_ESCAPED_QUOTED = [*_ESCAPED_PLAIN, ",", "\n", '""']


@st.composite
def escaped_csv(draw: st.DrawFn) -> bytes:
    rows = ["c0,c1"]
    for _ in range(draw(st.integers(0, 6))):
        fields = []
        for _ in range(2):
            if draw(st.booleans()):
                inner = draw(st.lists(st.sampled_from(_ESCAPED_QUOTED), max_size=4))
                fields.append('"' + "".join(inner) + '"')
            else:
                fields.append("".join(draw(st.lists(st.sampled_from(_ESCAPED_PLAIN),
                                                    max_size=4))))
        rows.append(",".join(fields))
    return ("\n".join(rows) + "\n").encode()


@settings(SLOW, max_examples=60)
@given(data=escaped_csv(), draw=st.data())
@example(data=b'c0,c1\n"a\\\n1,2",\\\n\n', draw=None)
def test_csv_with_an_escape_character(data: bytes, draw: st.DataObject | None) -> None:
    sizes = list(range(1, len(data) + 2)) if draw is None else block_sizes(len(data), draw)
    check_csv_partition(data, CSV(escape_char="\\"), sizes)


@settings(SLOW, max_examples=150)
@given(data=csv_file(), cuts=st.lists(st.integers(0, 400), max_size=10))
def test_csv_chained_parity_states_equal_the_exact_grammar(data: bytes, cuts: list[int]) -> None:
    # the fast path (quote counts, chained) must give the state the exact walk gives
    fmt = CSV()
    grammar = cs.Grammar(fmt.dialect)
    ds = 3 if data.startswith(BOM) else 0
    points = cs.cut_points(len(data), [c for c in cuts if c < len(data)])
    bounds = [*points, len(data)]

    def read(s: int, e: int) -> bytes:
        return data[max(0, s):e]

    scans = [cs.scan_piece(read, a, e, ds, grammar.d) for a, e in itertools.pairwise(bounds)]
    states = cs.chain_states(scans, read, ds, grammar)
    for p in points:
        exact = cs.S if p <= ds else cs.walk_range(read, ds, p, cs.S, grammar)
        assert states[p] == exact, (p, states, data)


@settings(SLOW, max_examples=150)
@given(data=csv_file(), draw=st.data(), window=st.integers(1, 6), limit=st.sampled_from([1, 8, 64]))
@example(data=b'c0,c1\n1,"x\n2,y\n3,z"\n4,w\n', draw=None, window=1, limit=8)
@example(data=b'c0\r\n5" screen\r\n"a\r\nb"\r\n', draw=None, window=2, limit=8)
@example(data=b'c0,c1\n"a""\nb",""""\n7,"\n"\n', draw=None, window=1, limit=64)
def test_csv_blocks_resolved_from_small_windows_give_pyarrows_parse(
        data: bytes, draw: st.DataObject | None, window: int, limit: int) -> None:
    # windows of a few bytes, so most starts are resolved locally (every state agrees)
    # or fall back to the full pass, instead of walking from the file start
    sizes = list(range(1, len(data) + 2)) if draw is None else block_sizes(len(data), draw)
    with mock.patch.object(cs, "RESOLVE_WINDOW", window), \
            mock.patch.object(cs, "RESOLVE_LIMIT", limit):
        check_csv_partition(data, CSV(), sizes)
        check_csv_partition(data, CSV(escape_char="\\"), sizes[:8])


def test_csv_partition_end_to_end_through_the_plan_and_the_worker(memfs: str) -> None:
    data = (b'id,text\n' + b''.join(b'%d,"line %d\n%d,fake row\n""q""",\n' % (i, i, i)
                                     for i in range(40)))
    data = data.replace(b',\n', b'\n')
    (url,) = write_files(memfs, {"in.csv": data})
    expected = csv_oracle(data, CSV())
    for block_size in (1, 7, 16, 33, 100, 257, len(data)):
        rows, joined = _read_plan(url, CSV(), block_size)
        assert joined == data, block_size
        assert rows == expected, block_size


def _read_plan(url: str, fmt: Any, block_size: int) -> tuple[list[Any], bytes]:
    plan = bp.plan(url, block_size=block_size, format=fmt)
    from blockproc.storage import RangeSource, filesystem
    fs = filesystem(plan.protocol)
    out: list[Any] = []
    pieces = []
    for block in plan.blocks:
        task = BlockTask(block=block, attempt=1, num_blocks=len(plan.blocks),
                         file=plan.file(block.path), format=bp.formats.from_dict(plan.format),
                         input_fs=fs, output_fs=fs, part="p", staging_path="/unused/p")
        with RangeSource(fs, block.path) as source:
            chunks = list(aligned_chunks(task, source))
        pieces.extend(chunks)
        for batch in task.format.iter_batches(chunks, at_file_start=block.start == 0):
            out.extend(batch)
    return out, b"".join(pieces)


# -- JSON lines ------------------------------------------------------------------------

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text("a\n\"é\\", max_size=4),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("xy"), inner,
                                                                max_size=2),
    max_leaves=4,
)


@st.composite
def jsonl_file(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.integers(0, 6)) == 0:
            lines.append(draw(st.sampled_from(["", "  ", "\r"])))
        else:
            lines.append(json.dumps({"k": draw(_JSON_VALUES)}, ensure_ascii=draw(st.booleans())))
    text = "".join(line + draw(st.sampled_from(["\n", "\r\n"])) for line in lines)
    if text and draw(st.booleans()):
        text = text.rstrip("\n")
    data = text.encode()
    return BOM + data if draw(st.integers(0, 5)) == 0 else data


def _delimited_ranges(data: bytes, fmt: Any, block_size: int) -> list[tuple[int, int, int]]:
    def read(s: int, e: int) -> bytes:
        return data[s:e]

    out = []
    for start, end in nominal_ranges(len(data), block_size):
        first = fmt.boundary(read, start, len(data), max_record_size=1 << 20).offset
        last = len(data) if end >= len(data) else \
            fmt.boundary(read, end, len(data), max_record_size=1 << 20).offset
        out.append((start, first, last))
    return out


@settings(SLOW, max_examples=150)
@given(data=jsonl_file(), draw=st.data())
def test_jsonl_blocks_give_json_loads_of_every_line(data: bytes, draw: st.DataObject) -> None:
    text = data.decode("utf-8").removeprefix("\ufeff")
    expected = [json.loads(line) for line in text.split("\n") if line.strip()]
    fmt = JSONLines(block_as="dicts")
    for block_size in block_sizes(len(data), draw):
        got, listed = [], []
        for start, first, last in _delimited_ranges(data, fmt, block_size):
            piece = data[first:last]
            for batch in fmt.iter_batches([piece], at_file_start=start == 0):
                got.extend(batch)
            listed.extend(fmt.decode_block(piece, at_file_start=start == 0))
        assert got == expected, block_size
        assert listed == expected, block_size


@settings(SLOW, max_examples=60)
@given(values=st.lists(st.integers(-9, 9) | st.none(), max_size=20), draw=st.data())
def test_jsonl_tables_of_all_blocks_hold_every_row(values: list[int | None],
                                                   draw: st.DataObject) -> None:
    data = "".join(json.dumps({"k": v, "i": i}) + "\n" for i, v in enumerate(values)).encode()
    fmt = JSONLines(schema={"k": "int64", "i": "int64"})
    for block_size in block_sizes(len(data), draw):
        rows = []
        for start, first, last in _delimited_ranges(data, fmt, block_size):
            rows.extend(fmt.decode_block(data[first:last], at_file_start=start == 0)
                        .to_pylist())
        assert rows == [{"k": v, "i": i} for i, v in enumerate(values)], block_size


# -- fixed-width records ---------------------------------------------------------------


@settings(SLOW, max_examples=150)
@given(record_size=st.integers(1, 7), header_size=st.integers(0, 5),
       count=st.integers(0, 30), draw=st.data())
def test_fixed_blocks_give_every_record_once(record_size: int, header_size: int, count: int,
                                             draw: st.DataObject) -> None:
    body = bytes(draw.draw(st.binary(min_size=record_size * count,
                                     max_size=record_size * count), label="body"))
    data = bytes(range(header_size)) + body
    fmt = Fixed(record_size=record_size, header_size=header_size)
    expected = [body[i:i + record_size] for i in range(0, len(body), record_size)]
    for block_size in block_sizes(len(data), draw):
        got: list[bytes] = []
        arrays = []
        for start, first, last in _delimited_ranges(data, fmt, block_size):
            piece = data[first:last]
            for batch in fmt.iter_batches([piece], at_file_start=start == 0):
                got.extend(batch)
            arrays.append(fmt.decode_block(piece, at_file_start=start == 0))
        assert got == expected, block_size
        joined = np.concatenate(arrays) if arrays else np.empty((0, record_size), np.uint8)
        assert joined.tobytes() == body


@settings(SLOW, max_examples=60)
@given(count=st.integers(0, 40), draw=st.data())
def test_fixed_structured_dtype_blocks_are_the_whole_array(count: int,
                                                           draw: st.DataObject) -> None:
    dtype = np.dtype([("id", "<u2"), ("x", "<f4"), ("tag", "S3")])
    whole = np.zeros(count, dtype)
    whole["id"] = np.arange(count)
    whole["x"] = np.arange(count) / 4
    data = whole.tobytes()
    fmt = Fixed(dtype)
    for block_size in block_sizes(len(data), draw, limit=40):
        parts = [fmt.decode_block(data[first:last], at_file_start=start == 0)
                 for start, first, last in _delimited_ranges(data, fmt, block_size)]
        joined = np.concatenate(parts) if parts else np.empty(0, dtype)
        assert joined.tobytes() == data and joined.dtype == dtype


# -- Parquet ---------------------------------------------------------------------------


@settings(SLOW, max_examples=40)
@given(n=st.integers(0, 60), rg=st.integers(1, 20), draw=st.data())
def test_parquet_blocks_read_every_row_group_once(n: int, rg: int, draw: st.DataObject) -> None:
    table = pa.table({"i": list(range(n)), "s": [f"v{i}" * (i % 5) for i in range(n)]})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=rg, compression="none")
    data = buf.getvalue()
    fmt = Parquet()

    def read(s: int, e: int) -> bytes:
        return data[s:e]

    smallest = max(1, len(data) // 30)  # a footer read per block: keep blocks few
    sizes = sorted({smallest, len(data) // 3 or 1, len(data), len(data) + 1,
                    *draw.draw(st.lists(st.integers(smallest, len(data) + 1), min_size=4,
                                        max_size=4), label="sizes")})
    for block_size in sizes:
        rows = []
        for start, end in nominal_ranges(len(data), block_size):
            chunks = list(fmt.read_block(read, start, end, len(data)))
            rows.extend(fmt.decode_block(b"".join(chunks), at_file_start=start == 0)
                        .to_pylist())
        assert rows == table.to_pylist(), block_size


# -- UTF-16 / UTF-32 lines -------------------------------------------------------------

_WIDE_PIECES = ["a", "\n", "\n", "\r\n", "\r", "é", "\u0a05\u0100", "\u0a0a", "\U0001f600",
                "\u00ff\u00fe", "\ufeff", "\x00", "\u2028"]
_WIDE = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]


def sequential_wide(data: bytes, encoding: str) -> list[str]:
    text = data.decode(encoding)  # utf-16 and utf-32 drop a BOM themselves, -le/-be do not
    if encoding.endswith(("-le", "-be")):
        text = text.removeprefix("\ufeff")
    pieces = text.split("\n")
    last = pieces.pop()  # after the last LF: a line only if not empty, and its CR is data
    return [p.removesuffix("\r") for p in pieces] + ([last] if last else [])


@settings(SLOW, max_examples=150)
@given(encoding=st.sampled_from(_WIDE), bom=st.booleans(),
       pieces=st.lists(st.sampled_from(_WIDE_PIECES), max_size=25), draw=st.data())
@example(encoding="utf-16-le", bom=False, pieces=["\u0a05\u0100", "\n", "a"], draw=None)
def test_utf16_and_utf32_lines_split_on_code_units(encoding: str, bom: bool,
                                                    pieces: list[str],
                                                    draw: st.DataObject | None) -> None:
    text = "".join(pieces)
    if encoding in ("utf-16", "utf-32"):
        data = text.encode(encoding)  # Python writes a BOM (native order)
        if not bom:
            data = data[len(codecs.BOM_UTF16 if encoding == "utf-16" else codecs.BOM_UTF32):]
    else:
        data = (("\ufeff" if bom else "") + text).encode(encoding)
    expected = sequential_wide(data, encoding)
    fmt, _ = Lines(encoding).plan_blocks([InputFile("f", len(data))], [],
                                         MemAccess({"f": data}))
    assert fmt.encoding != encoding or encoding.endswith(("-le", "-be"))
    sizes = list(range(1, len(data) + 2)) if draw is None else block_sizes(len(data), draw, 90)
    for block_size in sizes:
        got = []
        for start, first, last in _delimited_ranges(data, fmt, block_size):
            assert first % (2 if "16" in encoding else 4) == 0
            for batch in fmt.iter_batches([data[first:last]], at_file_start=start == 0):
                got.extend(batch)
        assert got == expected, (block_size, got, expected)


def test_utf16_through_the_plan_and_the_worker(memfs: str) -> None:
    text = "".join(f"{i}:\u0a05\u0100é\U0001f600\r\n" for i in range(200))
    data = text.encode("utf-16")  # BOM + native order
    (url,) = write_files(memfs, {"in.txt": data})
    expected = sequential_wide(data, "utf-16")
    for block_size in (1, 3, 64, 1000, len(data)):
        records, joined = _read_plan(url, Lines("utf-16"), block_size)
        assert joined == data
        assert records == expected, block_size


@settings(SLOW, max_examples=150)
@given(data=csv_file(), cuts=st.lists(st.integers(0, 400), max_size=8),
       escape=st.booleans())
def test_csv_rows_streamed_to_map_lines_equal_the_block_table(data: bytes, cuts: list[int],
                                                              escape: bool) -> None:
    # iter_batches cuts its input at the last row end of every piece (the parity model,
    # or the exact walk after a stray quote); with a 1-byte threshold it cuts everywhere
    fmt = CSV(escape_char="\\" if escape else None)
    planned, _ = fmt.plan_blocks([InputFile("f", len(data))], [], MemAccess({"f": data}))
    whole = planned.decode_block(data, at_file_start=True).to_pylist()
    points = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    with mock.patch.object(csv_format, "STREAM_PIECE_SIZE", 1):
        streamed = [r for b in planned.iter_batches(chunks, at_file_start=True) for r in b]
    assert streamed == whole
    grammar = cs.Grammar(planned.dialect)
    body = data[planned._body_start(data):]
    assert cs.last_row_end(body, grammar) == max([0, *row_ends(body, planned)])
