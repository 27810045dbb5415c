"""The :class:`~blockproc.Batch` a per-block function gets for a plain file's block
reads only what the function asks for: ``batch.records`` streams from the file ~1 MiB
at a time (the block's bytes are never held), ``batch.data`` is one ranged read on first
use, and the records then come from those bytes without reading again."""

from __future__ import annotations

import collections
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import blockproc as bp
from blockproc.formats import from_dict
from blockproc.output import part_name
from blockproc.storage import resolve
from blockproc.task import BlockTask
from blockproc.worker import Mapper, run_block

LINE = b'203.0.113.7 - - [27/Nov/2026:00:00:01 +0000] "GET /a HTTP/1.1" 200 5123\r\n'


def write_log(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "in.log"
    path.write_bytes(LINE * (size // len(LINE)) + b"no newline at the end")
    return path


def manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "_SUCCESS").read_text())
    return data


def counts(batch: Any) -> list[str]:
    found = collections.Counter(line[-6:] for line in batch.records)
    return [f"{k},{n}" for k, n in sorted(found.items())]


def data_then_records(batch: Any) -> list[str]:
    size = len(batch.data)
    return [f"{size},{sum(1 for _ in batch.records)},{len(batch.records)}"]


def nothing(batch: Any) -> None:
    return None


@pytest.mark.parametrize("fn", [counts, data_then_records, nothing])
def test_each_way_of_reading_gives_the_records_and_reads_the_block_once(
        tmp_path: Path, fn: Any) -> None:
    path = write_log(tmp_path, 3 * 2**20)
    lines = path.read_bytes().count(b"\n") + 1
    out = tmp_path / "out"
    res = bp.map_blocks(fn, str(path), output=str(out), block_size=2**20,
                        executor="inline")
    assert res.num_records == lines
    blocks = manifest(out)["blocks"]
    # each block read once, plus the small windows that find its two boundaries
    assert sum(b["bytes_read"] for b in blocks) < path.stat().st_size * 1.02
    text = bp.testing.read_parts(str(out)).decode().splitlines()
    if fn is counts:
        total = sum(int(row.rsplit(",", 1)[1]) for row in text)
        assert total == lines
    if fn is data_then_records:
        assert sum(int(row.split(",")[0]) for row in text) == path.stat().st_size
        assert all(row.split(",")[1] == row.split(",")[2] for row in text)


def test_streaming_the_records_never_holds_the_block(tmp_path: Path) -> None:
    path = write_log(tmp_path, 16 * 2**20)
    peaks = {}
    for fn in (counts, data_then_records):
        tracemalloc.start()
        try:
            bp.map_blocks(fn, str(path), block_size=32 * 2**20, executor="inline")
            peaks[fn.__name__] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peaks["data_then_records"] > 16 * 2**20  # the block's bytes at once
    assert peaks["counts"] < 6 * 2**20, peaks  # ~1 MiB read and decoded at a time


kept: list[Any] = []


def keep_records(batch: Any) -> None:
    kept.append(batch.records)
    sum(1 for _ in batch.records)  # streamed to the end: the job needs no bytes to count


def test_records_kept_past_the_function_fail_clearly(tmp_path: Path) -> None:
    path = write_log(tmp_path, 4096)
    kept.clear()
    bp.map_blocks(keep_records, str(path), executor="inline")
    with pytest.raises(RuntimeError, match=r"after the function returned.*list\(batch"):
        list(kept[0])


@pytest.mark.parametrize("fn", [counts, data_then_records])
def test_reading_on_use_reports_progress_as_it_reads(tmp_path: Path, fn: Any) -> None:
    """The master's progress and the stragglers' order come from these reports: a block
    whose bytes are read as the function asks for them reports them as it reads them."""
    path = write_log(tmp_path, 4 * 2**20)
    plan = bp.plan(str(path), block_size=8 * 2**20)
    fs, _ = resolve(str(tmp_path))
    block = plan.blocks[0]
    task = BlockTask(block, 1, 1, plan.file(block.path), from_dict(plan.format), fs, fs,
                     part_name(0, ".txt"), str(tmp_path / "attempt-1"))
    reports: list[int] = []
    run_block(task, Mapper("block", fn), lambda done, records: reports.append(done))
    size = path.stat().st_size
    if fn is counts:  # streamed ~1 MiB at a time
        assert len(reports) >= 4 and reports == sorted(reports) and reports[-1] == size
    else:  # one ranged read, then the records from its bytes
        assert reports == [size]
