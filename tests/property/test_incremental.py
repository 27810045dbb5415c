"""Incremental runs, for any content cut into any appended pieces: the live part-files of
all runs, in part order, equal one run over the final input, record for record.

Each example writes a file in random pieces (pieces that split a delimiter, a CRLF, a
UTF-8 character or a quoted CSV field), runs ``if_exists="append"`` after each piece
(and now and then once more with nothing new), then compares with one run over the
final file. A run that fails on a piece that is not valid yet (a CSV row cut short)
leaves an interrupted append, which the next run must finish correctly.
"""

from __future__ import annotations

import uuid
from typing import Any

import fsspec
from hypothesis import given, settings
from hypothesis import strategies as st

import blockproc as bp
from blockproc.errors import BlockFailedError
from blockproc.formats import CSV, Delimited, Lines
from blockproc.testing import read_parts


def _bytes(alphabet: list[bytes], max_size: int = 200) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(alphabet), min_size=1, max_size=max_size).map(b"".join)


def _cuts(size: int) -> st.SearchStrategy[list[int]]:
    """Sorted positions in ``(0, size)`` where the file is seen by a run."""
    if size < 2:
        return st.just([])
    return st.lists(st.integers(1, size - 1), max_size=4, unique=True).map(sorted)


def run_pieces(content: bytes, cuts: list[int], fmt: Any, block_size: int,
               again: list[bool], *, first: int | None = None) -> None:
    """Write ``content`` up to each cut, append-run after each, then check the output."""
    root = f"memory://incremental-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    path = f"{root[len('memory:/'):]}/in/data.log"
    out = f"{root}/out"
    options: dict[str, Any] = {"output": out, "format": fmt, "block_size": block_size,
                               "executor": "inline", "progress": False}
    try:
        start = [] if first is None else [first]
        points = sorted({*start, *(c for c in cuts if c > (first or 0)), len(content)})
        for i, cut in enumerate(points):
            fs.pipe_file(path, content[:cut])
            try:
                bp.map_lines(repr, f"{root}/in", if_exists="append", **options)
            except BlockFailedError:
                assert i > 0 and cut < len(content)  # only a piece cut mid-row may fail
                continue
            if again[i % len(again)]:  # nothing new: nothing runs, nothing changes
                assert bp.map_lines(repr, f"{root}/in", if_exists="append",
                                    **options).blocks == ()
        bp.map_lines(repr, f"{root}/in", **{**options, "output": f"{root}/full"})
        assert read_parts(out).splitlines() == read_parts(f"{root}/full").splitlines()
        assert bp.output.verify(out) == []
    finally:
        fs.rm(root[len("memory:/"):], recursive=True)


@settings(max_examples=60, deadline=None)
@given(content=_bytes([b"a", b"b", b"\n", b"\r\n", b"\r", "é".encode(), b"\n"]),
       data=st.data(), block_size=st.integers(2, 48), again=st.lists(st.booleans(), min_size=1))
def test_lines_appended_in_pieces(content: bytes, data: st.DataObject, block_size: int,
                                  again: list[bool]) -> None:
    cuts = data.draw(_cuts(len(content)))
    # a piece may end inside a UTF-8 character: "replace" decodes it, and the record it
    # ends is superseded once the file grows
    run_pieces(content, cuts, Lines(errors="replace"), block_size, again)


@settings(max_examples=60, deadline=None)
@given(delimiter=st.sampled_from([b"|+|", b"\r\n", b"aa", b"\n\n", b"ab"]),
       content=_bytes([b"a", b"b", b"|", b"+", b"\r", b"\n", b"x"]), data=st.data(),
       block_size=st.integers(2, 48), again=st.lists(st.booleans(), min_size=1))
def test_delimited_appended_in_pieces(delimiter: bytes, content: bytes, data: st.DataObject,
                                      block_size: int, again: list[bool]) -> None:
    run_pieces(content, data.draw(_cuts(len(content))), Delimited(delimiter), block_size, again)


_plain = st.text(alphabet="ab ", max_size=4)
_quoted = st.text(alphabet='a,\n"\r', max_size=6).map(lambda s: '"' + s.replace('"', '""') + '"')
_row = st.tuples(st.one_of(_plain, _quoted), st.one_of(_plain, _quoted),
                 st.sampled_from(["\n", "\r\n"])).map(lambda t: f"{t[0]},{t[1]}{t[2]}")


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(_row, min_size=1, max_size=25), data=st.data(),
       block_size=st.integers(4, 64), again=st.lists(st.booleans(), min_size=1))
def test_csv_appended_in_pieces(rows: list[str], data: st.DataObject, block_size: int,
                                again: list[bool]) -> None:
    content = ("x,y\n" + "".join(rows)).encode()
    first_row_end = len("x,y\n") + len(rows[0])
    cuts = data.draw(_cuts(len(content)))
    # the first run sees whole rows (a CSV is written a row at a time; a run over a row
    # cut short fails, and leaves an interrupted append for the next run to finish)
    run_pieces(content, cuts, CSV(allow_unclosed_quote=True), block_size, again,
               first=first_row_end)


def _tagged(tag: str) -> st.SearchStrategy[bytes]:
    """Lines that each start with ``tag`` (so records tell their file), CRLF or LF."""
    line = st.tuples(st.text(alphabet="ab\r", max_size=6), st.sampled_from(["\n", "\r\n"]))
    return st.lists(line, max_size=12).map(
        lambda ls: "".join(tag + body + end for body, end in ls).encode())


@settings(max_examples=40, deadline=None)
@given(contents=st.tuples(_tagged("A"), _tagged("B"), _tagged("C")), data=st.data(),
       block_size=st.integers(8, 200))
def test_small_files_grow_in_rounds(contents: tuple[bytes, ...], data: st.DataObject,
                                    block_size: int) -> None:
    """Three small files (packed together when they fit a block) grow in rounds, each by
    its own random cut, one appearing late; per file, the records equal one run's."""
    rounds = data.draw(st.integers(1, 4))
    cuts = [sorted(data.draw(st.lists(st.integers(0, len(c)), min_size=rounds,
                                      max_size=rounds))) for c in contents]
    root = f"memory://incremental-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    base = root[len("memory:/"):]
    options: dict[str, Any] = {"output": f"{root}/out", "block_size": block_size,
                               "executor": "inline", "progress": False}
    try:
        for r in range(rounds + 1):
            for name, content, cut in zip("abc", contents, cuts, strict=True):
                size = len(content) if r == rounds else cut[r]
                if name != "c" or r > 0:  # c.log appears in the second round
                    fs.pipe_file(f"{base}/in/{name}.log", content[:size])
            bp.map_lines(repr, f"{root}/in", if_exists="append", **options)
        bp.map_lines(repr, f"{root}/in", **{**options, "output": f"{root}/full"})

        def by_tag(output: str) -> dict[str, list[bytes]]:
            found: dict[str, list[bytes]] = {}
            for record in read_parts(output).splitlines():
                found.setdefault(chr(record[1]), []).append(record)
            return found

        assert by_tag(f"{root}/out") == by_tag(f"{root}/full")
        assert bp.output.verify(f"{root}/out") == []
    finally:
        fs.rm(base, recursive=True)
