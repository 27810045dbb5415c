"""Lines in UTF-16/UTF-32: code-unit-aligned boundaries, byte order, decoding errors."""

from __future__ import annotations

import codecs
import pickle
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from blockproc.errors import ConfigError, InputError
from blockproc.formats import Delimited, Lines
from blockproc.formats.text import (
    TextDecodeError,
    code_unit,
    find_unit_boundary,
    iter_wide_lines,
    specific_encoding,
)
from blockproc.model import InputFile


class Access:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    @contextmanager
    def open(self, path: str) -> Iterator[object]:
        raise AssertionError("resolving the byte order reads only the head")
        yield None

    def head(self, file: InputFile, size: int) -> bytes:
        return self.files[file.path][:size]


def lines(fmt: Lines, chunks: list[bytes], at_file_start: bool = True) -> list[str]:
    return [r for b in fmt.iter_batches(chunks, at_file_start=at_file_start) for r in b]


def test_a_newline_unit_straddling_two_code_units_is_not_a_boundary() -> None:
    # U+0A05 U+0100 in UTF-16-LE is 05 0a 00 01: the bytes 0a 00 at offset 1 are no newline
    data = "\u0a05\u0100x\nyz\n".encode("utf-16-le")

    def read(s: int, e: int) -> bytes:
        return data[s:e]

    assert data.find(b"\n\x00") == 1
    got = [find_unit_boundary(read, p, len(data), "utf-16-le", max_record_size=99).offset
           for p in range(len(data) + 1)]
    assert got == [0, 8, 8, 8, 8, 8, 8, 14, 14, 14, 14, 14, 14, 14, 14]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_every_block_decodes_its_own_lines(encoding: str) -> None:
    text = "a\r\n\U0001f600é\n\n\u0a05\u0100\nlast"
    data = ("\ufeff" + text).encode(encoding)
    fmt = Lines(encoding)
    unit = code_unit(encoding)

    def read(s: int, e: int) -> bytes:
        return data[s:e]

    for block_size in range(1, len(data) + 2):
        got = []
        for start in range(0, len(data), block_size):
            end = min(len(data), start + block_size)
            first = fmt.boundary(read, start, len(data), max_record_size=99).offset
            last = len(data) if end >= len(data) else \
                fmt.boundary(read, end, len(data), max_record_size=99).offset
            assert first % unit == 0
            got += lines(fmt, [data[first:last]], at_file_start=start == 0)
        assert got == ["a", "\U0001f600é", "", "\u0a05\u0100", "last"], block_size


@pytest.mark.parametrize(("encoding", "bom", "expected"), [
    ("utf-16", codecs.BOM_UTF16_LE, "utf-16-le"),
    ("utf-16", codecs.BOM_UTF16_BE, "utf-16-be"),
    ("UTF16", b"a\x00", "utf-16-le"),  # no BOM: the machine's order, as Python decodes it
    ("utf-32", codecs.BOM_UTF32_BE, "utf-32-be"),
    ("utf-32", codecs.BOM_UTF32_LE, "utf-32-le"),
])
def test_the_plan_resolves_the_byte_order_from_the_bom(encoding: str, bom: bytes,
                                                       expected: str) -> None:
    files = {"a": bom + b"\x00" * 8, "b": bom + b"\x00" * 4}
    fmt, blocks = Lines(encoding).plan_blocks(
        [InputFile(p, len(d)) for p, d in files.items()], [], Access(files))
    assert fmt.encoding == expected and blocks == []
    assert specific_encoding(encoding, bom) == expected


def test_inputs_in_different_byte_orders_are_refused() -> None:
    files = {"a": codecs.BOM_UTF16_LE, "b": codecs.BOM_UTF16_BE}
    with pytest.raises(ConfigError, match=r"different byte orders.*'a' is utf-16-le"):
        Lines("utf-16").plan_blocks([InputFile(p, 2) for p in files], [], Access(files))


def test_an_explicit_byte_order_reads_nothing_at_plan_time() -> None:
    fmt = Lines("utf-16-be")
    assert fmt.plan_blocks([InputFile("a", 2)], [], Access({}))[0] is fmt


def test_the_bom_is_dropped_only_in_block_0() -> None:
    data = "\ufeffa\n\ufeffb\n".encode("utf-16-le")
    assert lines(Lines("utf-16-le"), [data]) == ["a", "\ufeffb"]
    assert lines(Lines("utf-16-le"), [data], at_file_start=False) == ["\ufeffa", "\ufeffb"]


def test_code_units_and_surrogate_pairs_cut_by_chunks_decode() -> None:
    data = "x\U0001f600y\nz\n".encode("utf-16-be")
    for cut in range(len(data) + 1):
        assert lines(Lines("utf-16-be"), [data[:cut], data[cut:]]) == ["x\U0001f600y", "z"]


def test_strict_decoding_errors_name_the_byte_offset() -> None:
    data = "ok\n".encode("utf-16-le") + b"\x00\xd8" + "\n".encode("utf-16-le")  # lone surrogate
    with pytest.raises(UnicodeDecodeError, match="at byte 6 of the file") as info:
        lines(Lines("utf-16-le"), [data[:5], data[5:]])
    assert isinstance(info.value, InputError)
    with pytest.raises(TextDecodeError, match="after the start of the block's first record"):
        lines(Lines("utf-16-le"), [data], at_file_start=False)
    assert lines(Lines("utf-16-le", errors="replace"), [data]) == ["ok", "\ufffd"]


def test_utf8_decoding_errors_name_the_byte_offset_too() -> None:
    with pytest.raises(UnicodeDecodeError, match="at byte 8 of the file: invalid start"):
        lines(Lines(), [b"ok\nfine\n\xff\n"])
    with pytest.raises(UnicodeDecodeError, match="at byte 6 of the file"):
        lines(Lines(), [b"\xef\xbb\xbfok\n", b"\xff"])  # the BOM counts


def test_decode_errors_survive_pickling() -> None:
    with pytest.raises(TextDecodeError) as info:
        lines(Lines("utf-16-le"), [b"\x00\xd8\n\x00"])
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and isinstance(again, InputError)


def test_wide_text_is_lines_only() -> None:
    assert Lines("utf-16").delimiter == "\n".encode("utf-16-le" if codecs.BOM_UTF16 ==
                                                   codecs.BOM_UTF16_LE else "utf-16-be")
    assert Lines("utf-32-be").delimiter == b"\x00\x00\x00\n"
    assert not Lines("utf-16").packable and Lines().packable
    with pytest.raises(ConfigError, match="2-byte code unit"):
        Delimited(b"\n", encoding="utf-16")
    with pytest.raises(ConfigError, match="does not write a newline"):
        Lines("cp037")


def test_iter_wide_lines_on_nothing() -> None:
    assert list(iter_wide_lines([], "utf-16", "strict", at_file_start=True)) == []
    assert list(iter_wide_lines([b""], "utf-32-le", "strict", at_file_start=False)) == []
