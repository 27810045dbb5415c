"""``map_batches``: a function of a list of records, called once per ~``batch_size`` bytes
of records of a block, on every executor."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import blockproc as bp
from blockproc.testing import read_parts, write_files

LINES = [f"{i:05d} {'GET' if i % 3 else 'POST'} {500 if i % 7 == 0 else 200}"
         for i in range(6000)]
DATA = ("\n".join(LINES) + "\n").encode()


def keep_5xx(lines: list[str]) -> list[str]:
    return [line.upper() for line in lines if line.endswith(" 500")]


def keep_5xx_line(line: str) -> str | None:
    return line.upper() if line.endswith(" 500") else None


def sizes(lines: list[str]) -> list[str]:
    """One output line per batch: how many records and bytes it holds."""
    return [f"{len(lines)} {sum(len(s) + 1 for s in lines)}"]


def lazily(lines: list[str]) -> Iterator[str]:
    return (line for line in lines if line.startswith("0000"))


def nothing(lines: list[str]) -> None:
    return None


def a_string(lines: list[str]) -> str:
    return "\n".join(lines)


def dicts(lines: list[str]) -> list[dict[str, str]]:
    return [{"line": line} for line in lines]


def fails_on_3000(lines: list[str]) -> list[str]:
    if any(line.startswith("03000") for line in lines):
        raise ValueError("bad batch")
    return lines


@pytest.fixture
def src(tmp_path: Path) -> str:
    path = tmp_path / "in.log"
    path.write_bytes(DATA)
    return str(path)


def test_map_batches_writes_what_map_lines_writes(src: str, tmp_path: Path,
                                                   executor: str) -> None:
    out, ref = str(tmp_path / "out"), str(tmp_path / "ref")
    res = bp.map_batches(keep_5xx, src, output=out, block_size="16KiB", executor=executor,
                         workers=2 if executor != "inline" else None)
    bp.map_lines(keep_5xx_line, src, output=ref, block_size="16KiB", executor="inline")
    assert read_parts(out) == read_parts(ref)
    assert read_parts(out).count(b"\n") == sum(1 for s in LINES if s.endswith(" 500"))
    assert res.num_records == len(LINES)


@pytest.mark.parametrize("batch_size", ["1KiB", "4KiB", 10_000])
def test_batches_hold_about_batch_size_bytes(src: str, tmp_path: Path,
                                            batch_size: Any) -> None:
    size = 1024 if batch_size == "1KiB" else 4096 if batch_size == "4KiB" else batch_size
    out = str(tmp_path / "out")
    res = bp.map_batches(sizes, src, output=out, block_size="64KiB", batch_size=batch_size,
                         executor="inline")
    rows = [tuple(map(int, line.split())) for line in read_parts(out).decode().splitlines()]
    assert sum(n for n, _ in rows) == len(LINES) == res.num_records
    per_block = len(rows) - len(res.blocks)  # the last batch of a block may be short
    assert per_block > 0
    full = sorted(b for _, b in rows)[len(res.blocks):]
    assert all(size * 0.5 <= b <= size * 2 for b in full), (size, full)


def test_a_large_batch_size_merges_the_reads(tmp_path: Path) -> None:
    lines = [f"{i:07d} " + "x" * 90 for i in range(60_000)]  # ~5.8 MB, one block
    path = tmp_path / "big.log"
    path.write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "out")
    bp.map_batches(sizes, str(path), output=out, block_size="64MiB", batch_size="3MiB",
                   executor="inline")
    rows = [tuple(map(int, line.split())) for line in read_parts(out).decode().splitlines()]
    assert sum(n for n, _ in rows) == len(lines)
    assert len(rows) == 2 and rows[0][1] >= 3 * 2**20 * 0.75


def test_results_may_be_a_generator_or_none(src: str, tmp_path: Path) -> None:
    bp.map_batches(lazily, src, output=str(tmp_path / "a"), block_size="16KiB",
                   executor="inline")
    assert read_parts(str(tmp_path / "a")).decode().splitlines() == [
        s for s in LINES if s.startswith("0000")]
    res = bp.map_batches(nothing, src, output=str(tmp_path / "b"), block_size="16KiB",
                         executor="inline")
    assert read_parts(str(tmp_path / "b")) == b"" and res.num_records_out == 0


def test_a_string_instead_of_a_list_is_refused_naming_the_batch(src: str,
                                                                tmp_path: Path) -> None:
    with pytest.raises(bp.BlockFailedError, match=r"returned str .*return a list") as info:
        bp.map_batches(a_string, src, output=str(tmp_path / "out"), executor="inline",
                       max_attempts=1)
    assert "the batch of records 0 to " in str(info.value)


def test_a_result_the_output_format_refuses_names_the_batch(src: str, tmp_path: Path) -> None:
    with pytest.raises(bp.BlockFailedError, match=r"batch of records 0 to \d+ of block 0 .*"
                                                  r"dict"):
        bp.map_batches(dicts, src, output=str(tmp_path / "out"), executor="inline",
                       max_attempts=1)


def test_an_error_in_the_function_names_the_batch(src: str, tmp_path: Path) -> None:
    with pytest.raises(bp.BlockFailedError) as info:
        bp.map_batches(fails_on_3000, src, output=str(tmp_path / "out"), executor="inline",
                       block_size="16KiB", max_attempts=1)
    cause = info.value.__cause__
    assert isinstance(cause, ValueError) and str(cause) == "bad batch"
    assert any("the batch of records" in note for note in cause.__notes__)


@pytest.mark.parametrize("batch_size", [0, -1, "lots", 1.5])
def test_a_bad_batch_size_is_refused_before_anything_runs(src: str, tmp_path: Path,
                                                          batch_size: Any) -> None:
    with pytest.raises((bp.ConfigError, TypeError), match="batch_size"):
        bp.map_batches(keep_5xx, src, output=str(tmp_path / "out"), batch_size=batch_size)
    assert not (tmp_path / "out").exists()


@settings(max_examples=40, deadline=None)
@given(lines=st.lists(st.text(alphabet="ab\r", max_size=30), max_size=60),
       block_size=st.integers(1, 300), batch_size=st.integers(1, 200),
       final_newline=st.booleans())
def test_every_record_is_in_exactly_one_batch_in_order(lines: list[str], block_size: int,
                                                      batch_size: int,
                                                      final_newline: bool) -> None:
    root = f"memory://map-batches-{uuid.uuid4().hex}"
    data = "\n".join(lines) + ("\n" if final_newline and lines else "")
    write_files(root, {"in.log": data.encode()})
    seen: list[list[str]] = []

    def collect(records: list[str]) -> list[str]:
        seen.append(list(records))
        return []

    bp.map_batches(collect, root, output=f"{root}-out", block_size=block_size,
                   batch_size=batch_size, executor="inline")
    expected = list(bp.formats.Lines().iter_batches([data.encode()], at_file_start=True))
    assert [r for batch in seen for r in batch] == [r for b in expected for r in b]
    assert all(batch for batch in seen)  # no empty batch is handed to the function
